"""`autoroute serve` refuses to listen beyond the loopback without client keys, unless told --insecure."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import cli

ONE_MODEL = "models:\n  - name: alpha\n    litellm_params: {model: openai/alpha}\n"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr("proxy.server.serve", lambda app, **options: calls.append(options) or 0)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.internal"])
def test_a_public_bind_without_keys_is_refused(
    host: str, tmp_path: Path, served: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ONE_MODEL)

    assert cli.main(["serve", "--config", str(config), "--host", host]) == 2

    assert served == [] and "--insecure" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "extra", "args"),
    [
        ("127.0.0.1", "", ()),
        ("::1", "", ()),
        ("localhost", "", ()),
        ("0.0.0.0", "auth: {api_key_envs: [AUTOROUTE_TEST_BIND_KEY]}\n", ()),
        ("0.0.0.0", "", ("--insecure",)),
    ],
)
def test_loopback_keys_or_insecure_serve(
    host: str, extra: str, args: tuple[str, ...], tmp_path: Path, served: list[dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AUTOROUTE_TEST_BIND_KEY", "k")
    config = tmp_path / "config.yaml"
    config.write_text(ONE_MODEL + extra)

    assert cli.main(["serve", "--config", str(config), "--host", host, *args]) == 0

    assert [call["host"] for call in served] == [host]


def test_the_container_config_asks_for_a_client_key(served: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    config = Path(__file__).resolve().parents[2] / "deploy" / "config.yaml"
    monkeypatch.delenv("AUTOROUTE_API_KEY", raising=False)

    assert cli.main(["serve", "--config", str(config), "--host", "0.0.0.0"]) != 0, "no key set: no serving"
    monkeypatch.setenv("AUTOROUTE_API_KEY", "k")
    assert cli.main(["serve", "--config", str(config), "--host", "0.0.0.0"]) == 0

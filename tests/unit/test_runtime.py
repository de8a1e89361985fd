"""The runtime snapshot: which models are routable, client keys that fail closed, and config reloads."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from proxy.runtime import Runtime, RuntimeHolder, build_runtime
from router_plugins.registry import ModelEntry, Registry, load_registry, parse_registry
from router_plugins.schema import ConfigError

CONFIG = """\
models:
  - name: keyed
    litellm_params: {model: openai/keyed, api_key_env: AUTOROUTE_TEST_MODEL_KEY}
  - name: local
    litellm_params: {model: openai/local, api_base: "http://127.0.0.1:4010/v1"}
  - name: switched-off
    litellm_params: {model: openai/off}
    enabled: false
"""


def has_credentials(env: Mapping[str, str]) -> Callable[[ModelEntry], bool]:
    """What Forwarder.has_credentials answers, without importing LiteLLM."""
    return lambda m: m.litellm_params.api_key_env is None or bool(env.get(m.litellm_params.api_key_env))


def runtime_for(registry: Registry, env: Mapping[str, str] | None = None) -> Runtime:
    return build_runtime(registry, has_credentials(env or {}))


# -- build_runtime -------------------------------------------------------------------------------------------------


def test_models_whose_key_variable_is_unset_are_left_out() -> None:
    runtime = runtime_for(parse_registry(CONFIG))

    assert [m.name for m in runtime.available] == ["local"]


def test_models_with_their_key_set_are_available() -> None:
    runtime = runtime_for(parse_registry(CONFIG), {"AUTOROUTE_TEST_MODEL_KEY": "sk-1"})

    assert [m.name for m in runtime.available] == ["keyed", "local"]


def test_runtime_holds_the_static_router_and_a_classifier() -> None:
    runtime = runtime_for(parse_registry(CONFIG))

    learned, static = runtime.engine.chain
    assert (learned.name, static.name) == ("learned", "static-rules")
    assert learned.status == "no learned-router artifact yet", "in the chain, saying why it cannot decide yet"  # type: ignore[attr-defined]
    assert runtime.classifier.layer_names == ("keywords",)  # no embedder given
    assert runtime.classifier.classify("Traceback (most recent call last):\n KeyError: 'id'").task == "debugging"


def test_unset_client_key_variable_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOROUTE_TEST_CLIENT_A", "key-a")
    monkeypatch.delenv("AUTOROUTE_TEST_CLIENT_B", raising=False)
    registry = parse_registry(CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A, AUTOROUTE_TEST_CLIENT_B]}\n")

    with pytest.raises(ConfigError, match="AUTOROUTE_TEST_CLIENT_B"):
        runtime_for(registry)


def test_empty_client_key_variable_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOROUTE_TEST_CLIENT_A", "")
    registry = parse_registry(CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A]}\n")

    with pytest.raises(ConfigError, match="AUTOROUTE_TEST_CLIENT_A"):
        runtime_for(registry)


def test_client_keys_are_read_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOROUTE_TEST_CLIENT_A", "key-a")
    monkeypatch.setenv("AUTOROUTE_TEST_CLIENT_B", "key-b")
    registry = parse_registry(CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A, AUTOROUTE_TEST_CLIENT_B]}\n")

    assert runtime_for(registry).api_keys == (b"key-a", b"key-b")


def test_no_client_key_variables_means_no_auth() -> None:
    assert runtime_for(parse_registry(CONFIG)).api_keys == ()


# -- RuntimeHolder -------------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    """Write the config and move its mtime forward, so the edit is seen even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    later = before + 1_000_000_000
    os.utime(path, ns=(later, later))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    write(path, CONFIG)
    return path


@pytest.fixture
def holder(config: Path) -> RuntimeHolder:
    return RuntimeHolder(config, runtime_for(load_registry(config)), runtime_for)


def model_names(holder: RuntimeHolder) -> list[str]:
    return [m.name for m in holder.current.registry.models]


def test_unchanged_file_is_not_reloaded(holder: RuntimeHolder) -> None:
    before = holder.current

    assert holder.check_reload() is False
    assert holder.current is before
    assert holder.reloads == 0


def test_an_edit_is_picked_up(holder: RuntimeHolder, config: Path) -> None:
    write(config, CONFIG + "  - name: added\n    litellm_params: {model: openai/added}\n")

    assert holder.check_reload() is True

    assert model_names(holder)[-1] == "added"
    assert "added" in [m.name for m in holder.current.available]
    assert (holder.reloads, holder.last_error) == (1, None)


def test_a_bad_edit_keeps_the_last_good_runtime_and_says_why(holder: RuntimeHolder, config: Path) -> None:
    good = holder.current
    write(config, CONFIG + "    contxt_window: 4096\n")

    assert holder.check_reload() is False

    assert holder.current is good
    assert holder.last_error is not None
    assert f"{config}:{len(CONFIG.splitlines()) + 1}" in holder.last_error and "'contxt_window'" in holder.last_error
    assert holder.reloads == 0


def test_a_bad_edit_is_reported_once_not_retried_until_the_next_edit(holder: RuntimeHolder, config: Path) -> None:
    write(config, "models: [\n")
    holder.check_reload()
    error = holder.last_error

    assert error is not None
    assert holder.check_reload() is False
    assert holder.last_error == error


def test_fixing_the_edit_clears_the_error(holder: RuntimeHolder, config: Path) -> None:
    write(config, CONFIG + "    contxt_window: 4096\n")
    holder.check_reload()
    write(config, CONFIG + "    context_window: 4096\n")

    assert holder.check_reload() is True

    assert holder.last_error is None
    fixed = holder.current.registry.model("switched-off")
    assert fixed is not None and fixed.context_window == 4096


def test_an_edit_that_fails_to_build_keeps_the_last_good_runtime(
    holder: RuntimeHolder, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOROUTE_TEST_CLIENT_A", raising=False)
    good = holder.current
    write(config, CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A]}\n")

    assert holder.check_reload() is False

    assert holder.current is good
    assert "AUTOROUTE_TEST_CLIENT_A" in (holder.last_error or "")
    assert "AUTOROUTE_TEST_CLIENT_A" in (holder.auth_error or ""), "an auth change that failed closes the API"


def test_a_failed_auth_change_stays_closed_until_a_reload_succeeds(
    holder: RuntimeHolder, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOROUTE_TEST_CLIENT_A", raising=False)
    write(config, CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A]}\n")
    holder.check_reload()

    holder.rebuild_current()  # a learned-state swap does not reopen it
    assert holder.auth_error is not None
    write(config, CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A]}\n  # still unset\n")
    assert holder.check_reload() is False and holder.auth_error is not None

    write(config, CONFIG)  # reverted
    assert holder.check_reload() is True
    assert (holder.auth_error, holder.last_error) == (None, None)


def test_a_bad_edit_that_leaves_auth_alone_keeps_serving(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOROUTE_TEST_CLIENT_A", "key-a")
    write(config, CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A]}\n")
    holder = RuntimeHolder(config, runtime_for(load_registry(config)), runtime_for)
    write(config, CONFIG + "auth: {api_key_envs: [AUTOROUTE_TEST_CLIENT_A]}\n" + "router: {max_attempts: 0}\n")

    assert holder.check_reload() is False

    assert holder.last_error is not None and holder.auth_error is None
    assert holder.current.api_keys == (b"key-a",)


def test_a_deleted_config_keeps_the_last_good_runtime(holder: RuntimeHolder, config: Path) -> None:
    good = holder.current
    config.unlink()

    assert holder.check_reload() is False

    assert holder.current is good
    assert "cannot read config" in (holder.last_error or "")


def test_an_edit_whose_runtime_cannot_be_built_keeps_the_last_good_runtime(config: Path) -> None:
    def rebuild(registry: Registry) -> Runtime:
        if registry.model("extra") is not None:
            raise re.error("a surprise from deep inside a build")
        return build_runtime(registry)

    holder = RuntimeHolder(config, rebuild(load_registry(config)), rebuild)
    good = holder.current
    write(config, CONFIG.replace("models:\n", "models:\n  - {name: extra, litellm_params: {model: openai/extra}}\n", 1))

    assert holder.check_reload() is False

    assert holder.current is good
    assert "a surprise" in (holder.last_error or "")


def test_patterns_with_inline_flags_and_back_references_build(config: Path, holder: RuntimeHolder) -> None:
    write(config, CONFIG + "tasks:\n  - name: chat\n    patterns: ['(?i)^hey', '\\b(\\w+) \\1\\b']\n")

    assert holder.check_reload() is True
    assert holder.current.classifier.classify("the the cat").task == "chat"

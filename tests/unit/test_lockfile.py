"""requirements.lock: every runtime dependency pinned with its hash, agreeing with pyproject.toml and with what is
installed (the Makefile installs the test environment constrained by it; the Dockerfile installs it)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import lock  # noqa: E402 - tools/ is not a package

LOCK_TEXT = (ROOT / "requirements.lock").read_text()
MANAGED_BY_THE_VENV = {"pip", "setuptools"}


def test_every_entry_is_pinned_with_a_sha256() -> None:
    entries = [line for line in LOCK_TEXT.splitlines() if line and not line.startswith("#")]

    assert len(entries) > 50, "the transitive closure, not only the direct dependencies"
    assert all("==" in e and " --hash=sha256:" in e for e in entries), [e for e in entries if "--hash" not in e]


def test_the_lock_holds_every_exact_pin_of_pyproject() -> None:
    assert lock.mismatches(LOCK_TEXT, (ROOT / "pyproject.toml").read_text()) == []


def test_a_pin_the_lock_disagrees_with_is_reported() -> None:
    pyproject = '[project]\ndependencies = ["fastapi==0.1.0", "numpy>=1"]\n'

    assert lock.mismatches(LOCK_TEXT, pyproject) == [
        f"fastapi==0.1.0: the lock has {lock.locked(LOCK_TEXT)['fastapi']}",
        "numpy>=1: not pinned exactly",
    ]


def test_the_installed_versions_are_the_locked_ones() -> None:
    wrong = {}
    for name, version in lock.locked(LOCK_TEXT).items():
        if name in MANAGED_BY_THE_VENV:
            continue
        installed = importlib.metadata.version(name)
        if installed != version:
            wrong[name] = (version, installed)

    assert wrong == {}, "install with `make install` (constrained by requirements.lock), or re-run tools/lock.py"


def test_the_container_installs_the_lock_with_hashes_before_the_code() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    lock_install = dockerfile.index("--require-hashes")
    assert dockerfile.index("COPY requirements.lock") < lock_install < dockerfile.index("COPY proxy")
    assert "ARG TORCH_VARIANT=cpu" in dockerfile and "download.pytorch.org/whl/cpu" in dockerfile
    assert '"--config", "/app/deploy/config.yaml", "--host", "0.0.0.0"' in dockerfile


def test_the_compose_file_runs_two_replicas_on_one_postgres() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    gateways = {name: s for name, s in services.items() if name.startswith("gateway")}
    base = gateways["gateway-a"]

    assert len(gateways) == 2 and "postgres" in services
    stores = {g.get("environment", base["environment"])["AUTOROUTE_STORE"] for g in gateways.values()}
    assert len(stores) == 1 and stores.pop().startswith("postgresql://"), "one shared store"
    assert len({tuple(g["volumes"]) for g in gateways.values()}) == 2, "a data volume each"
    assert base["environment"]["AUTOROUTE_API_KEY"].startswith("${AUTOROUTE_API_KEY:?"), "no key, no start"
    config = yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text())
    assert config["storage"]["url_env"] == "AUTOROUTE_STORE" and config["auth"]["api_key_envs"]

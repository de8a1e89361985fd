"""Which store a config names: `storage.url`, `storage.url_env` (the password stays out of the YAML), or the data
directory's SQLite file; and what is said about it in logs (no password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.store import configured_storage, open_configured_store, redacted, store_location
from router_plugins.datadir import DataDir
from router_plugins.registry import StorageSettings, parse_registry
from router_plugins.schema import ConfigError

from ..postgres import Cluster

MODELS = "models:\n  - {name: a, litellm_params: {model: openai/a}}\n"


def test_the_default_is_the_data_directory_file(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    assert store_location(StorageSettings(), data) == str(data.db)
    assert open_configured_store(StorageSettings(), data, create=False) is None, "a report must not create one"
    assert not data.db.exists()
    store = open_configured_store(StorageSettings(), data)
    assert store is not None and store.path == data.db
    store.close()


def test_url_env_holds_the_whole_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    storage = StorageSettings(url_env="AUTOROUTE_DATABASE_URL")
    with pytest.raises(ConfigError, match="AUTOROUTE_DATABASE_URL.*not set"):
        store_location(storage, data)
    monkeypatch.setenv("AUTOROUTE_DATABASE_URL", "postgresql://u:secret@db/autoroute")
    assert store_location(storage, data) == "postgresql://u:secret@db/autoroute"
    with pytest.raises(ConfigError, match="backend is sqlite"):
        store_location(StorageSettings(backend="sqlite", url_env="AUTOROUTE_DATABASE_URL"), data)


@pytest.mark.parametrize(
    ("storage", "error"),
    [
        ("{url: 'postgresql://u:pw@db/x'}", "must not hold a password"),
        ("{url: 'mysql://db/x'}", "must start with postgresql://"),
        ("{backend: postgres}", "needs storage.url or storage.url_env"),
        ("{backend: sqlite, url: 'postgresql://db/x'}", "postgres URL but storage.backend is sqlite"),
        ("{url: 'postgresql://db/x', url_env: X}", "not both"),
        ("{url_env: 'not a name'}", "must name an environment variable"),
        ("{pool_size: 0}", "pool_size must be >= 1"),
    ],
)
def test_bad_storage_settings_are_config_errors(storage: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_registry(f"{MODELS}storage: {storage}\n")


def test_a_url_selects_postgres(tmp_path: Path, postgres: Cluster) -> None:
    from proxy.store_postgres import PostgresStore

    config = tmp_path / "config.yaml"
    config.write_text(f"{MODELS}storage: {{url: '{postgres.new_database()}', pool_size: 2}}\n")
    storage = configured_storage(config)
    store = open_configured_store(storage, DataDir(tmp_path / "data"), create=False)
    assert isinstance(store, PostgresStore), "a server database is opened even by a report"
    store.close()
    assert configured_storage(tmp_path / "missing.yaml") == StorageSettings()


def test_redacted_hides_the_password() -> None:
    assert redacted("postgresql://u:s3cret@db:5432/x?sslmode=require") == "postgresql://u:***@db:5432/x?sslmode=require"
    assert redacted("postgresql://u@db/x") == "postgresql://u@db/x"
    assert redacted("/var/lib/autoroute/autoroute.db") == "/var/lib/autoroute/autoroute.db"

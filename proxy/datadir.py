"""Which data directory a command works in: the one `autoroute serve` on the same config uses."""

from __future__ import annotations

from pathlib import Path


def resolve_data_dir(config: str | Path | None, override: str | Path | None = None) -> Path:
    """`--data-dir` when given, else the config's `storage.data_dir`, resolved against the working directory as
    `autoroute serve` resolves it. So a model trained for one config never lands in another config's data dir."""
    if override:
        return Path(override).expanduser().resolve()
    from router_plugins.registry import load_registry

    return Path(load_registry(config or "config.yaml").storage.data_dir).expanduser().resolve()

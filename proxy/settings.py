"""What `create_app` is given: the gateway's settings beyond its config file.

A module of its own, importing next to nothing: the supervisor of `autoroute serve --workers N` (`proxy/workers.py`)
passes them to its workers without importing the gateway itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .drain import DEFAULT_GRACE_S


@dataclass(frozen=True)
class AppSettings:
    config_path: Path
    data_dir: Path | None = None
    """Overrides `storage.data_dir` of the config."""
    watch_config: bool = True
    shutdown_grace_s: float = DEFAULT_GRACE_S
    """On SIGTERM, how long requests in flight get before they are ended (`proxy/drain.py`)."""
    answer_while_starting: bool = False
    """Listen while the gateway starts (`autoroute serve`): readiness and every API call answer 503 `starting` until
    the config, store and router are ready, liveness answers 200. Off, the app is ready when its lifespan starts."""
    workers: int = 1
    """How many processes serve the port (`proxy/workers.py`). Above 1, this process is one of them: it elects the
    leader of the once-only jobs through the data directory's lock, counts its metrics in the shared multiprocess
    directory, and names its pid in an `x-autoroute-worker` response header."""


__all__ = ["AppSettings"]

"""Router versions shared by replicas: a gateway on a shared store (Postgres) keeps its own data directory's pointers
in step with the store's, so a version promoted, pinned or rolled back on one replica is served by all of them.

What decides which learned artifact serves is a pointer file in each data directory (`proxy.versions`), and data
directories differ per replica. The store therefore keeps, per kind of versioned artifact (the learned router, the
tuned thresholds), the bytes of every version published and which one is current (`ArtifactStore`). Moves made
through `proxy.versions` (pin, rollback, auto-rollback) and the trainer's promotions publish at once. Every
`SYNC_INTERVAL_S` each gateway runs one pass (`ArtifactSync.sync`), per kind:

1. the store's current version changed since the last pass (or this is the first pass): this replica adopts it,
   fetching the file when it lacks it, and moves its pointer; the gateway's watcher swaps it in (~2 s);
2. otherwise, when this data directory's pointer moved (`autoroute tune`, `autoroute train` without a shared store,
   a hand edit, a publish that failed): it is published and the other replicas adopt it.

The store wins at start: a replica joining adopts the shared versions before it serves; one whose store has none
yet publishes its own. Two replicas moving the same pointer at once end on whichever published last. Classifier
models (layers 2-4) and the static embedding table stay per replica: each fits or builds its own.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from router_plugins.datadir import write_atomically, write_pointer

from .store_api import ArtifactStore
from .versions import KINDS, current_version, publish

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 2.0
_UNSEEN = "\x00unseen"
"""No pass has seen this kind yet: any version differs from it."""


class ArtifactSync:
    """One data directory's pointers kept in step with a shared store's."""

    def __init__(self, store: ArtifactStore, artifacts: Path) -> None:
        self._store = store
        self._artifacts = artifacts
        self._agreed: dict[str, str | None] = {}
        """Per kind, the version this data directory and the store last agreed on."""

    @classmethod
    def of(cls, store: object, artifacts: Path) -> ArtifactSync | None:
        """The sync for a store that replicas share; None for one that only this data directory uses (SQLite)."""
        return cls(store, artifacts) if isinstance(store, ArtifactStore) and store.shares_artifacts else None

    def sync(self) -> list[str]:
        """One pass over every kind; returns what it did (`learned: adopted V`, `thresholds: published V`)."""
        shared = self._store.shared_pointers()
        done = []
        for kind in KINDS:
            theirs, mine = shared.get(kind), current_version(self._artifacts, kind)
            agreed = self._agreed.get(kind, _UNSEEN)
            if theirs is not None and theirs != agreed:
                if mine != theirs:
                    if not self._adopt(kind, theirs):
                        continue  # retried next pass; this replica's own version must not overwrite the store's
                    done.append(f"{kind}: adopted {theirs}")
                self._agreed[kind] = theirs
            elif mine is not None and mine != agreed:
                publish(self._store, self._artifacts, kind, mine)
                self._agreed[kind] = mine
                done.append(f"{kind}: published {mine}")
        for change in done:
            log.info("shared router versions: %s", change)
        return done

    def _adopt(self, kind: str, version: str) -> bool:
        spec = KINDS[kind]
        path = spec.path(self._artifacts, version)
        if not path.is_file():
            content = self._store.artifact_content(kind, version)
            if content is None:
                log.warning("the shared store names %s version %s as current but does not hold it", kind, version)
                return False
            write_atomically(path, lambda handle: handle.write(content))
        write_pointer(self._artifacts, spec.pointer, path, version)
        return True

    async def step(self) -> None:
        """`sync` in a worker thread; a failure (the database away) is logged and the next step tries again."""
        try:
            await asyncio.to_thread(self.sync)
        except Exception:  # noqa: BLE001 - serving goes on with the versions this replica has
            log.exception("syncing the shared router versions failed")


__all__ = ["SYNC_INTERVAL_S", "ArtifactSync"]

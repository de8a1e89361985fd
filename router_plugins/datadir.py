"""The data directory: its one owner. Where the store, the artifacts and the caches live, how a file in it is
written (atomically) and how a pointer names the current version of a learned artifact.

Nothing else joins path strings under a data directory: the gateway, the LiteLLM plugin and every CLI command go
through `DataDir`, so a model trained for one config lands where the gateway on that config reads it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_FILE = "autoroute.db"
LEADER_LOCK = "leader.lock"
ARTIFACTS = "artifacts"
CACHE = "cache"


def write_atomically(path: Path, writer: Callable[[BinaryIO], object], mode: int = 0o644) -> Path:
    """Call `writer` on a temporary file beside `path`, then rename it into place (atomic on POSIX): a reader sees
    the old whole file or the new whole file, never half of one; on failure the old file stays and no temporary
    file is left. `mode` replaces mkstemp's 0600, which would hide the file from a gateway running as another user.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=f"{path.suffix}.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_stamp(path: Path) -> tuple[int, int] | None:
    """What changes when a file is replaced or rewritten (mtime, size); None when there is no file. Readers that
    reload a file when it changes compare stamps."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class ArtifactVersionError(ValueError):
    """An artifact of another format version (or fitted for another model): left in place, not served."""


class DamagedArtifact(ValueError):
    """An artifact that cannot be read (truncated, garbled, missing parts): moved aside by whoever loads it."""


_QUARANTINED: list[dict[str, object]] = []
MAX_QUARANTINED = 100


def quarantine(path: Path, reason: str) -> Path | None:
    """Move a damaged file aside to `<name>.corrupt` (`.corrupt.N` when taken), log it, and remember it for the
    readiness check (`quarantined()`); serving goes on with what the file would have replaced. Returns where it went
    (None when it could not be moved: it is then reported all the same)."""
    target = path.with_name(path.name + ".corrupt")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt.{n}")
    try:
        os.replace(path, target)
    except OSError as exc:
        log.error("%s is damaged (%s) and could not be moved aside: %s", path, reason, exc)
        moved = None
    else:
        log.error("%s is damaged (%s): moved aside to %s", path, reason, target.name)
        moved = target
    _QUARANTINED.append({"file": str(path), "moved_to": str(moved) if moved else None, "reason": reason,
                         "at": time.time()})  # fmt: skip
    del _QUARANTINED[:-MAX_QUARANTINED]
    return moved


def quarantined() -> list[dict[str, object]]:
    """The damaged files this process moved aside, oldest first (at most MAX_QUARANTINED)."""
    return list(_QUARANTINED)


def write_pointer(directory: Path, pointer_name: str, artifact_path: Path, version: str, **extra: object) -> Path:
    """Point `directory/pointer_name` at `artifact_path`, a file in `directory`, atomically. The pointer is
    `{"artifact": <file name>, "version": ..., **extra}`: readers of older data directories read it alike."""
    if artifact_path.parent.resolve() != directory.resolve():
        raise ValueError(f"{artifact_path} is not in {directory}: a pointer names a file beside it")
    text = json.dumps({"artifact": artifact_path.name, "version": version, **extra}).encode()
    return write_atomically(directory / pointer_name, lambda handle: handle.write(text))


def read_json(path: Path, what: str, check: Callable[[Any], T]) -> T | None:
    """`check` of the JSON in `path`; None when it cannot be read (logged) or is not `what` (`check` raised
    ValueError, KeyError or TypeError: the file is moved aside as damaged)."""
    try:
        return check(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        log.warning("ignoring %s: %s", path, exc)
    except (ValueError, KeyError, TypeError) as exc:
        quarantine(path, f"not {what}: {exc}")
    return None


def read_pointer(directory: Path, pointer_name: str) -> Path | None:
    """The file `directory/pointer_name` points at; None when there is no pointer, and None with a warning when it is
    garbled or names a file that is not there (serving goes on without that artifact). Never raises."""
    pointer = directory / pointer_name
    if not pointer.exists():
        return None

    def check(data: object) -> str:
        name = data["artifact"] if isinstance(data, dict) else None
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"the pointer names {name!r}, not a file beside it")
        return name

    name = read_json(pointer, "a pointer", check)
    if name is None:
        return None
    path = directory / name
    if not path.is_file():
        log.warning("ignoring the pointer %s: it names %s, which does not exist", pointer, name)
        return None
    return path


@dataclass(frozen=True)
class DataDir:
    """One data directory; `root` is made absolute (against the working directory) when the object is built."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @classmethod
    def resolve(cls, config: str | Path | Registry | None, override: str | Path | DataDir | None = None) -> DataDir:
        """`--data-dir` when given, else the config's `storage.data_dir` (a registry or the path of its YAML;
        None: `config.yaml`), relative to the working directory as `autoroute serve` resolves it."""
        if override:
            return cls.of(override)
        if config is None or isinstance(config, (str, Path)):
            from .registry import load_registry

            config = load_registry(config or "config.yaml")
        return cls(Path(config.storage.data_dir))

    @classmethod
    def of(cls, where: str | Path | DataDir) -> DataDir:
        """`where` as a `DataDir` (for functions that take either)."""
        return where if isinstance(where, DataDir) else cls(Path(where))

    @property
    def db(self) -> Path:
        """The SQLite store."""
        return self.root / DB_FILE

    @property
    def leader_lock(self) -> Path:
        """The lock the workers of `autoroute serve --workers N` elect their leader with (`proxy/leadership.py`)."""
        return self.root / LEADER_LOCK

    @property
    def artifacts(self) -> Path:
        """Learned state: models, tables, thresholds and the pointers to their current versions."""
        return self.root / ARTIFACTS

    @property
    def cache(self) -> Path:
        """Embeddings cached by text: safe to delete."""
        return self.root / CACHE

    def path(self, name: str) -> Path:
        """The artifact file `name`."""
        return self.artifacts / name

    def ensure(self) -> DataDir:
        """Create the directory and its artifacts directory."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return self

    def write_atomically(self, path: Path, writer: Callable[[BinaryIO], object], mode: int = 0o644) -> Path:
        return write_atomically(path, writer, mode)

    def write_pointer(self, pointer_name: str, artifact_path: Path, version: str, **extra: object) -> Path:
        return write_pointer(self.artifacts, pointer_name, artifact_path, version, **extra)

    def read_pointer(self, pointer_name: str) -> Path | None:
        return read_pointer(self.artifacts, pointer_name)

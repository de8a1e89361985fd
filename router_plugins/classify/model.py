"""The task model: what layers 3 and 4 need (reference embeddings and the trained head), fitted and stored as one
versioned file, so the pair is always consistent and swaps in atomically.

Fitting embeds the registry's examples and a balanced share of labelled prompts (see `training`), keeps them as the
kNN references, and trains the head on them. It needs the transformer (via the `embed` callable) and torch; loading
needs neither.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..datadir import ArtifactVersionError, DamagedArtifact, write_atomically
from ..embeddings import MODEL_ID
from ..registry import TaskType
from .head import HeadTraining, TaskHead, TorchHeadLayer, train_head
from .knn import ReferenceSet, TransformerKnnLayer
from .training import LabelledPrompt, balance, registry_prompts, training_weights

log = logging.getLogger(__name__)

MODEL_VERSION = "task-model-v1"
MODEL_FILE = f"{MODEL_VERSION}.npz"
"""Its place in the data directory: `<data_dir>/artifacts/task-model-v1.npz`."""
LABELLED_PER_TASK = 300
"""Labelled (benchmark) prompts kept per task: enough to cover each source, few enough not to drown the examples."""

Embed = Callable[[Sequence[str]], np.ndarray]


def tasks_fingerprint(tasks: Sequence[TaskType]) -> str:
    """Names the task taxonomy a model was fitted on (names, descriptions and examples)."""
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(json.dumps([task.name, task.description, list(task.examples)]).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class TaskModel:
    reference: ReferenceSet
    head: TaskHead
    embedding_model: str = MODEL_ID
    tasks_fingerprint: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """What it was fitted on (counts per task and origin, settings, time): for humans and the dashboard."""

    def __post_init__(self) -> None:
        if self.reference.tasks != self.head.tasks:
            raise ValueError("the reference set and the head must name the same tasks in the same order")
        if self.reference.dimension != self.head.dimension:
            raise ValueError("the reference set and the head must have the same embedding dimension")

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.head.tasks

    def mismatch(self, tasks: Sequence[TaskType]) -> str | None:
        """Why this model cannot serve a registry with these task types, or None when it can.

        Different task names are a mismatch (the head would answer tasks the router does not know); edited
        descriptions or examples are not: the model still works, and `is_stale` says a refit would use them.
        """
        names = tuple(t.name for t in tasks)
        if set(names) != set(self.tasks):
            return f"fitted for tasks {sorted(self.tasks)}, the registry has {sorted(names)}"
        return None

    def is_stale(self, tasks: Sequence[TaskType]) -> bool:
        return self.tasks_fingerprint != tasks_fingerprint(tasks)

    def layers(self) -> tuple[TransformerKnnLayer, TorchHeadLayer]:
        return TransformerKnnLayer(self.reference), TorchHeadLayer(self.head)

    def save(self, path: Path) -> Path:
        """Write the model atomically (temporary file, then rename): a reader never sees half of it."""
        arrays: dict[str, np.ndarray] = {
            "version": np.array(MODEL_VERSION),
            "embedding_model": np.array(self.embedding_model),
            "tasks_fingerprint": np.array(self.tasks_fingerprint),
            "tasks": np.array(self.tasks),
            "meta": np.array(json.dumps(dict(self.meta), sort_keys=True)),
            "reference_vectors": self.reference.vectors.astype(np.float16),
            "reference_labels": self.reference.labels.astype(np.int32),
            "head_temperature": np.array(self.head.temperature),
            "head_layers": np.array(len(self.head.layers)),
        }
        for i, (weights, bias) in enumerate(self.head.layers):
            arrays[f"head_w{i}"] = weights.astype(np.float32)
            arrays[f"head_b{i}"] = bias.astype(np.float32)
        return write_atomically(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path, embedding_model: str = MODEL_ID) -> TaskModel:
        """Read a saved model; ArtifactVersionError when it is another version or was fitted on another embedding
        model, DamagedArtifact when it cannot be read."""
        try:
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
                version = str(data["version"])
                if version != MODEL_VERSION:
                    raise ArtifactVersionError(f"{path} is {version}, expected {MODEL_VERSION}")
                fitted_on = str(data["embedding_model"])
                if fitted_on != embedding_model:
                    raise ArtifactVersionError(
                        f"{path} was fitted on embeddings of {fitted_on}, this process uses {embedding_model}"
                    )
                tasks = tuple(str(t) for t in data["tasks"])
                reference = ReferenceSet(
                    tasks, data["reference_vectors"].astype(np.float32), data["reference_labels"].astype(np.int64)
                )
                layers = tuple((data[f"head_w{i}"], data[f"head_b{i}"]) for i in range(int(data["head_layers"])))
                head = TaskHead(tasks, layers, float(data["head_temperature"]))
                return cls(reference, head, fitted_on, str(data["tasks_fingerprint"]), json.loads(str(data["meta"])))
        except (ArtifactVersionError, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged archive raises
            raise DamagedArtifact(f"{path} is not a usable task model: {exc}") from exc


def fit_task_model(
    tasks: Sequence[TaskType],
    labelled: Iterable[LabelledPrompt],
    embed: Embed,
    *,
    embedded: Sequence[tuple[np.ndarray, str]] = (),
    labelled_per_task: int = LABELLED_PER_TASK,
    exclude: Iterable[str] = (),
    training: HeadTraining = HeadTraining(),
    seed: int = 0,
) -> TaskModel:
    """Fit the reference set and the head on the registry's examples plus a balanced share of `labelled`.

    `labelled` may hold tasks the registry lacks (dropped) and duplicates (dropped); `exclude` keeps an evaluation
    set's texts out. `embedded` are prompts labelled by feedback whose text was not kept, as (embedding, task): at
    most `labelled_per_task` per task, first ones first, with the origin "feedback". `embed` must be the serving
    embedder's `embed` (or an `EmbeddingCache` over it), so that references and requests share one vector space.
    """
    started = time.perf_counter()
    names = [t.name for t in tasks]
    chosen = balance(labelled, labelled_per_task, tasks=names, exclude=exclude, seed=seed)
    prompts = [*registry_prompts(tasks), *chosen]
    kept: Counter[str] = Counter()
    extra: list[np.ndarray] = []
    for vector, task in embedded:
        if task in names and kept[task] < labelled_per_task:
            kept[task] += 1
            extra.append(np.asarray(vector, dtype=np.float32))
            prompts.append(LabelledPrompt("", task, "feedback", "feedback"))
    if not prompts:
        raise ValueError("nothing to fit on: the registry has no examples and no labelled prompts were given")
    texts = [p.text for p in prompts[: len(prompts) - len(extra)]]
    vectors = np.asarray(embed(texts), dtype=np.float32) if texts else np.zeros((0, len(extra[0])), np.float32)
    if extra:
        vectors = np.vstack([vectors, np.stack(extra)])
    labels = [p.task for p in prompts]
    reference = ReferenceSet.from_labels(names, vectors, labels)
    head = train_head(vectors, labels, names, training_weights(prompts), training)
    counts = Counter(f"{p.task}/{p.origin}" for p in prompts)
    meta = {
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 2),
        "prompts": len(prompts),
        "counts": dict(sorted(counts.items())),
        "sources": dict(sorted(Counter(p.source for p in chosen).items())),
        "training": asdict(training) | {"labelled_per_task": labelled_per_task, "seed": seed},
    }
    log.info("fitted the task model on %d prompts in %.1f s", len(prompts), meta["seconds"])
    return TaskModel(reference, head, MODEL_ID, tasks_fingerprint(tasks), meta)

"""Layer 4: a small neural head over the prompt's transformer embedding, trained with torch on labelled prompts.

Training uses torch (CPU is plenty: a few thousand 384-d rows, seconds). Inference is a two-matrix product, done
in numpy so that serving the head needs no torch import and no device: microseconds beside the ~10 ms embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .layer import LayerVerdict, check_embedding
from .scoring import softmax, verdict


@dataclass(frozen=True)
class HeadTraining:
    hidden: int = 256
    """Width of the hidden layer; 0 trains a linear head."""
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    dropout: float = 0.2
    label_smoothing: float = 0.05
    seed: int = 0
    threads: int = 1
    """torch intra-op threads while training (restored after). A head this small trains fastest on one thread:
    with more, torch's workers spin against whatever else the machine runs (10-40x slower on a busy 2-core box)."""


@dataclass(frozen=True, eq=False)
class TaskHead:
    """The trained weights: `layers` are (weights (in, out), bias (out,)) pairs with a ReLU between them."""

    tasks: tuple[str, ...]
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a head needs at least one layer")
        for (w, b), nxt in zip(self.layers, [*self.layers[1:], None]):
            if w.ndim != 2 or b.shape != (w.shape[1],) or (nxt is not None and nxt[0].shape[0] != w.shape[1]):
                raise ValueError("head layer shapes do not chain")
        if self.layers[-1][0].shape[1] != len(self.tasks):
            raise ValueError(f"the head has {self.layers[-1][0].shape[1]} outputs for {len(self.tasks)} tasks")

    @property
    def dimension(self) -> int:
        return int(self.layers[0][0].shape[0])

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Task probabilities for one embedding (d,) or a batch (n, d)."""
        x = embeddings.astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return softmax(x, self.temperature)


def train_head(
    vectors: np.ndarray,
    labels: Sequence[str],
    tasks: Sequence[str],
    sample_weight: np.ndarray | None = None,
    config: HeadTraining = HeadTraining(),
) -> TaskHead:
    """Fit the head with AdamW on weighted, label-smoothed cross-entropy. Deterministic for a given seed."""
    index = {name: i for i, name in enumerate(tasks)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels not among the tasks: {', '.join(unknown)}")
    if len(vectors) != len(labels) or not len(vectors):
        raise ValueError("need one label per vector, and at least one vector")
    weights = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    targets = np.array([index[label] for label in labels], dtype=np.int64)
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("training the task head needs torch: pip install torch") from exc
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        layers = _fit(np.asarray(vectors, dtype=np.float32), targets, weights * (len(weights) / weights.sum()),
                      len(tasks), config)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return TaskHead(tuple(tasks), layers)


def _fit(
    vectors: np.ndarray, targets: np.ndarray, weights: np.ndarray, n_tasks: int, config: HeadTraining
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    import torch
    from torch import nn

    x = torch.as_tensor(vectors)
    y = torch.as_tensor(targets)
    w = torch.as_tensor(weights, dtype=torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        parts: list[nn.Module] = [nn.Dropout(config.dropout / 2)]
        if config.hidden > 0:
            parts += [nn.Linear(x.shape[1], config.hidden), nn.ReLU(), nn.Dropout(config.dropout)]
        parts.append(nn.Linear(config.hidden or x.shape[1], n_tasks))
        model = nn.Sequential(*parts)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        loss_fn = nn.CrossEntropyLoss(reduction="none", label_smoothing=config.label_smoothing)
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(y), generator=generator)
            for start in range(0, len(y), config.batch_size):
                batch = order[start : start + config.batch_size]
                optimizer.zero_grad()
                loss = (loss_fn(model(x[batch]), y[batch]) * w[batch]).mean()
                loss.backward()
                optimizer.step()
    return tuple(
        (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in model if isinstance(m, nn.Linear)
    )


class TorchHeadLayer:
    """The trained head's most probable task; its probability is the confidence."""

    name = "torch_head"
    needs_embedding: Literal[True] = True

    def __init__(self, head: TaskHead) -> None:
        self._head = head

    def classify(self, text: str, embedding: np.ndarray) -> LayerVerdict:
        problem = check_embedding(embedding, self._head.dimension)
        if problem:
            return LayerVerdict(None, 0.0, problem)
        return verdict(self._head.probabilities(embedding), self._head.tasks)

"""Routing-outcome data: for each prompt, every model's quality and cost. What routers learn from and are scored on.

The file format is one JSON record a line: `{"id", "messages", "task", "source", "domain",
"outcomes": {model: {"quality", "cost_usd", "cost_estimated", "response"}}}`, with a `models.json` beside it
(`{model: {"input_cost_per_mtok", "output_cost_per_mtok"}}`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .types import content_text


@dataclass(frozen=True)
class ModelPrice:
    input_cost_per_mtok: float | None
    output_cost_per_mtok: float | None


@dataclass
class OutcomeSet:
    """Prompts × models. `quality` and `cost` are [n, M] arrays; NaN where the source has no value."""

    ids: list[str]
    texts: list[str]
    tasks: list[str | None]
    sources: list[str | None]
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    """Unit-length prompt embeddings [n, d], filled in by whoever embeds the set."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_cost(self) -> bool:
        return bool(np.isfinite(self.cost).any())

    def subset(self, indices: Sequence[int] | np.ndarray) -> OutcomeSet:
        idx = np.asarray(indices, dtype=np.int64)
        return OutcomeSet(
            [self.ids[i] for i in idx],
            [self.texts[i] for i in idx],
            [self.tasks[i] for i in idx],
            [self.sources[i] for i in idx],
            list(self.models),
            self.quality[idx],
            self.cost[idx],
            dict(self.prices),
            None if self.embeddings is None else self.embeddings[idx],
        )

    def task_labels(self) -> list[str]:
        return sorted({t for t in self.tasks if t is not None})


def prompt_text(messages: Sequence[dict]) -> str:
    """The text a router reads for a record: its last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(messages[-1].get("content")) if messages else ""


def load_outcomes(path: str | Path, models_path: str | Path | None = None) -> OutcomeSet:
    """Read a routing-outcome file; `models_path` defaults to `models.json` beside it."""
    path = Path(path)
    models_path = Path(models_path) if models_path else path.parent / "models.json"
    if not path.exists():
        raise FileNotFoundError(f"no outcome file at {path}")
    prices: dict[str, ModelPrice] = {}
    if models_path.exists():
        raw = json.loads(models_path.read_text(encoding="utf-8"))
        prices = {m: ModelPrice(p.get("input_cost_per_mtok"), p.get("output_cost_per_mtok")) for m, p in raw.items()}
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not JSON: {exc}") from exc
    if not records:
        raise ValueError(f"{path} holds no records")
    models = list(prices) or list(records[0]["outcomes"])
    quality = np.full((len(records), len(models)), np.nan)
    cost = np.full((len(records), len(models)), np.nan)
    column = {m: j for j, m in enumerate(models)}
    for i, record in enumerate(records):
        for model, outcome in record["outcomes"].items():
            j = column.get(model)
            if j is None:
                continue
            if outcome.get("quality") is not None:
                quality[i, j] = float(outcome["quality"])
            if outcome.get("cost_usd") is not None:
                cost[i, j] = float(outcome["cost_usd"])
    return OutcomeSet(
        [str(r.get("id", i)) for i, r in enumerate(records)],
        [prompt_text(r.get("messages") or []) for r in records],
        [r.get("task") for r in records],
        [r.get("source") for r in records],
        models,
        quality,
        cost,
        prices,
    )


def kfold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """`folds` disjoint test index sets covering 0..n-1, shuffled with a fixed seed."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def restrict(data: OutcomeSet, models: Sequence[str]) -> OutcomeSet:
    """The same prompts over `models` (in that order); a model the set lacks gets NaN outcomes."""
    columns = {m: j for j, m in enumerate(data.models)}
    quality = np.full((len(data), len(models)), np.nan)
    cost = np.full((len(data), len(models)), np.nan)
    for k, model in enumerate(models):
        if model in columns:
            quality[:, k] = data.quality[:, columns[model]]
            cost[:, k] = data.cost[:, columns[model]]
    return OutcomeSet(list(data.ids), list(data.texts), list(data.tasks), list(data.sources), list(models),
                      quality, cost, {m: p for m, p in data.prices.items() if m in models})  # fmt: skip


def concatenate(sets: Sequence[OutcomeSet], models: Sequence[str]) -> OutcomeSet:
    """Several sets as one over `models`; prompts that no listed model answered are dropped."""
    parts = [restrict(s, models) for s in sets]
    quality = np.vstack([p.quality for p in parts]) if parts else np.zeros((0, len(models)))
    keep = np.isfinite(quality).any(axis=1) if len(quality) else np.zeros(0, dtype=bool)
    joined = OutcomeSet(
        [i for p in parts for i in p.ids], [t for p in parts for t in p.texts], [t for p in parts for t in p.tasks],
        [s for p in parts for s in p.sources], list(models), quality,
        np.vstack([p.cost for p in parts]) if parts else np.zeros((0, len(models))),
    )  # fmt: skip
    return joined.subset(np.nonzero(keep)[0])


def from_feedback(rows: Sequence[dict], models: Sequence[str]) -> OutcomeSet:
    """Logged decisions with explicit feedback: one known outcome per prompt (the model that served it)."""
    column = {m: j for j, m in enumerate(models)}
    rows = [r for r in rows if r.get("model") in column and r.get("prompt_text")]
    quality = np.full((len(rows), len(models)), np.nan)
    cost = np.full((len(rows), len(models)), np.nan)
    for i, row in enumerate(rows):
        quality[i, column[row["model"]]] = float(row["quality"])
        if row.get("cost_usd") is not None:
            cost[i, column[row["model"]]] = float(row["cost_usd"])
    return OutcomeSet([r["request_id"] for r in rows], [r["prompt_text"] for r in rows], [r.get("task") for r in rows],
                      ["feedback"] * len(rows), list(models), quality, cost)  # fmt: skip

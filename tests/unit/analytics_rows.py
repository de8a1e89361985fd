"""A store with known traffic for the analytics tests, written through the store's own write path.

Five requests in the hour before `now` and one two hours earlier (outside a one-hour window):

| id | task   | layer            | router  | attempts (model outcome latency cost)              | feedback            |
|----|--------|------------------|---------|----------------------------------------------------|---------------------|
| r1 | coding | keywords         | learned | coder success 100 0.001                            | 1.0, task coding    |
| r2 | coding | keywords         | learned | coder success 200 0.002                            | 0.0, task math      |
| r3 | math   | static_embedding | static  | mathematician failure 50 -, frontier success 300 0.01 | -                |
| r4 | math   | fallback         | static  | frontier failure 400 -                             | -                   |
| r5 | chat   | static_embedding | learned | mini success 400 0.0005                            | 0.25 + 0.75, task chat |
| r0 | coding | keywords         | learned | coder success 9999 1.0 (two hours before NOW)      | 0.0                 |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.events import DecisionRecord, FeedbackRecord, PerformanceRecord, Record
from proxy.store import Store, open_store

NOW = 1_700_000_000.0


def attempt(layer: str, task: str | None, confidence: float, accepted: bool, latency_ms: float,
            detail: str = "") -> dict[str, Any]:  # fmt: skip
    return {"layer": layer, "task": task, "confidence": confidence, "threshold": 0.5, "accepted": accepted,
            "latency_ms": latency_ms, "detail": detail}  # fmt: skip


KEYWORDS_SURE = attempt("keywords", "coding", 0.9, True, 0.05)
KEYWORDS_UNSURE = attempt("keywords", None, 0.0, False, 0.03)
STATIC_SURE = [KEYWORDS_UNSURE, attempt("static_embedding", "math", 0.7, True, 0.2)]
CHAT = [KEYWORDS_UNSURE, attempt("static_embedding", "chat", 0.6, True, 0.4)]
NOBODY = [KEYWORDS_UNSURE, attempt("static_embedding", "math", 0.3, False, 0.3),
          attempt("knn", None, 0.0, False, 0.0, "skipped: no embedding given"), attempt("fallback", "math", 0.0, True, 0.0)]  # fmt: skip


def decision(request_id: str, at: float, task: str, layer: str, attempts: list[dict[str, Any]], routed: str,
             served: str, router: str, status: str, predicted: float, n_attempts: int = 1) -> DecisionRecord:  # fmt: skip
    return DecisionRecord(
        request_id=request_id, created_at=at, requested_model="auto", preference="balanced", task=task,
        task_confidence=max((a["confidence"] for a in attempts), default=0.0), classification_layer=layer,
        needs_clarification=layer == "fallback", layer_attempts=attempts, selected_model=served, routed_model=routed,
        selection_reason="test", alternatives=[{"model": routed, "quality": predicted, "score": 1.0},
                                               {"model": "other", "quality": 0.1, "score": 0.5}],
        router_name=router, router_version="v1", propensity=1.0, stream=False, status=status,
        attempts=n_attempts, prompt_chars=20, prompt_text=f"prompt of {request_id}", language="en",
    )  # fmt: skip


def perf(request_id: str, at: float, n: int, model: str, outcome: str, latency: float, cost: float | None,
         task: str, error: str | None = None) -> PerformanceRecord:  # fmt: skip
    return PerformanceRecord(request_id, at + n * 0.1, n, model, task, outcome, latency, None, 10, 20, cost,
                             "litellm" if cost is not None else None, error)  # fmt: skip


def feedback(request_id: str, at: float, score: float | None, task: str | None = None) -> FeedbackRecord:
    return FeedbackRecord(request_id, at + 5, score, extra={"task": task} if task else {})


def records(now: float = NOW) -> list[Record]:
    t = now - 1800
    return [
        decision("r1", t, "coding", "keywords", [KEYWORDS_SURE], "coder", "coder", "learned", "success", 0.8),
        perf("r1", t, 1, "coder", "success", 100.0, 0.001, "coding"),
        feedback("r1", t, 1.0, "coding"),
        decision("r2", t + 60, "coding", "keywords", [KEYWORDS_SURE], "coder", "coder", "learned", "success", 0.6),
        perf("r2", t + 60, 1, "coder", "success", 200.0, 0.002, "coding"),
        feedback("r2", t + 60, 0.0, "math"),
        decision("r3", t + 120, "math", "static_embedding", STATIC_SURE, "mathematician", "frontier", "static",
                 "success", 0.9, 2),  # fmt: skip
        perf("r3", t + 120, 1, "mathematician", "failure", 50.0, None, "math", "APIError"),
        perf("r3", t + 120, 2, "frontier", "success", 300.0, 0.01, "math"),
        decision("r4", t + 180, "math", "fallback", NOBODY, "frontier", "frontier", "static", "failure", 0.7),
        perf("r4", t + 180, 1, "frontier", "failure", 400.0, None, "math", "Timeout"),
        decision("r5", t + 240, "chat", "static_embedding", CHAT, "mini", "mini", "learned", "success", 0.35),
        perf("r5", t + 240, 1, "mini", "success", 400.0, 0.0005, "chat"),
        feedback("r5", t + 240, 0.25, "chat"),
        feedback("r5", t + 250, 0.75),
        decision("r0", now - 7200, "coding", "keywords", [KEYWORDS_SURE], "coder", "coder", "learned", "success", 0.5),
        perf("r0", now - 7200, 1, "coder", "success", 9999.0, 1.0, "coding"),
        feedback("r0", now - 7200, 0.0),
    ]


def populated_store(location: str | Path, now: float = NOW) -> Store:
    """The store at `location` (a SQLite file or a Postgres URL) with these rows written."""
    store = open_store(str(location))
    store.write_batch(records(now))
    return store

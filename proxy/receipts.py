"""The routing receipt: why one request went where it went, from the rows the store keeps about it.

`GET /v1/decisions/{request_id}` answers with `build_receipt(decision, attempts, feedback)`:

- `classification`: the task, its confidence, the layer that decided and every layer's attempt (task, confidence,
  threshold, accepted, milliseconds), whether the request needs clarification, and its language;
- `routing`: the router and its version, the preference, its reason, and every candidate in rank order with its
  predicted quality (a success probability), cost (`cost_unit` says per what) and latency, its utility under the
  preference and its probability of being chosen; then the winner's utility and its margin over the best other
  candidate (negative when exploration chose a lower-ranked model), the exploration propensity, the A/B arm;
- `attempts`: every backend tried, in order, with its outcome, duration, time to first token, tokens, cost, error;
- `feedback`: every score, label, task and comment sent for it.

Built from stored rows only (no live object), so a receipt reads the same from any process sharing the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router_plugins.types import COST_PER_1K_TOKENS

RECEIPT_OBJECT = "routing.receipt"


def build_receipt(
    decision: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]], feedback: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The receipt of one request from its `routing_decisions` row, `model_performance` rows and `feedback` rows
    (as `proxy.store` returns them: JSON columns decoded)."""
    probabilities: Mapping[str, float] = decision.get("choice_probabilities") or {}
    selected, routed = decision.get("selected_model"), decision.get("routed_model")
    if not probabilities and routed is not None:  # chosen for certain, or a row from before probabilities were kept
        probabilities = {routed: decision.get("propensity") or 1.0}
    candidates = _candidates(decision.get("alternatives") or [], probabilities, routed, selected)
    receipt: dict[str, Any] = {
        "object": RECEIPT_OBJECT,
        "request_id": decision["request_id"],
        "created": decision.get("created_at"),
        "requested_model": decision.get("requested_model"),
        "status": decision.get("status"),
        "stream": decision.get("stream"),
        "classification": {
            "task": decision.get("task"),
            "confidence": decision.get("task_confidence"),
            "layer": decision.get("classification_layer"),
            "needs_clarification": decision.get("needs_clarification"),
            "language": decision.get("language"),
            "layers": list(decision.get("layer_attempts") or []),
        },
        "routing": {
            "router": decision.get("router_name"),
            "router_version": decision.get("router_version"),
            "preference": decision.get("preference"),
            "reason": decision.get("selection_reason"),
            "routed_model": routed,
            "selected_model": selected,
            "candidates": candidates,
            "winner": _winner(candidates, routed),
            "propensity": decision.get("propensity"),
            "explored": _explored(candidates, routed),
            "ab_arm": decision.get("ab_arm"),
            "counterfactual": _counterfactual(decision),
        },
        "attempts": [_attempt(row) for row in attempts],
        "feedback": [_feedback(row) for row in feedback],
    }
    if decision.get("error_code") is not None or decision.get("error_message") is not None:
        # Why no answer came back: refused before any backend (`rejected`), or every backend failed.
        receipt["error"] = {"code": decision.get("error_code"), "message": decision.get("error_message")}
    return receipt


def _counterfactual(decision: Mapping[str, Any]) -> dict[str, Any] | None:
    """Under an A/B test, what the other arm (or the shadowed chain) would have chosen."""
    if not decision.get("counterfactual_model"):
        return None
    return {"model": decision["counterfactual_model"], "router": decision.get("counterfactual_router")}


def _candidates(
    alternatives: Sequence[Mapping[str, Any]], probabilities: Mapping[str, float], routed: Any, selected: Any
) -> list[dict[str, Any]]:
    """The candidates as the router ranked them: by utility, best first (the stored order puts an explored choice
    first, so rank is recomputed)."""
    ranked = sorted(enumerate(alternatives), key=lambda item: (-_number(item[1].get("score")), item[0]))
    out = []
    for rank, (_, c) in enumerate(ranked, 1):
        model = str(c.get("model"))
        out.append({
            "model": model,
            "rank": rank,
            "predicted_quality": c.get("quality"),
            "predicted_cost": c.get("cost_per_1k"),
            "cost_unit": c.get("cost_unit", COST_PER_1K_TOKENS),
            "predicted_latency_ms": c.get("latency_ms"),
            "utility": c.get("score"),
            "choice_probability": probabilities.get(model, 0.0),
            "routed": model == routed,
            "served": model == selected,
            "note": c.get("note", ""),
        })  # fmt: skip
    return out


def _winner(candidates: Sequence[Mapping[str, Any]], routed: Any) -> dict[str, Any] | None:
    """The routed model's utility and its margin over the best other candidate (None alone)."""
    chosen = next((c for c in candidates if c["model"] == routed), None)
    if chosen is None:
        return None
    others = [c for c in candidates if c["model"] != routed]
    margin = round(_number(chosen["utility"]) - _number(others[0]["utility"]), 6) if others else None
    return {"model": routed, "utility": chosen["utility"], "margin": margin,
            "runner_up": others[0]["model"] if others else None}  # fmt: skip


def _explored(candidates: Sequence[Mapping[str, Any]], routed: Any) -> bool:
    """Whether the routed model is not the best-ranked one: exploration (or the drift guard's win rates) chose it."""
    return bool(candidates) and candidates[0]["model"] != routed and candidates[0]["utility"] is not None


def _attempt(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "attempt": row.get("attempt"),
        "model": row.get("model"),
        "outcome": row.get("outcome"),
        "latency_ms": row.get("latency_ms"),
        "ttft_ms": row.get("ttft_ms"),
        "prompt_tokens": row.get("prompt_tokens"),
        "completion_tokens": row.get("completion_tokens"),
        "cost_usd": row.get("cost_usd"),
        "cost_source": row.get("cost_source"),
        "error_class": row.get("error_class"),
        "error_message": row.get("error_message"),
    }


def _feedback(row: Mapping[str, Any]) -> dict[str, Any]:
    extra = row.get("extra") or {}
    return {
        "created": row.get("created_at"),
        "score": row.get("score"),
        "label": row.get("label"),
        "task": extra.get("task"),
        "comment": row.get("comment"),
        "source": row.get("source"),
    }


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("-inf")


__all__ = ["RECEIPT_OBJECT", "build_receipt"]

"""`proxy.receipts`: a receipt from stored rows, as the store returns them."""

from __future__ import annotations

from typing import Any

from proxy.receipts import build_receipt

ALTERNATIVES = [  # stored order: the explored choice first
    {"model": "c", "score": 0.40, "quality": 0.6, "cost_per_1k": 0.2, "latency_ms": 900.0, "note": "",
     "cost_unit": "usd_per_1k_tokens"},
    {"model": "a", "score": 0.70, "quality": 0.9, "cost_per_1k": 1.0, "latency_ms": 1500.0, "note": "specialist"},
    {"model": "b", "score": 0.55, "quality": 0.8, "cost_per_1k": 0.5, "latency_ms": 1100.0, "note": ""},
]  # fmt: skip


def decision(**changes: Any) -> dict[str, Any]:
    row = {
        "request_id": "ar-1", "created_at": 1.0, "requested_model": "auto", "preference": "balanced",
        "task": "coding", "task_confidence": 0.9, "classification_layer": "text-model",
        "needs_clarification": False, "layer_attempts": [{"layer": "keywords", "accepted": False}],
        "selected_model": "a", "routed_model": "a", "selection_reason": "best utility", "alternatives": ALTERNATIVES,
        "router_name": "winrate", "router_version": "w3", "propensity": 0.8, "stream": False, "status": "success",
        "attempts": 1, "language": "en", "ab_arm": None, "counterfactual_model": None,
        "choice_probabilities": {"a": 0.8, "b": 0.15, "c": 0.05},
    }  # fmt: skip
    return row | changes


def test_candidates_are_ranked_by_utility_with_the_winners_margin() -> None:
    receipt = build_receipt(decision(), [], [])
    routing = receipt["routing"]
    assert [(c["model"], c["rank"], c["choice_probability"]) for c in routing["candidates"]] == [
        ("a", 1, 0.8), ("b", 2, 0.15), ("c", 3, 0.05)
    ]  # fmt: skip
    first = routing["candidates"][0]
    assert (first["predicted_quality"], first["predicted_cost"], first["predicted_latency_ms"]) == (0.9, 1.0, 1500.0)
    assert first["cost_unit"] == "usd_per_1k_tokens" and first["routed"] and first["served"]
    assert routing["winner"] == {"model": "a", "utility": 0.7, "margin": 0.15, "runner_up": "b"}
    assert routing["explored"] is False and routing["propensity"] == 0.8
    assert receipt["classification"]["language"] == "en"
    assert receipt["classification"]["layers"] == [{"layer": "keywords", "accepted": False}]


def test_an_explored_choice_has_a_negative_margin() -> None:
    receipt = build_receipt(decision(routed_model="c", selected_model="c", propensity=0.05), [], [])
    assert receipt["routing"]["winner"]["margin"] == -0.3
    assert receipt["routing"]["explored"] is True


def test_attempts_in_order_and_feedback() -> None:
    attempts = [
        {"attempt": 1, "model": "a", "outcome": "failure", "latency_ms": 5.0, "error_class": "RateLimitError"},
        {"attempt": 2, "model": "b", "outcome": "success", "latency_ms": 9.0, "cost_usd": 0.002},
    ]
    feedback = [{"created_at": 2.0, "score": 1.0, "label": "thumbs_up", "extra": {"task": "debugging"},
                 "comment": None, "source": "api"}]  # fmt: skip
    receipt = build_receipt(decision(selected_model="b", attempts=2), attempts, feedback)
    assert [(a["model"], a["outcome"], a["error_class"]) for a in receipt["attempts"]] == [
        ("a", "failure", "RateLimitError"), ("b", "success", None)
    ]  # fmt: skip
    assert receipt["feedback"] == [{"created": 2.0, "score": 1.0, "label": "thumbs_up", "task": "debugging",
                                    "comment": None, "source": "api"}]  # fmt: skip
    served = {c["model"]: c["served"] for c in receipt["routing"]["candidates"]}
    assert served == {"a": False, "b": True, "c": False}


def test_a_row_without_probabilities_or_candidates() -> None:
    # Written before choice probabilities were kept, or refused before any candidate was ranked.
    receipt = build_receipt(decision(choice_probabilities=None), [], [])
    assert [c["choice_probability"] for c in receipt["routing"]["candidates"]] == [0.8, 0.0, 0.0]
    refused = build_receipt(decision(alternatives=[], routed_model=None, selected_model=None, status="rejected",
                                     error_code="no_backend_available", error_message="no backend can serve it"),
                            [], [])  # fmt: skip
    assert refused["status"] == "rejected"
    assert refused["error"] == {"code": "no_backend_available", "message": "no backend can serve it"}
    assert refused["routing"]["candidates"] == [] and refused["routing"]["winner"] is None

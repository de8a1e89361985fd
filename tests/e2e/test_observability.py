"""`/metrics` and the routing receipt over real sockets: known traffic through the real `openai` client, then exact
counts, and the receipt of a request that fell back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import UPSTREAM_KEY, Gateway, Upstream, registry_text

KEY = "sk-observer-1"
CODING = "Write a Python function that merges two sorted lists."
CODING_STREAM = "Write a Python function that parses ISO dates"
DEBUGGING = "My script crashes with KeyError: 'id' when I run it"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def observed(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    """A gateway of its own (the counts are exact) with client auth on."""
    text = registry_text(upstream).replace("storage:", "auth:\n  api_key_envs: [E2E_OBSERVER_KEY]\n\nstorage:")
    return start_gateway(text, env={"E2E_UPSTREAM_KEY": UPSTREAM_KEY, "E2E_OBSERVER_KEY": KEY})


@pytest.fixture(scope="module")
def traffic(observed: Gateway) -> dict[str, Any]:
    """Five requests: two coding, one streamed coding, one debugging that falls back, one naming a model."""
    client = openai.OpenAI(base_url=observed.base_url, api_key=KEY, max_retries=0)
    sent: dict[str, Any] = {"ids": []}
    for prompt in (CODING, CODING):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt}]
        )
        assert raw.parse().model == "coder"
        sent["ids"].append(raw.headers["x-autoroute-request-id"])
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": CODING_STREAM}], stream=True
    ) as response:  # fmt: skip
        assert response.headers["x-autoroute-model"] == "coder"
        sent["stream"] = response.headers["x-autoroute-request-id"]
        assert response.read().decode().rstrip().endswith("data: [DONE]")
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": DEBUGGING}]
    )
    assert raw.headers["x-autoroute-model"] == "coder" and raw.headers["x-autoroute-task"] == "debugging"
    sent["fallback"] = raw.headers["x-autoroute-request-id"]
    raw = client.chat.completions.with_raw_response.create(
        model="mini", messages=[{"role": "user", "content": "hello there"}]
    )
    sent["named"], sent["named_task"] = raw.headers["x-autoroute-request-id"], raw.headers["x-autoroute-task"]
    return sent


def _get(gateway: Gateway, path: str, key: str | None = KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{gateway.url}{path}", headers=headers, timeout=10)


def _scrape(gateway: Gateway) -> Samples:
    response = _get(gateway, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def _total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` carrying `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= set(ls))


def test_observability_needs_the_client_key(observed: Gateway) -> None:
    for key in (None, "wrong"):
        for path in ("/metrics", "/v1/decisions/ar-anything"):
            response = _get(observed, path, key)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"


def test_metrics_count_the_traffic(observed: Gateway, traffic: dict[str, Any]) -> None:
    # The stream's attempt is recorded when its end is seen by the gateway, just after the client's last byte.
    deadline = time.monotonic() + 10
    while True:
        found = _scrape(observed)
        if _total(found, "autoroute_requests_total") == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    auto = {"router": "static-rules", "preference": "balanced", "status": "success"}
    assert _value(found, "autoroute_requests_total", model="coder", task="coding", **auto) == 3
    assert _value(found, "autoroute_requests_total", model="coder", task="debugging", **auto) == 1
    assert _value(found, "autoroute_requests_total", model="mini", task=traffic["named_task"], router="passthrough",
                  preference="balanced", status="success") == 1  # fmt: skip
    assert _total(found, "autoroute_requests_total") == 5
    assert _value(found, "autoroute_fallbacks_total", from_model="broken-debugger", to_model="coder",
                  reason="InternalServerError") == 1  # fmt: skip
    assert _total(found, "autoroute_fallbacks_total") == 1
    assert _value(found, "autoroute_attempt_failures_total", model="broken-debugger",
                  error_class="InternalServerError") == 1  # fmt: skip
    assert _value(found, "autoroute_attempt_duration_seconds_count", model="coder", outcome="success") == 4
    assert _value(found, "autoroute_attempt_duration_seconds_count", model="broken-debugger", outcome="failure") == 1
    assert _value(found, "autoroute_time_to_first_token_seconds_count", model="coder") == 1
    assert _total(found, "autoroute_classifier_decisions_total") == 5
    assert _total(found, "autoroute_classifier_layer_attempts_total", result="accepted") == 5, "one decides each"

    # Tokens and spend match what the store recorded, model by model.
    observed.wait_rows("SELECT * FROM model_performance", count=6)
    for row in observed.rows("SELECT model, SUM(prompt_tokens) AS p, SUM(completion_tokens) AS c, "
                             "SUM(cost_usd) AS usd FROM model_performance GROUP BY model"):  # fmt: skip
        assert _value(found, "autoroute_tokens_total", model=row["model"], kind="prompt") == (row["p"] or None)
        assert _value(found, "autoroute_tokens_total", model=row["model"], kind="completion") == (row["c"] or None)
        spent = _total(found, "autoroute_cost_usd_total", model=row["model"])
        assert spent == pytest.approx(row["usd"] or 0.0, rel=1e-9)
    assert _total(found, "autoroute_cost_usd_total") > 0

    # Read at scrape time: the breaker (off in this registry: every model closed), the models, the versions.
    models = httpx.get(f"{observed.base_url}/models", headers={"authorization": f"Bearer {KEY}"}).json()["data"]
    available = [m["id"] for m in models if m.get("available")]
    assert _value(found, "autoroute_models_available") == len(available)
    assert _value(found, "autoroute_circuit_breaker_state", model="broken-debugger", state="closed") == 1
    assert _value(found, "autoroute_circuit_breaker_state", model="broken-debugger", state="open") == 0
    assert _value(found, "autoroute_router_info", router="static-rules", version=_registry_version(observed),
                  position="2") == 1  # fmt: skip
    assert not [k for k in found if k[0] == "autoroute_learning_events_total"]


def test_recorder_counts_after_a_receipt_flushed_it(observed: Gateway, traffic: dict[str, Any]) -> None:
    assert _get(observed, f"/v1/decisions/{traffic['named']}").status_code == 200
    found = _scrape(observed)
    # Five decisions and six attempts, all written: a receipt flushes the queue first.
    assert _value(found, "autoroute_recorder_enqueued_total") == 11
    assert _value(found, "autoroute_recorder_written_total") == 11
    assert _value(found, "autoroute_recorder_dropped_total") == 0
    assert _value(found, "autoroute_recorder_lost_total") == 0
    assert _value(found, "autoroute_recorder_queue_depth") == 0


def test_the_receipt_of_a_fallback(observed: Gateway, traffic: dict[str, Any]) -> None:
    request_id = traffic["fallback"]
    response = _get(observed, f"/v1/decisions/{request_id}")
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert (receipt["object"], receipt["request_id"], receipt["status"]) == ("routing.receipt", request_id, "success")
    classification = receipt["classification"]
    assert classification["task"] == "debugging" and classification["language"] == "en"
    assert any(layer["accepted"] for layer in classification["layers"])
    assert all(
        {"layer", "task", "confidence", "threshold", "accepted"} <= set(layer) for layer in classification["layers"]
    )

    routing = receipt["routing"]
    assert (routing["router"], routing["router_version"]) == ("static-rules", _registry_version(observed))
    assert (routing["routed_model"], routing["selected_model"]) == ("broken-debugger", "coder")
    candidates = routing["candidates"]
    assert [(c["model"], c["rank"]) for c in candidates] == [("broken-debugger", 1), ("coder", 2)]
    first, second = candidates
    assert first["predicted_quality"] == 0.95 and first["cost_unit"] == "usd_per_1k_tokens"
    assert first["predicted_cost"] > 0 and first["choice_probability"] == 1.0 and second["choice_probability"] == 0.0
    assert (first["routed"], first["served"], second["served"]) == (True, False, True)
    winner = routing["winner"]
    assert winner["model"] == "broken-debugger" and winner["runner_up"] == "coder"
    assert winner["margin"] == pytest.approx(first["utility"] - second["utility"], abs=1e-6) and winner["margin"] > 0
    assert routing["propensity"] == 1.0 and routing["explored"] is False

    first_attempt, second_attempt = receipt["attempts"]
    assert (first_attempt["model"], first_attempt["outcome"], first_attempt["error_class"]) == (
        "broken-debugger", "failure", "InternalServerError"
    )  # fmt: skip
    assert (second_attempt["model"], second_attempt["outcome"]) == ("coder", "success")
    assert second_attempt["completion_tokens"] > 0 and second_attempt["cost_usd"] > 0
    assert receipt["feedback"] == []

    posted = httpx.post(f"{observed.base_url}/feedback", headers={"authorization": f"Bearer {KEY}"},
                        json={"request_id": request_id, "score": 0.25, "task": "debugging"})  # fmt: skip
    assert posted.status_code == 200, posted.text
    (feedback,) = _get(observed, f"/v1/decisions/{request_id}").json()["feedback"]
    assert (feedback["score"], feedback["task"], feedback["source"]) == (0.25, "debugging", "api")
    assert _value(_scrape(observed), "autoroute_feedback_written_total") == 1


def test_a_receipt_right_after_the_response(observed: Gateway) -> None:
    client = openai.OpenAI(base_url=observed.base_url, api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": CODING}])
    receipt = _get(observed, f"/v1/decisions/{raw.headers['x-autoroute-request-id']}").json()
    assert receipt["routing"]["selected_model"] == "coder"
    assert [a["outcome"] for a in receipt["attempts"]] == ["success"], "written before the receipt was read"


def test_an_unknown_id_is_an_openai_404(observed: Gateway) -> None:
    response = _get(observed, "/v1/decisions/ar-nobody")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "request_not_found",
        "request_id",
    )
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=observed.base_url, api_key=KEY).get("/decisions/ar-nobody", cast_to=httpx.Response)


def _registry_version(gateway: Gateway) -> str:
    (row,) = gateway.rows("SELECT router_version FROM routing_decisions WHERE router_name = 'static-rules' LIMIT 1")
    return str(row["router_version"])

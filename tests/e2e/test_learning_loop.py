"""The learning loop over real sockets: A/B split and shadow decisions, win rates learned from feedback."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from .conftest import Gateway, Upstream, registry_text

LEARNING = """
learning:
  chain: [learned, winrate, static-rules]
  aggregate_interval_s: 0.5
  winrate: {{exploration: {exploration}, half_life_events: 50}}
  ab: {{mode: {mode}, treatment_share: 0.5}}
"""


def _chat(client: openai.OpenAI, text: str) -> tuple[str, str, str | None]:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers["x-autoroute-request-id"], raw.headers["x-autoroute-model"], raw.headers.get("x-autoroute-arm")


def test_ab_split_serves_both_arms_and_logs_propensities_and_counterfactuals(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(registry_text(upstream) + LEARNING.format(exploration=0.3, mode="split"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    ids = [_chat(client, f"Translate 'good night number {i}' into French.") for i in range(40)]
    arms = {arm for _, _, arm in ids}
    assert arms == {"control", "treatment"}, arms
    rows = gateway.wait_rows(
        "SELECT ab_arm, router_name, selected_model, propensity, counterfactual_model, counterfactual_router "
        "FROM routing_decisions WHERE ab_arm IS NOT NULL", count=40,
    )  # fmt: skip
    for row in rows:
        assert 0 < row["propensity"] <= 1 and row["counterfactual_model"]
        if row["ab_arm"] == "control":
            assert row["router_name"] == "static-rules" and row["counterfactual_router"] == "winrate"
        else:
            assert row["router_name"] == "winrate" and row["counterfactual_router"] == "static-rules"


def test_shadow_mode_serves_static_rules_and_logs_the_chain_choice(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(registry_text(upstream) + LEARNING.format(exploration=0.0, mode="shadow"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    request_id, model, arm = _chat(client, "Translate 'thank you' into German.")
    assert arm == "shadow"
    (row,) = gateway.wait_rows(
        "SELECT router_name, selected_model, counterfactual_router FROM routing_decisions WHERE request_id = ?",
        (request_id,),
    )
    assert (row["router_name"], row["selected_model"], row["counterfactual_router"]) == ("static-rules", model, "winrate")


def test_feedback_moves_the_winrate_router_while_serving(start_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    gateway = start_gateway(registry_text(upstream) + LEARNING.format(exploration=0.0, mode="off"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    prompt = "Solve 3x + 5 = 20 for x."
    _, first, _ = _chat(client, prompt)
    # Every answer of the first choice is scored 0: the win rates fall and traffic moves to another model.
    deadline = time.monotonic() + 30
    model = first
    while model == first:
        assert time.monotonic() < deadline, "the win-rate router kept the failing model"
        request_id, model, _ = _chat(client, prompt)
        if model == first:
            assert httpx.post(f"{gateway.base_url}/feedback", json={"request_id": request_id, "score": 0.0}).status_code == 200
        time.sleep(0.05)
    snapshot = json.loads((gateway.data_dir / "artifacts" / "winrate-current.json").read_text())
    cells = {(c["task"], c["model"]): c for c in snapshot["cells"]}
    assert cells["math", first]["failures"] > 0


def _serve_and_score(gateway: Gateway, start: int, n: int) -> None:
    """`n` math requests, each scored as its answer deserves: 1 from frontier, 0 from any other model."""

    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")

    def one(i: int, feedback: httpx.Client) -> None:
        request_id, model, _ = _chat(client, f"Solve {i}x + 5 = {i + 20} for x.")
        score = 1.0 if model == "frontier" else 0.0
        assert feedback.post("/feedback", json={"request_id": request_id, "score": score}).status_code == 200

    with httpx.Client(base_url=gateway.base_url) as feedback, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: one(i, feedback), range(start, start + n)))


def test_the_trainer_promotes_only_on_evidence_in_the_background(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """Champion/challenger while serving, under the gate's default evidence rules (ESS ≥ 200, ≥ 30 outcomes per
    model it routes to, lower bound above the champion's upper bound). An A/B split makes the logging policy half
    static rules (math → mathematician, scored 0) and half the win-rate router (which learns frontier): a router
    that always picks frontier is worth ~1.0 against the logging policy's ~0.5. On the first hundred decisions that
    is not yet evidence (a rejection, and nothing is served by `learned`); after ~1,100 it is (a promotion, swapped
    in while serving). Half the log is held out (`evaluation_share: 0.5`) so the ESS of 200 needs fewer requests."""
    config = registry_text(upstream) + LEARNING.format(exploration=0.3, mode="split").replace(
        "  aggregate_interval_s: 0.5\n",
        "  aggregate_interval_s: 0.5\n  train_interval_s: 1\n  min_new_feedback: 100\n  evaluation_share: 0.5\n",
    )
    gateway = start_gateway(config)
    _serve_and_score(gateway, 0, 100)
    (first,) = gateway.wait_rows("SELECT kind, version, champion_version, scores, reason FROM learning_events",
                                 timeout=60)  # fmt: skip
    scores = json.loads(first["scores"])
    assert first["kind"] == "rejection" and first["champion_version"] == "logging-policy", first["reason"]
    assert "ESS" in first["reason"] and scores["gate"]["ess"] < 200 <= scores["gate"]["min_ess"]
    assert scores["challenger"]["n"] == scores["champion"]["n"] >= 20
    assert not (gateway.data_dir / "artifacts" / "learned-current.json").exists()
    _serve_and_score(gateway, 100, 1000)
    rows = gateway.wait_rows("SELECT kind, version, scores, reason FROM learning_events WHERE kind = 'promotion'",
                             timeout=90)  # fmt: skip
    assert rows, [r["reason"] for r in gateway.rows("SELECT reason FROM learning_events")]
    promotion = rows[0]
    gate = json.loads(promotion["scores"])["gate"]
    assert gate["ess"] >= 200 and gate["challenger_lower"] > gate["champion_upper"]
    assert all(gate["outcomes"][m] >= 30 for m in gate["routes_to"])
    pointer = json.loads((gateway.data_dir / "artifacts" / "learned-current.json").read_text())
    assert pointer["version"] == promotion["version"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    deadline = time.monotonic() + 15
    while True:  # the gateway swaps the promoted version in within ~2 s: treatment decisions come from `learned`
        request_id, model, arm = _chat(client, "Solve 7x + 5 = 40 for x.")
        (row,) = gateway.wait_rows("SELECT router_name, router_version FROM routing_decisions WHERE request_id = ?",
                                   (request_id,))  # fmt: skip
        if arm == "treatment" and row["router_name"] == "learned":
            assert row["router_version"] == promotion["version"]
            break
        assert time.monotonic() < deadline, "the promoted version was not swapped in"
        time.sleep(0.2)


def test_tuned_thresholds_are_swapped_in_while_serving(start_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    from router_plugins.thresholds import ARTIFACT_FORMAT, POINTER_FILE

    gateway = start_gateway(registry_text(upstream))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")

    def keywords_threshold() -> float:
        request_id, _, _ = _chat(client, "Translate 'thank you' into German.")
        (row,) = gateway.wait_rows("SELECT layer_attempts FROM routing_decisions WHERE request_id = ?", (request_id,))
        return json.loads(row["layer_attempts"])[0]["threshold"]

    assert keywords_threshold() == 0.55, "the YAML's (default) threshold"
    artifacts = gateway.data_dir / "artifacts"
    (artifacts / "thresholds-test.json").write_text(json.dumps(
        {"format": ARTIFACT_FORMAT, "version": "test", "thresholds": {"keywords": 0.71}}
    ))  # fmt: skip
    (artifacts / POINTER_FILE).write_text(json.dumps({"artifact": "thresholds-test.json", "version": "test"}))
    deadline = time.monotonic() + 15
    while (threshold := keywords_threshold()) != 0.71:
        assert time.monotonic() < deadline, f"the tuned threshold was not picked up ({threshold})"
        time.sleep(0.5)

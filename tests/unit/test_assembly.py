"""The one assembly: the gateway and the LiteLLM plugin route alike; the shared ranking; policies; domain errors."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.errors import routing_error
from proxy.runtime import build_runtime
from router_plugins.assembly import Parts, assemble
from router_plugins.classify import StaticEmbedder
from router_plugins.classify.assembly import ClassifierSources
from router_plugins.classify.static_embedding import TABLE_FILE, TABLE_VERSION, model_path
from router_plugins.datadir import DataDir, write_atomically
from router_plugins.errors import CapabilityMissing, ConstraintsUnmet, ModelNotFound, ModelUnavailable, NoBackendAvailable, RequestTooLarge
from router_plugins.language import detect_language
from router_plugins.outcomes import OutcomeSet
from router_plugins.registry import PreferenceWeights, parse_registry
from router_plugins.routers import LearnedRouter, RouterContext
from router_plugins.routers.ranking import Estimate, rank
from router_plugins.routers.winrate import Observation, aggregate, load_state
from router_plugins.thresholds import ARTIFACT_FORMAT
from router_plugins.thresholds import POINTER_FILE as THRESHOLDS_POINTER
from router_plugins.types import ChatRequest, Classification

FIXTURES = Path(__file__).parent.parent / "fixtures"
PROMPTS = [json.loads(line)["text"] for line in (FIXTURES / "tasks" / "user_prompts.jsonl").read_text().splitlines()]
CONFIG = """
models:
  - {name: coder, litellm_params: {model: openai/coder}, specialized_for: [coding], quality: {default: 0.6, coding: 0.9},
     input_cost_per_mtok: 1.0, output_cost_per_mtok: 2.0}
  - {name: mini, litellm_params: {model: openai/mini}, quality: {default: 0.7}, input_cost_per_mtok: 0.1,
     output_cost_per_mtok: 0.2}
  - {name: linguist, litellm_params: {model: openai/linguist}, quality: {default: 0.75}, languages: [fr, de, es],
     input_cost_per_mtok: 0.5, output_cost_per_mtok: 1.0}
routing_rules:
  - task: coding
    candidates: [{model: coder, priority: 1}, {model: mini, priority: 2}]
learning:
  chain: [learned, winrate, static-rules]
  winrate: {exploration: 0.0}
  ab: {mode: split, treatment_share: 0.5}
"""


def _static_table(data: DataDir) -> None:
    """A random table over the real tokenizer's vocabulary: the format the gateway distils, in a fraction of a
    second (the real one takes ~30 s)."""
    from tokenizers import Tokenizer

    size = Tokenizer.from_file(str(model_path() / "tokenizer.json")).get_vocab_size()
    rows = np.random.default_rng(0).normal(size=(size, 24)).astype(np.float16)
    write_atomically(data.path(TABLE_FILE), lambda h: np.savez(h, rows=rows, weights=np.ones(size, np.float32),
                                                               version=np.array(TABLE_VERSION)))  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, DataDir]:
    """A config and its data directory holding what a trained gateway has: the static table, a learned-router
    artifact, tuned thresholds and a win-rate snapshot."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")
    data = DataDir.resolve(config).ensure()
    _static_table(data)
    registry = parse_registry(CONFIG)
    embedder = StaticEmbedder.load(data.path(TABLE_FILE))
    rng = np.random.default_rng(1)
    texts = PROMPTS[:200]
    outcomes = OutcomeSet([str(i) for i in range(len(texts))], texts, ["chat"] * len(texts), [None] * len(texts),
                          ["coder", "mini", "linguist"], rng.random((len(texts), 3)).round(),
                          np.tile([0.003, 0.0003, 0.001], (len(texts), 1)))  # fmt: skip
    learned = LearnedRouter(registry, RouterContext(static_embed=embedder.embed))
    learned.fit(outcomes)
    learned.save(data.artifacts)
    thresholds = data.path("thresholds-test.json")
    thresholds.write_text(json.dumps({"format": ARTIFACT_FORMAT, "thresholds": {"keywords": 0.9}}))
    data.write_pointer(THRESHOLDS_POINTER, thresholds, "test")
    observations = [Observation(float(t), "chat", "mini", 0.0) for t in range(40)]
    state = aggregate(observations, registry.learning.winrate, now=40.0)
    data.path("winrate-current.json").write_text(state.to_json())
    return config, data


def test_the_plugin_routes_exactly_as_the_gateway(data_dir: tuple[Path, DataDir]) -> None:
    from router_plugins.litellm_plugin import AutorouteCallback

    config, data = data_dir
    plugin = AutorouteCallback(config)
    assert plugin.data_dir.resolve() == data.root, "the plugin reads the config's data directory"
    # The gateway's runtime, built as `proxy.gateway.Gateway.build` builds it from the same data directory.
    state = load_state(data.path("winrate-current.json"))
    assert state is not None and state.cell("chat", "mini").observations == 40
    text_model = ClassifierSources(data.artifacts).text_model()
    parts = Parts(StaticEmbedder.load(data.path(TABLE_FILE)), text_model, winrate=lambda: state)
    gateway = build_runtime(parse_registry(CONFIG), artifacts=data.artifacts, parts=parts).engine
    assert gateway.registry.router.classifier.keywords.threshold == 0.9, "tuned thresholds are served"
    assert plugin.registry.router.classifier.keywords.threshold == 0.9
    seen: dict[str, set[str]] = {"router": set(), "arm": set(), "language": set(), "model": set()}
    for i, text in enumerate(PROMPTS):
        preference = ("balanced", "quality", "cost")[i % 3]
        body = {"model": f"auto:{preference}", "messages": [{"role": "user", "content": text}], "litellm_call_id": f"r{i}"}
        decision = plugin.decide(body)
        meta = body["metadata"]["autoroute"]
        request = ChatRequest(f"r{i}", f"auto:{preference}", ({"role": "user", "content": text},), preference=preference)  # type: ignore[arg-type]
        classification = gateway.classify(text)
        routed = gateway.route(request, classification, detect_language(text))
        assert decision is not None and body["model"] == routed.decision.model, text
        assert (meta["task"], meta["layer"]) == (classification.task, classification.layer), text
        assert meta["router"] == f"{routed.decision.router}@{routed.decision.router_version}", text
        assert (meta["ab_arm"], meta["propensity"]) == (routed.arm, routed.decision.propensity), text
        assert meta["counterfactual_model"] == (routed.counterfactual.model if routed.counterfactual else None)
        seen["router"].add(routed.decision.router)
        seen["arm"].add(str(routed.arm))
        seen["language"].add(meta["language"])
        seen["model"].add(routed.decision.model)
    # The comparison covered what the plugin used to miss: the learned router, both arms, the language's candidates.
    assert {"learned", "static-rules"} <= seen["router"] and seen["arm"] == {"control", "treatment"}
    assert len(seen["language"]) > 3 and seen["model"] == {"coder", "mini", "linguist"}


def test_a_damaged_learned_artifact_leaves_the_chain_routing(data_dir: tuple[Path, DataDir]) -> None:
    config, data = data_dir
    artifact = data.read_pointer("learned-current.json")
    assert artifact is not None
    artifact.write_bytes(artifact.read_bytes()[:100])  # truncated
    parts = Parts(StaticEmbedder.load(data.path(TABLE_FILE)))
    engine = assemble(parse_registry(CONFIG.replace("mode: split", "mode: off")), data.artifacts, parts)
    learned = engine.chain[0]
    assert learned.name == "learned" and "damaged" in (learned.status or "")  # type: ignore[attr-defined]
    assert artifact.with_name(artifact.name + ".corrupt").exists() and not artifact.exists(), "moved aside"
    request = ChatRequest("r1", "auto", ({"role": "user", "content": "hello there"},))
    decision = engine.route(request, engine.classify("hello there"), "en").decision
    assert decision.router == "winrate" and "learned could not decide: learned-router artifact damaged" in (
        decision.reason
    )


def test_the_ranking_treats_an_unknown_cost_as_the_dearest() -> None:
    cost_only = PreferenceWeights(quality_weight=0.0, cost_weight=1.0, latency_weight=0.0)
    ranked = rank([Estimate("unpriced", 0.9, None), Estimate("dear", 0.5, 2.0), Estimate("cheap", 0.5, 1.0)], cost_only)
    assert [c.model for c in ranked][0] == "cheap" and ranked[1].score == ranked[2].score, "unknown = dearest"
    assert next(c for c in ranked if c.model == "unpriced").cost_per_1k is None, "reported as unknown, not made up"
    # The same rule for NaN (what predictive routers emit) and for latency.
    latency_only = PreferenceWeights(quality_weight=0.0, cost_weight=0.0, latency_weight=1.0)
    ranked = rank([Estimate("a", 0.5, float("nan"), None), Estimate("b", 0.5, 1.0, 100.0),
                   Estimate("c", 0.5, 1.0, 50.0)], latency_only)  # fmt: skip
    assert [c.model for c in ranked] == ["c", "a", "b"], "a's unknown latency counts as the slowest; ties keep order"


def test_predictive_routers_rank_through_the_shared_ranking() -> None:
    """Predictive routers used to treat an unknown (NaN) cost as free: now an unpriced model is not favoured."""
    from router_plugins.routers.predictive import PredictiveRouter

    class Fixed(PredictiveRouter):
        name = "fixed"

        def _fit(self, data: OutcomeSet) -> None:
            pass

        def _predict(self, prompts: object) -> tuple[np.ndarray, np.ndarray]:
            return np.array([[0.8, 0.8, 0.8]]), np.array([[np.nan, 0.001, 0.002]])

    registry = parse_registry(CONFIG)
    router = Fixed(registry)
    router.fit(OutcomeSet(["0"], ["x"], ["chat"], [None], ["coder", "mini", "linguist"], np.ones((1, 3)), np.ones((1, 3))))
    request = ChatRequest("r", "auto:cost", ({"role": "user", "content": "x"},), preference="cost")
    decision = router.route(request, Classification("chat", 1.0, "test"), registry.models)
    assert decision is not None and decision.model == "mini"
    scores = {c.model: c.score for c in decision.alternatives}
    assert scores["coder"] == pytest.approx(scores["linguist"]), "unknown cost = the dearest (linguist's), not free"


def test_routing_errors_are_domain_errors_mapped_by_the_http_layer() -> None:
    registry = parse_registry(CONFIG.replace("mode: split", "mode: off"))
    engine = assemble(registry, None, has_credentials=lambda m: m.name != "linguist")
    hello = Classification("chat", 1.0, "test")
    with pytest.raises(ModelNotFound) as missing:
        engine.passthrough(ChatRequest("r", "nope", ()), hello)
    with pytest.raises(ModelUnavailable) as unavailable:
        engine.passthrough(ChatRequest("r", "linguist", ()), hello)
    expensive = ChatRequest("r", "auto", ({"role": "user", "content": "hi"},), max_cost_per_1k=1e-9)
    with pytest.raises(ConstraintsUnmet) as unmet:
        engine.route(expensive, hello, "en")
    tools = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    registry = dataclasses.replace(registry, models=tuple(dataclasses.replace(m, supports_tools=False)
                                                          for m in registry.models))  # fmt: skip
    with pytest.raises(CapabilityMissing) as incapable:
        assemble(registry, None).route(ChatRequest("r", "auto", ({"role": "user", "content": "x"},), params=tools),
                                       hello, "en")  # fmt: skip
    with pytest.raises(NoBackendAvailable) as none:
        assemble(registry, None, has_credentials=lambda m: False).route(
            ChatRequest("r", "auto", ({"role": "user", "content": "x"},)), hello, "en"
        )
    mapped = [routing_error(e.value) for e in (missing, unavailable, unmet, incapable, none)]
    assert [(e.status, e.code, e.param) for e in mapped] == [
        (404, "model_not_found", "model"), (503, "model_unavailable", "model"),
        (400, "no_model_satisfies_constraints", "autoroute"), (400, "unsupported_capability", "tools"),
        (503, "no_backend_available", None),
    ]  # fmt: skip


def test_policies_explore_around_whichever_router_decided(data_dir: tuple[Path, DataDir]) -> None:
    """Exploration is a policy: with a budget it draws around the learned router's decisions too, and the logged
    propensity is the chosen model's probability."""
    config, data = data_dir
    registry = parse_registry(CONFIG.replace("exploration: 0.0", "exploration: 0.5").replace("mode: split", "mode: off"))
    parts = Parts(StaticEmbedder.load(data.path(TABLE_FILE)), seed=3)
    engine = assemble(registry, data.artifacts, parts)
    assert [p.name for p in engine.policies] == ["drift-guard", "exploration"]
    decisions = []
    started = time.perf_counter()
    for i, text in enumerate(PROMPTS[:120]):
        request = ChatRequest(f"r{i}", "auto", ({"role": "user", "content": text},))
        decisions.append(engine.route(request, engine.classify(text), detect_language(text)).decision)
    assert time.perf_counter() - started < 60
    explored = [d for d in decisions if d.reason.startswith("explored")]
    assert explored and any(d.router == "learned" for d in explored)
    assert all(0 < d.propensity < 1 for d in explored)


def test_exploration_can_run_around_any_chain_with_a_propensity_floor(data_dir: tuple[Path, DataDir]) -> None:
    """`learning.explore: on` explores around a chain without `winrate` (the learned router's decisions here), and
    every candidate keeps at least the floor, so off-policy estimates have support."""
    config, data = data_dir
    text = CONFIG.replace("chain: [learned, winrate, static-rules]", "chain: [learned, static-rules]\n  explore: on")
    text = text.replace("exploration: 0.0", "exploration: 0.2, propensity_floor: 0.05").replace("mode: split", "mode: off")
    engine = assemble(parse_registry(text), data.artifacts, Parts(StaticEmbedder.load(data.path(TABLE_FILE)), seed=5))
    assert [p.name for p in engine.policies] == ["exploration"], "no drift guard without the win-rate router"
    assert [p.name for p in assemble(parse_registry(text.replace("explore: on", "explore: auto")), None).policies] == []
    routed = []
    for i, text_ in enumerate(PROMPTS[:150]):
        request = ChatRequest(f"r{i}", "auto", ({"role": "user", "content": text_},))
        routed.append(engine.route(request, engine.classify(text_), "en").decision)
    assert any(d.router == "learned" and d.reason.startswith("explored") for d in routed)
    assert min(d.propensity for d in routed) >= 0.05 - 1e-9
    # The receipt's choice probabilities: every candidate's, summing to 1, the chosen one's its propensity.
    for d in routed:
        probabilities = dict(d.choice_probabilities)
        assert set(probabilities) == {c.model for c in d.alternatives}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert probabilities[d.model] == pytest.approx(d.propensity, abs=1e-6)


@pytest.mark.parametrize(
    ("content", "params", "param"),
    [("x" * 4_000_000, {}, "messages"), ("hi", {"max_tokens": 1_000_000_000}, "max_tokens"),
     ("hi", {"max_completion_tokens": 1_000_000_000}, "max_completion_tokens")],
)  # fmt: skip
def test_a_request_no_model_can_take_is_the_requests_fault(content: str, params: dict[str, Any], param: str) -> None:
    engine = assemble(parse_registry(CONFIG.replace("mode: split", "mode: off")), None)
    request = ChatRequest("r", "auto", ({"role": "user", "content": content},), params=params)
    with pytest.raises(RequestTooLarge) as too_large:
        engine.route(request, Classification("chat", 1.0, "test"), "en")
    error = routing_error(too_large.value)
    assert (error.status, error.param, error.code) == (400, param, "context_length_exceeded")
    assert "largest context window" in error.message

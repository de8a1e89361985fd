"""The one assembly: a registry, a data directory and the loaded parts become a `RoutingEngine`.

The gateway, the LiteLLM plugin, the evaluation harness, the benchmarks and the CLI all build their routing here, so
they classify and route alike. How one `auto` request is decided, in order:

1. the cheap classifier layers (`classify`; the gateway may resume with the transformer's layers 3-4 when they were
   unsure, see `proxy/pipeline.py`);
2. the candidates: the available models that serve the prompt's language (`candidates.serving`);
3. the chain (`learning.chain`): the first router that decides wins; each router predicts quality, cost and latency
   per candidate and the one ranking (`routers/ranking.py`) turns them and the preference into a decision;
4. the policies around whichever router decided: the drift guard (with `winrate` in the chain), then exploration
   (`learning.explore`: by default with `winrate` in the chain), which gives every candidate at least the
   propensity floor; the chosen model's probability is the decision's propensity;
5. under an A/B test (`learning.ab`), static rules decide for the control arm and the other side is logged.

A request naming a model passes through (`passthrough`). What cannot be routed raises a `RoutingError`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .candidates import Candidates, capable, serving
from .classify import CorrectionsLayer, StaticEmbedder, TaskClassifier, TextModel, build_classifier
from .classify.model import TaskModel
from .errors import (
    CapabilityMissing,
    ConstraintsUnmet,
    ModelNotFound,
    ModelUnavailable,
    NoBackendAvailable,
    RequestTooLarge,
    RoutingError,
)  # fmt: skip
from .registry import ModelEntry, Registry
from .routers import Router, RouterContext, RouterTable, WinRateRouter, WinRateState, default_table
from .routers.policies import Choice, DriftGuard, Exploration, Policy
from .routers.static_rules import CHARS_PER_TOKEN, DEFAULT_COMPLETION_TOKENS
from .sessions import Pin, at_least_as_capable, kept, why_not_keep
from .thresholds import with_tuned_thresholds
from .types import ChatRequest, Classification, RouteDecision, ScoredCandidate

log = logging.getLogger(__name__)

PASSTHROUGH_ROUTER = "passthrough"


@dataclass(frozen=True)
class Parts:
    """What the engine is built from beyond the registry: loaded (or fitted) off the request path by the host."""

    static_embedder: StaticEmbedder | None = None
    text_model: TextModel | None = None
    task_model: TaskModel | None = None
    """Layers 3-4, for hosts that run the transformer on the request path."""
    corrections: CorrectionsLayer | None = None
    winrate: Callable[[], WinRateState] | None = None
    """The current win-rate state (published by the gateway's aggregator, or read from its snapshot file)."""
    seed: int = 0


@dataclass(frozen=True)
class Routed:
    """An `auto` decision; under an A/B test, the arm that served it and the other arm's choice."""

    decision: RouteDecision
    arm: str | None = None
    counterfactual: RouteDecision | None = None


@dataclass(frozen=True)
class RoutingEngine:
    """Everything built from one registry and one data directory; immutable, swapped whole when either changes."""

    registry: Registry
    """As served: the YAML with the tuned classifier thresholds overlaid."""
    classifier: TaskClassifier
    chain: tuple[Router, ...]
    control: Router
    """Static rules: the A/B test's control arm, and the last router of every chain."""
    policies: tuple[Policy, ...]
    available: tuple[ModelEntry, ...]
    """Enabled models whose credentials are present: the candidates for `auto`."""
    available_names: frozenset[str] = field(default=frozenset())

    def classify(self, text: str) -> Classification:
        """The cheap layers' classification (layers 3-4 only when given an embedding: `classifier.resume`)."""
        return self.classifier.classify(text)

    def route(
        self, request: ChatRequest, classification: Classification, language: str, only: frozenset[str] | None = None
    ) -> Routed:
        """The decision for an `auto` request: the chain and its policies; under an A/B test, the arm's choice.
        `only` narrows the candidates to those models (a session's escalation)."""
        available = self.available if only is None else tuple(m for m in self.available if m.name in only)
        candidates = serving(capable(available, request.needs), language)
        ab = self.registry.learning.ab
        if ab.mode == "off":
            choice = self._choose(request, classification, candidates)
            return Routed(with_probabilities(choice.decision, choice.probabilities))
        control = self._first_decision((self.control,), request, classification, candidates)
        treatment = self._choose(request, classification, candidates)
        if ab.mode == "shadow":
            return Routed(control, "shadow", treatment.decision)
        share = ab.treatment_share
        in_treatment = unit_hash(request.request_id) < share
        served, other = (treatment.decision, control) if in_treatment else (control, treatment.decision)
        # The logging policy is the mixture of both arms: what off-policy evaluation needs as the propensity.
        mixture = {name: share * p for name, p in treatment.probabilities.items()}
        mixture[control.model] = mixture.get(control.model, 0.0) + (1 - share)
        served = replace(served, propensity=mixture.get(served.model, 0.0))
        return Routed(with_probabilities(served, mixture), "treatment" if in_treatment else "control", other)

    def continue_session(
        self, request: ChatRequest, classification: Classification, language: str, pin: Pin, cooling: str | None
    ) -> Routed:
        """A later turn of a session pinned to `pin.model` (`router_plugins/sessions.py`): that model, with the models
        at least as capable for the task as fallbacks; or, when it cannot take the turn (`cooling`: why its breaker
        is open, if it is), the best of those, saying why it moved. Raises RoutingError when nothing can take it."""
        pinned = self.registry.model(pin.model) if pin.model in self.available_names else None
        why = why_not_keep(pinned, request, cooling)
        better = at_least_as_capable(self.available, pinned, classification.task)
        try:
            escalation: Routed | None = self.route(request, classification, language, frozenset(m.name for m in better))
        except RoutingError:
            if why is not None:
                raise
            escalation = None
        if why is None:
            return Routed(kept(pin, escalation.decision if escalation else None, self.registry.version))
        assert escalation is not None
        budget = self.registry.router.sessions.max_switches
        move = "moved for this turn only (switch budget spent)" if pin.switches >= budget else "escalated"
        note = f"session: {move} from {pin.model}: {why}"
        decision = escalation.decision
        return replace(escalation, decision=replace(decision, reason=f"{decision.reason}; {note}"))

    def passthrough(self, request: ChatRequest, classification: Classification) -> RouteDecision:
        """A request naming a model: that model, if the registry has it enabled and its credentials are present."""
        model = self.registry.model(request.requested_model)
        if model is None or not model.enabled:
            raise ModelNotFound(request.requested_model)
        if model.name not in self.available_names:
            raise ModelUnavailable(model.name, model.litellm_params.api_key_env)
        lacking = model.lacks(request.needs)
        if lacking:
            raise CapabilityMissing(lacking, model.name)
        candidate = ScoredCandidate(model.name, 1.0, model.prior_quality(classification.task), model.cost_per_1k(),
                                    model.latency_ms, "requested")  # fmt: skip
        return RouteDecision(model.name, "requested by name", PASSTHROUGH_ROUTER, self.registry.version, (candidate,))

    def _choose(self, request: ChatRequest, classification: Classification, candidates: Candidates) -> Choice:
        choice = Choice.certain(self._first_decision(self.chain, request, classification, candidates))
        for policy in self.policies:
            choice = policy.apply(choice, request, classification, candidates.models)
        return choice

    def _first_decision(
        self,
        routers: Sequence[Router],
        request: ChatRequest,
        classification: Classification,
        candidates: Candidates,
    ) -> RouteDecision:
        """The first decision of `routers`, noting those that could not decide (and why) in its reason."""
        undecided: list[str] = []
        for router in routers:
            decision = router.route(request, classification, candidates.models)
            if decision is not None:
                notes = [candidates.note] if candidates.note else []
                if undecided or notes:
                    return replace(decision, reason="; ".join((decision.reason, *notes, *undecided)))
                return decision
            status = getattr(router, "status", None)
            undecided.append(f"{router.name} could not decide" + (f": {status}" if status else ""))
        if candidates.fallback is not None:
            return self._first_decision(routers, request, classification, candidates.fallback)
        if request.max_cost_per_1k is not None or request.min_quality is not None:
            raise ConstraintsUnmet(classification.task, request.max_cost_per_1k, request.min_quality)
        too_large = self._too_large(request)
        if too_large is not None:
            raise too_large
        raise NoBackendAvailable()

    def _too_large(self, request: ChatRequest) -> RequestTooLarge | None:
        """Why no available model can take `request` (a fault of the request, not of the backends), if that is why."""
        if not self.available:
            return None
        window = max(m.context_window for m in self.available)
        prompt = request.prompt_chars() // CHARS_PER_TOKEN
        if prompt > window:
            return RequestTooLarge("messages", prompt, window)
        param = next((k for k in ("max_tokens", "max_completion_tokens") if request.params.get(k)), None)
        answer = request.params[param] if param else DEFAULT_COMPLETION_TOKENS
        if prompt + answer > window:
            return RequestTooLarge(param or "messages", prompt + answer, window)
        return None


def assemble(
    registry: Registry,
    artifacts: Path | None,
    parts: Parts = Parts(),
    has_credentials: Callable[[ModelEntry], bool] = lambda model: True,
    table: RouterTable | None = None,
) -> RoutingEngine:
    """Build the engine: thresholds tuned in `artifacts` overlaid, the classifier's cascade, the chain's routers
    (trainable ones load their current artifact from `artifacts`) and the policies."""
    registry = with_tuned_thresholds(registry, artifacts)
    table = table or default_table()
    available = tuple(m for m in registry.models if m.enabled and has_credentials(m))
    for model in registry.models:
        if model.enabled and model not in available:
            log.warning("model %s is left out of routing: set %s to use it", model.name,
                        model.litellm_params.api_key_env)  # fmt: skip
    embed = parts.static_embedder.embed if parts.static_embedder is not None else None
    context = RouterContext(static_embed=embed, winrate=parts.winrate, artifacts=artifacts, seed=parts.seed)
    chain = tuple(table.create(name, registry, context) for name in registry.learning.chain)
    control = next(r for r in chain if r.name == "static-rules")  # the chain's last router (validated)
    policies: list[Policy] = []
    learning = registry.learning
    winrate = next((r for r in chain if isinstance(r, WinRateRouter)), None)
    if winrate is not None:
        policies.append(DriftGuard(winrate))
    if learning.explore == "on" or (learning.explore == "auto" and winrate is not None):
        evidence = winrate or WinRateRouter(registry, context)  # its posteriors, even when it does not decide
        settings = learning.winrate
        policies.append(Exploration(evidence, settings.exploration, parts.seed, floor=settings.propensity_floor))
    return RoutingEngine(registry, served_classifier(registry, None, parts), chain, control, tuple(policies), available,
                         frozenset(m.name for m in available))  # fmt: skip


def served_classifier(registry: Registry, artifacts: Path | None, parts: Parts = Parts()) -> TaskClassifier:
    """The classifier an engine on this registry and data directory serves, without its routers (for evaluation).
    `artifacts` overlays the tuned thresholds; None when `registry` already has them."""
    registry = with_tuned_thresholds(registry, artifacts)
    return build_classifier(registry, parts.static_embedder, parts.task_model, parts.text_model, parts.corrections)


def with_probabilities(decision: RouteDecision, probabilities: Mapping[str, float]) -> RouteDecision:
    """`decision` carrying every candidate's probability of being chosen (none when it was chosen for certain)."""
    if len(probabilities) < 2:
        return decision
    pairs = tuple((name, round(p, 6)) for name, p in sorted(probabilities.items(), key=lambda kv: -kv[1]) if p > 0)
    return replace(decision, choice_probabilities=pairs)


def unit_hash(request_id: str) -> float:
    """A request id's fixed place in [0, 1): assigns A/B arms without shared state."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big") / 2**64


__all__ = ["PASSTHROUGH_ROUTER", "Parts", "Routed", "RoutingEngine", "assemble", "served_classifier", "unit_hash"]

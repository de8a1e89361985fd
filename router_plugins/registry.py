"""The model registry: the typed, closed schema of `config.yaml`.

The YAML is the human's source of truth. Secrets appear only as environment-variable names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from .classifier_settings import ClassifierSettings as ClassifierSettings
from .classifier_settings import LayerSettings as LayerSettings
from .health import CircuitBreakerSettings as CircuitBreakerSettings
from .schema import ConfigError, InvalidAt, load_yaml
from .types import PREFERENCES, Preference

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class LiteLLMParams:
    model: str
    """LiteLLM's provider/model string, e.g. `openai/gpt-4o-mini` or `ollama/llama3.2`."""
    api_base: str | None = None
    api_base_env: str | None = None
    """Name of an environment variable holding the backend's base URL; when it is set, it wins over `api_base` (a
    container reaches a backend on its host or a neighbour at an address only its deployment knows)."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the key; never the key itself."""
    timeout_s: float = 60.0
    extra_headers_env: Mapping[str, str] = field(default_factory=dict)
    """Header name -> environment variable holding its value."""

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    litellm_params: LiteLLMParams
    input_cost_per_mtok: float | None = None
    output_cost_per_mtok: float | None = None
    context_window: int = 8192
    generalist: bool = True
    specialized_for: tuple[str, ...] = ()
    supports_tools: bool = True
    supports_vision: bool = False
    """Whether it reads images (`image_url` parts): requests carrying one go only to models that do."""
    supports_json: bool = True
    """Whether it honours `response_format` (JSON mode, JSON schema)."""
    latency_ms: float = 1000.0
    """Prior typical latency of one call, before anything is measured."""
    quality: Mapping[str, float] = field(default_factory=dict)
    """Prior quality per task type in [0, 1]; the key `default` covers unlisted tasks."""
    enabled: bool = True
    languages: tuple[str, ...] | None = None
    """The languages this model serves, as ISO 639-1 codes (639-3 for a language without one); left out: any.
    `auto` requests in other languages go to other models when one is available."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name == "auto" or self.name.startswith("auto:"):
            raise ValueError(f"model name {self.name!r} is not allowed (letters, digits, ._:/-; not 'auto')")
        if self.languages is not None:
            if not self.languages:
                raise ValueError(f"model {self.name!r}: languages must name at least one language, or be left out")
            for code in self.languages:
                if not _LANGUAGE.match(code):
                    raise ValueError(
                        f"model {self.name!r}: language {code!r} is not an ISO 639-1 code (two or three lowercase "
                        "letters, e.g. en, zh, pt)"
                    )
        for task, q in self.quality.items():
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"model {self.name!r}: quality for {task!r} must be in [0, 1], got {q}")
        for price in (self.input_cost_per_mtok, self.output_cost_per_mtok):
            if price is not None and price < 0:
                raise ValueError(f"model {self.name!r}: prices must be >= 0")
        if self.context_window <= 0:
            raise ValueError(f"model {self.name!r}: context_window must be > 0")

    def lacks(self, needs: tuple[str, ...]) -> tuple[str, ...]:
        """Which of a request's `needs` (`ChatRequest.needs`: tools, vision, json) this model cannot meet."""
        has = {"tools": self.supports_tools, "vision": self.supports_vision, "json": self.supports_json}
        return tuple(need for need in needs if not has[need])

    def serves(self, language: str) -> bool:
        """Whether `auto` requests in `language` may go to this model."""
        return self.languages is None or language in self.languages

    def prior_quality(self, task: str) -> float:
        return self.quality.get(task, self.quality.get("default", 0.5))

    def cost_per_1k(self) -> float | None:
        """Blended USD per 1k tokens, input and output weighted equally; None when the price is unknown."""
        if self.input_cost_per_mtok is None or self.output_cost_per_mtok is None:
            return None
        return (self.input_cost_per_mtok + self.output_cost_per_mtok) / 2 / 1000

    def is_specialist_for(self, task: str) -> bool:
        return task in self.specialized_for


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str = ""
    keywords: tuple[str, ...] = ()
    """Words or phrases (case-insensitive, whole words) that point at this task."""
    patterns: tuple[str, ...] = ()
    """Regular expressions that point at this task more strongly than a keyword."""
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"task name {self.name!r} is not allowed")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"task {self.name!r}: bad pattern {pattern!r}: {exc}") from exc


@dataclass(frozen=True)
class RuleCandidate:
    model: str
    priority: int = 1
    """1 is tried first; larger numbers are less preferred."""
    is_specialized: bool = False
    min_quality_score: float | None = None
    max_cost_per_1k: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class RoutingRule:
    task: str
    candidates: tuple[RuleCandidate, ...]
    enabled: bool = True


@dataclass(frozen=True)
class PreferenceWeights:
    quality_weight: float = 1.0
    cost_weight: float = 0.0
    """Penalty per unit of cost relative to the most expensive candidate."""
    latency_weight: float = 0.0
    """Penalty per unit of latency relative to the slowest candidate."""


@dataclass(frozen=True)
class SessionSettings:
    """Sessions keep a conversation on one model (`router_plugins/sessions.py`)."""

    enabled: bool = True
    max_switches: int = 2
    """Escalations a session may make; past them it stays on its model and a failing turn falls back for itself."""
    idle_timeout_s: float = 3600.0
    max_sessions: int = 100_000
    """Sessions remembered per process; the least recently used are forgotten first."""

    def __post_init__(self) -> None:
        if self.max_switches < 0 or self.idle_timeout_s <= 0 or self.max_sessions < 1:
            raise ValueError("router.sessions: max_switches >= 0, idle_timeout_s > 0 and max_sessions >= 1")


@dataclass(frozen=True)
class RouterSettings:
    default_preference: Preference = "balanced"
    fallback_task: str = "chat"
    max_attempts: int = 3
    """Backends tried for one request, the first choice included."""
    specialization_bonus: float = 0.05
    priority_bonus: float = 0.02
    """Utility added per priority step above the rule's lowest priority."""
    classifier: ClassifierSettings = ClassifierSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    """Skip a model that keeps failing while it cools down (`router_plugins/health.py`)."""
    sessions: SessionSettings = SessionSettings()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("router.max_attempts must be >= 1")


@dataclass(frozen=True)
class AuthSettings:
    api_key_envs: tuple[str, ...] = ()
    """Environment variables that each hold one accepted client key. Empty: no auth."""


@dataclass(frozen=True)
class StorageSettings:
    backend: Literal["sqlite", "postgres"] | None = None
    """sqlite: a file in `data_dir` (one gateway, or several processes on one machine). postgres: a database that
    several replicas share (needs `url` or `url_env`). Left out, it follows `url` (sqlite without one)."""
    url: str | None = None
    """Where the store is instead of `data_dir`'s file: `postgresql://user@host:5432/db` (a password goes in the
    environment, not here: `url_env`, or libpq's PGPASSWORD / ~/.pgpass) or `sqlite:////absolute/path.db`."""
    url_env: str | None = None
    """Name of the environment variable that holds the whole URL, password included (instead of `url`)."""
    pool_size: int = 5
    """Postgres: connections each gateway process keeps open at most."""
    data_dir: str = "autoroute-data"
    """Relative paths resolve against the working directory of `autoroute serve`. With Postgres it still holds this
    replica's learned artifacts and caches; the shared ones are synced from the store."""
    prompt_text: Literal["full", "truncated", "none"] = "truncated"
    truncate_chars: int = 500
    queue_size: int = 10000
    batch_size: int = 500
    flush_interval_ms: int = 200
    required: bool = False
    """true: the gateway refuses to start when the store cannot be opened. false: it serves chats anyway (nothing is
    recorded, feedback is refused) and readiness says not_ready with the reason."""

    def __post_init__(self) -> None:
        for name in ("queue_size", "batch_size", "flush_interval_ms", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"storage.{name} must be >= 1, got {getattr(self, name)}")
        if self.truncate_chars < 0:
            raise ValueError(f"storage.truncate_chars must be >= 0, got {self.truncate_chars}")
        if self.url is not None and self.url_env is not None:
            raise InvalidAt("give storage.url or storage.url_env, not both", "url_env")
        if self.url_env is not None and not _ENV_NAME.match(self.url_env):
            raise InvalidAt(f"storage.url_env must name an environment variable, got {self.url_env!r}", "url_env")
        if self.url is not None:
            _check_store_url(self.url, self.backend)
        elif self.backend == "postgres" and self.url_env is None:
            raise InvalidAt("storage.backend postgres needs storage.url or storage.url_env", "backend")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_store_url(url: str, backend: str | None) -> None:
    from urllib.parse import urlsplit

    scheme = url.split("://", 1)[0] if "://" in url else ""
    kind = "postgres" if scheme in ("postgresql", "postgres") else "sqlite" if url.startswith("sqlite:///") else None
    if kind is None:
        raise InvalidAt(f"storage.url must start with postgresql://, postgres:// or sqlite:///, got {scheme!r}",
                           "url")  # fmt: skip
    if backend is not None and backend != kind:
        raise InvalidAt(f"storage.url is a {kind} URL but storage.backend is {backend}", "url")
    try:
        password = urlsplit(url).password
    except ValueError as exc:
        raise InvalidAt(f"storage.url is not a valid URL: {exc}", "url") from exc
    if password is not None:
        raise InvalidAt(
            "storage.url must not hold a password: put the whole URL in an environment variable named by "
            "storage.url_env, or the password in PGPASSWORD or ~/.pgpass", "url",
        )  # fmt: skip


@dataclass(frozen=True)
class WinRateSettings:
    """The win-rate router: per (task, model) Beta posteriors over success, explored by Thompson sampling."""

    prior_strength: float = 4.0
    """How many observations the prior is worth: the registry's prior quality, pooled with the model's other tasks."""
    half_life_events: float = 200.0
    """Recency: an observation's weight halves with every this many newer observations of the same task and model."""
    window_s: float = 30 * 86400.0
    """Observations older than this are ignored."""
    exploration: float = 0.1
    """Budget: the share of decisions drawn by Thompson sampling instead of taking the best posterior mean."""
    caution: float = 0.67
    """The greedy choice ranks models by posterior mean − caution × posterior sd (0.67: about the 25th percentile),
    so a model must show it is better before it takes the traffic; exploration stays within `exploration`."""
    confidence_midpoint: float = 10.0
    """Observations at which confidence (a sigmoid of the evidence) reaches 0.5; it is reported with each choice."""
    propensity_floor: float = 0.01
    """While exploring (`exploration` > 0), every candidate of a decision keeps at least this probability, so that
    off-policy evaluation has logged support for any router's choice. The floors are spent from the exploration
    budget first; when a decision has so many candidates that they exceed it, the floors win and the greedy choice
    keeps the rest (at most 1/candidates each). 0: Thompson sampling alone decides who is explored."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.exploration <= 1.0:
            raise ValueError("learning.winrate.exploration must be in [0, 1]")
        if not 0.0 <= self.propensity_floor <= 0.5:
            raise ValueError("learning.winrate.propensity_floor must be in [0, 0.5]")
        if self.exploration > 0 and self.propensity_floor > self.exploration:
            raise ValueError(
                f"learning.winrate.propensity_floor ({self.propensity_floor}) must not exceed exploration "
                f"({self.exploration}): the floors are spent from the exploration budget"
            )
        if self.caution < 0:
            raise ValueError("learning.winrate.caution must be >= 0")
        if self.prior_strength <= 0 or self.half_life_events <= 0 or self.window_s <= 0:
            raise ValueError("learning.winrate prior_strength, half_life_events and window_s must be positive")


@dataclass(frozen=True)
class ABSettings:
    """A/B test of `auto` traffic: static rules (control) against the configured chain (treatment)."""

    mode: Literal["off", "split", "shadow"] = "off"
    """split: `treatment_share` of requests are served by the chain, the rest by static rules; shadow: static rules
    serve everything and the chain's choice is logged beside it as a counterfactual."""
    treatment_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.treatment_share <= 1.0:
            raise ValueError("learning.ab.treatment_share must be in [0, 1]")


@dataclass(frozen=True)
class LearningSettings:
    """The learning loop: background aggregation and training, A/B testing. Nothing here runs on the request path."""

    chain: tuple[str, ...] = ("learned", "static-rules")
    """Routers asked in order for `auto`; `learned` is skipped until an artifact exists. Add `winrate` to learn
    from feedback while serving (it explores: see winrate.exploration)."""
    aggregate_interval_s: float = 60.0
    """Win rates are recomputed from the store this often."""
    train_interval_s: float = 3600.0
    """The learned router is retrained this often when enough new feedback came in; 0: only `autoroute train`."""
    min_new_feedback: int = 200
    evaluation_share: float = 0.3
    """Champion/challenger: the newest share of logged feedback is held out to evaluate, never trained on."""
    promotion_margin: float = 0.0
    """A challenger is promoted when the lower bound of its off-policy value beats the champion's upper bound by more
    than this."""
    min_model_outcomes: int = 30
    """Training outcomes a model needs before the learned router predicts it from them; below, it predicts the
    model's registry prior, and a challenger that would route to such a model is not promoted."""
    min_ess: float = 200.0
    """Effective sample size (of the importance weights on the held-out logged decisions) a challenger's off-policy
    estimate must rest on to be promoted: about how many logged decisions the estimate is really worth."""
    auto_rollback: bool = True
    """A promoted learned-router version that does worse live than the one it replaced (the A/B report's always-valid
    test on feedback quality) is rolled back by the trainer."""
    explore: Literal["auto", "on", "off"] = "auto"
    """Exploration around the chain's decisions (Thompson draws on the win-rate posteriors within
    `winrate.exploration`, every candidate at least `winrate.propensity_floor`), whichever router decided. auto: when
    `winrate` is in the chain; on: always (so off-policy evaluation has support with any chain); off: never."""
    winrate: WinRateSettings = WinRateSettings()
    ab: ABSettings = ABSettings()

    def __post_init__(self) -> None:
        if not self.chain or self.chain[-1] != "static-rules":
            raise ValueError("learning.chain must end with static-rules (the router that always decides)")
        if self.aggregate_interval_s <= 0 or self.train_interval_s < 0:
            raise ValueError("learning intervals must be positive (train_interval_s may be 0: off)")
        if not 0.0 < self.evaluation_share < 1.0:
            raise ValueError("learning.evaluation_share must be between 0 and 1")
        if self.min_model_outcomes < 0 or self.min_ess < 0 or self.promotion_margin < 0:
            raise ValueError("learning.min_model_outcomes, min_ess and promotion_margin must be >= 0")


def _default_preferences() -> Mapping[str, PreferenceWeights]:
    return {
        "quality": PreferenceWeights(1.0, 0.0, 0.0),
        "balanced": PreferenceWeights(1.0, 0.15, 0.05),
        "cost": PreferenceWeights(1.0, 0.6, 0.0),
        "latency": PreferenceWeights(1.0, 0.05, 0.6),
    }


def default_tasks() -> tuple[TaskType, ...]:
    """The packaged task taxonomy, for registries that do not list their own."""
    text = resources.files("router_plugins").joinpath("data/default_tasks.yaml").read_text(encoding="utf-8")
    return load_yaml(text, _TaskList, "router_plugins/data/default_tasks.yaml").tasks


@dataclass(frozen=True)
class _TaskList:
    tasks: tuple[TaskType, ...]


@dataclass(frozen=True)
class Registry:
    models: tuple[ModelEntry, ...]
    tasks: tuple[TaskType, ...] = field(default_factory=default_tasks)
    routing_rules: tuple[RoutingRule, ...] = ()
    preferences: Mapping[str, PreferenceWeights] = field(default_factory=_default_preferences)
    router: RouterSettings = RouterSettings()
    auth: AuthSettings = AuthSettings()
    storage: StorageSettings = StorageSettings()
    learning: LearningSettings = LearningSettings()

    def __post_init__(self) -> None:
        _unique("model", [m.name for m in self.models], "models")
        _unique("task", [t.name for t in self.tasks], "tasks")
        model_names = {m.name for m in self.models}
        task_names = {t.name for t in self.tasks}
        if not self.models:
            raise ValueError("the registry needs at least one model")
        if self.router.fallback_task not in task_names:
            raise InvalidAt(
                f"router.fallback_task {self.router.fallback_task!r} is not a task type", "router", "fallback_task"
            )
        for i, model in enumerate(self.models):
            for task in [*model.specialized_for, *(k for k in model.quality if k != "default")]:
                if task not in task_names:
                    raise InvalidAt(f"model {model.name!r} names unknown task {task!r}", "models", i)
        _unique("routing rule task", [r.task for r in self.routing_rules], "routing_rules", "task")
        for i, rule in enumerate(self.routing_rules):
            if rule.task not in task_names:
                raise InvalidAt(f"routing rule for unknown task {rule.task!r}", "routing_rules", i, "task")
            for j, c in enumerate(rule.candidates):
                if c.model not in model_names:
                    raise InvalidAt(
                        f"routing rule for {rule.task!r} names unknown model {c.model!r}",
                        "routing_rules", i, "candidates", j, "model",
                    )  # fmt: skip
        missing = set(PREFERENCES) - set(self.preferences)
        if missing:
            raise ValueError(f"preferences must define {', '.join(sorted(missing))}")
        unknown = set(self.preferences) - set(PREFERENCES)
        if unknown:
            raise ValueError(f"unknown preference {', '.join(sorted(unknown))}; allowed: {', '.join(PREFERENCES)}")

    def model(self, name: str) -> ModelEntry | None:
        return self._models_by_name.get(name)

    def task(self, name: str) -> TaskType | None:
        return next((t for t in self.tasks if t.name == name), None)

    def rule_for(self, task: str) -> RoutingRule | None:
        return next((r for r in self.routing_rules if r.task == task and r.enabled), None)

    @property
    def _models_by_name(self) -> dict[str, ModelEntry]:
        cached = self.__dict__.get("_by_name")
        if cached is None:
            cached = {m.name: m for m in self.models}
            object.__setattr__(self, "_by_name", cached)
        return cached

    def with_models(self, models: tuple[ModelEntry, ...]) -> Registry:
        return dataclasses.replace(self, models=models)

    @property
    def version(self) -> str:
        """A short content hash: names the registry a decision was made with."""
        cached = self.__dict__.get("_version")
        if cached is None:
            cached = hashlib.sha256(repr(self.routing_rules).encode() + repr(self.models).encode()).hexdigest()[:8]
            object.__setattr__(self, "_version", cached)
        return cached


def _unique(kind: str, names: list[str], where: str, key: str = "name") -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise InvalidAt(f"duplicate {kind} {name!r}", where, i, key)
        seen.add(name)


def parse_registry(text: str, source: str = "<config>") -> Registry:
    return load_yaml(text, Registry, source)


def load_registry(path: str | Path) -> Registry:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return parse_registry(text, str(path))

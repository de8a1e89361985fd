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

from .classifier_settings import ClassifierSettings as ClassifierSettings
from .classifier_settings import LayerSettings as LayerSettings
from .health import CircuitBreakerSettings as CircuitBreakerSettings
from .schema import ConfigError, InvalidAt, load_yaml
from .settings import ABSettings as ABSettings
from .settings import AuthSettings as AuthSettings
from .settings import LearningSettings as LearningSettings
from .settings import RouterSettings as RouterSettings
from .settings import SessionSettings as SessionSettings
from .settings import StorageSettings as StorageSettings
from .settings import WinRateSettings as WinRateSettings
from .types import PREFERENCES

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

"""The registry's settings sections: `router` (sessions included), `auth`, `storage` and `learning` (win rates, A/B).

Part of the closed schema of `config.yaml` (`router_plugins/registry.py` holds models, tasks and rules and re-exports
these); every field is checked when the YAML is decoded, and an error names its key and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .classifier_settings import ClassifierSettings
from .health import CircuitBreakerSettings
from .schema import InvalidAt
from .types import Preference


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
    calibrate_preferences: bool = True
    """true: the learned router routes `balanced` and `cost` with the cost weight calibrated when it was trained (the
    knee of its out-of-fold quality-cost curve; the cheapest point reaching the best single model's quality),
    replacing those preferences' `cost_weight`; false: every preference routes with its weights as written."""
    calibration_min_outcomes: int = 500
    """Training prompts the calibration needs: below, the registry's weights serve (a knee found on a few dozen prompts
    is noise, and a large cost weight sends everything to the cheapest model)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("router.max_attempts must be >= 1")
        if self.calibration_min_outcomes < 30:
            raise ValueError("router.calibration_min_outcomes must be >= 30")


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
    max_train_rows: int = 50_000
    """The learned router fits at most this many outcomes: a uniform random sample (fixed seed) of larger training
    sets. It bounds a retrain's time and memory (100k outcomes: within the 60 s budget, docs/PERFORMANCE.md);
    beyond ~50k rows a per-model fit on ~400 features gains little."""
    selection_rows: int = 10_000
    """Every choice the learned router makes by inner cross-validation (format features, each model's C, the low-rank
    part, the scale on C, the cost model) is made on a fixed random subsample of at most this many outcomes; only the
    final fits see all `max_train_rows`. Most of a large retrain's time goes here: lower it to retrain faster."""
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
        if self.max_train_rows < 100 or self.selection_rows < 100:
            raise ValueError("learning.max_train_rows and learning.selection_rows must be at least 100")

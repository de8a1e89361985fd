"""The circuit breaker's state machine with an injected clock: when it opens, the half-open probe, the backoff."""

from __future__ import annotations

import pytest

from router_plugins.health import CircuitBreaker, CircuitBreakerSettings
from router_plugins.registry import parse_registry
from router_plugins.schema import ConfigError

SETTINGS = CircuitBreakerSettings(
    consecutive_failures=3, failure_rate=0.5, window=10, min_calls=6, cooldown_s=10, max_cooldown_s=35
)


def _breaker(settings: CircuitBreakerSettings = SETTINGS) -> CircuitBreaker:
    return CircuitBreaker(settings)


def _fail(breaker: CircuitBreaker, model: str, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        breaker.record(model, False, now)


def test_opens_after_n_consecutive_failures() -> None:
    breaker = _breaker()
    _fail(breaker, "m", 2)
    assert breaker.state("m", 0) == "closed" and breaker.allow("m", 0)
    _fail(breaker, "m", 1)
    assert breaker.state("m", 0) == "open" and not breaker.allow("m", 1)
    assert breaker.why_cooling("m", 2) == "cooling down after 3 consecutive failures (8 s left)"
    assert breaker.state("other", 0) == "closed", "per model"


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = _breaker()
    for _ in range(3):
        _fail(breaker, "m", 2)
        breaker.record("m", True, 0)
    assert breaker.state("m", 0) == "closed", "2 of 3 failing, 9 calls: no run of 3"


def test_opens_on_the_failure_rate_over_the_window_once_min_calls_are_known() -> None:
    breaker = _breaker()
    for _ in range(2):  # 4 calls, half failed: fewer than min_calls
        breaker.record("m", True, 0)
        breaker.record("m", False, 0)
    assert breaker.state("m", 0) == "closed"
    breaker.record("m", True, 0)
    breaker.record("m", False, 0)  # 6 calls, 3 failed: 0.5 (only a failure opens it)
    assert breaker.state("m", 0) == "open"
    assert "3 failures in its last 6 calls" in breaker.why_cooling("m", 0)


def test_old_outcomes_leave_the_window() -> None:
    breaker = _breaker()
    for _ in range(2):
        _fail(breaker, "m", 2)
        breaker.record("m", True, 0)
    for _ in range(10):  # pushes every failure out of the 10-call window
        breaker.record("m", True, 0)
    breaker.record("m", False, 0)
    assert breaker.state("m", 0) == "closed"


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    breaker = _breaker()
    _fail(breaker, "m", 3)
    assert not breaker.allow("m", 9.9)
    assert breaker.state("m", 10) == "half_open"
    assert breaker.allow("m", 10), "the probe"
    assert not breaker.allow("m", 10.5), "only one probe at a time"
    breaker.record("m", True, 11)
    assert breaker.state("m", 11) == "closed" and breaker.allow("m", 11)
    _fail(breaker, "m", 2, now=12)
    assert breaker.state("m", 12) == "closed", "closing forgets the old failures"


def test_a_failed_probe_reopens_with_a_backed_off_cooldown_up_to_the_cap() -> None:
    breaker = _breaker()
    _fail(breaker, "m", 3)
    now = 10.0
    for cooldown in (20, 35, 35):  # 10 doubled, then capped at max_cooldown_s
        assert breaker.allow("m", now)
        breaker.record("m", False, now)
        assert breaker.state("m", now + cooldown - 0.1) == "open"
        assert breaker.state("m", now + cooldown) == "half_open"
        now += cooldown
    assert breaker.allow("m", now)
    breaker.record("m", True, now)
    _fail(breaker, "m", 3, now=now)
    assert breaker.state("m", now + 10) == "half_open", "a close resets the backoff"


def test_a_probe_that_never_reports_frees_its_slot() -> None:
    breaker = _breaker()
    _fail(breaker, "m", 3)
    assert breaker.allow("m", 10)
    assert not breaker.allow("m", 15)
    assert breaker.allow("m", 20)


def test_disabled_never_opens() -> None:
    breaker = _breaker(CircuitBreakerSettings(enabled=False))
    _fail(breaker, "m", 100)
    assert breaker.allow("m", 0) and breaker.state("m", 0) == "closed"


def test_configure_keeps_known_models_and_forgets_removed_ones() -> None:
    breaker = _breaker()
    _fail(breaker, "kept", 3)
    _fail(breaker, "gone", 3)
    breaker.configure(SETTINGS, ["kept", "new"])
    assert breaker.snapshot(1) == {"kept": "open"}
    assert breaker.snapshot(1, ["kept", "new"]) == {"kept": "open", "new": "closed"}


def test_the_registry_configures_it_and_it_is_on_by_default() -> None:
    base = "models:\n  - {name: a, litellm_params: {model: openai/a}}\n"
    assert parse_registry(base).router.circuit_breaker == CircuitBreakerSettings()
    assert CircuitBreakerSettings().enabled
    custom = parse_registry(base + "router:\n  circuit_breaker: {consecutive_failures: 2, cooldown_s: 5}\n")
    assert (custom.router.circuit_breaker.consecutive_failures, custom.router.circuit_breaker.cooldown_s) == (2, 5.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{consecutive_falures: 2}", "unknown key 'consecutive_falures'"),
        ("{consecutive_failures: 0}", "consecutive_failures must be >= 1"),
        ("{failure_rate: 1.5}", "failure_rate must be > 0"),
        ("{min_calls: 30, window: 20}", "min_calls must be >= 1 and <= window"),
        ("{cooldown_s: -1}", "cooldown_s must be > 0"),
        ("{cooldown_s: 60, max_cooldown_s: 30}", "max_cooldown_s must be >= cooldown_s"),
        ("{enabled: maybe}", "expected bool"),
    ],
)
def test_bad_settings_are_config_errors(value: str, message: str) -> None:
    text = f"models:\n  - {{name: a, litellm_params: {{model: openai/a}}}}\nrouter:\n  circuit_breaker: {value}\n"
    with pytest.raises(ConfigError, match=message):
        parse_registry(text)

"""autoroute as a LiteLLM proxy callback: routing in the pre-call hook, outcomes from LiteLLM's events."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from router_plugins import litellm_plugin
from router_plugins.litellm_plugin import OUTCOMES_FILE, AutorouteCallback

CONFIG = (Path(__file__).parent.parent / "fixtures" / "litellm_plugin" / "registry.yaml").read_text()


@pytest.fixture
def callback(tmp_path: Path) -> AutorouteCallback:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return AutorouteCallback(config, tmp_path / "data")


def _hook(callback: AutorouteCallback, data: dict) -> dict:
    return asyncio.run(callback.async_pre_call_hook(None, None, data, "acompletion"))


def test_auto_is_routed_and_the_decision_travels_in_metadata(callback: AutorouteCallback) -> None:
    data = _hook(callback, {"model": "auto", "messages": [{"role": "user", "content": "Implement a regex in a code "
                                                                                    "snippet that parses dates."}]})
    assert data["model"] == "coder"
    decision = data["metadata"]["autoroute"]
    assert decision["task"] == "coding" and decision["router"].startswith("static-rules@")
    assert [a["model"] for a in decision["alternatives"]] == ["coder", "mini"]
    cheap = _hook(callback, {"model": "auto:cost", "messages": [{"role": "user", "content": "hi there, how are you?"}]})
    assert cheap["model"] == "mini"


def test_named_models_pass_untouched(callback: AutorouteCallback) -> None:
    data = {"model": "coder", "messages": [{"role": "user", "content": "hello"}]}
    assert _hook(callback, dict(data)) == data
    with pytest.raises(ValueError, match="preference"):
        _hook(callback, {"model": "auto:fastest", "messages": [{"role": "user", "content": "hello"}]})


def test_success_and_failure_events_are_recorded(callback: AutorouteCallback, tmp_path: Path) -> None:
    data = _hook(callback, {"model": "auto", "messages": [{"role": "user", "content": "Implement a regex in a code snippet."}]})
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    kwargs = {"model": data["model"], "litellm_params": {"metadata": data["metadata"]}, "response_cost": 0.002,
              "completion_start_time": start + datetime.timedelta(milliseconds=120)}  # fmt: skip
    response = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=12, completion_tokens=30))
    asyncio.run(callback.async_log_success_event(kwargs, response, start, start + datetime.timedelta(seconds=1.5)))
    failed = {"model": "mini", "litellm_params": {}, "exception": TimeoutError("slow")}
    asyncio.run(callback.async_log_failure_event(failed, None, start, start + datetime.timedelta(seconds=30)))
    lines = [json.loads(line) for line in (tmp_path / "data" / OUTCOMES_FILE).read_text().splitlines()]
    ok, bad = lines
    assert bad["cost_usd"] is None
    assert (ok["model"], ok["task"], ok["outcome"], ok["latency_ms"], ok["ttft_ms"]) == ("coder", "coding", "success", 1500.0, 120.0)
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["cost_usd"]) == (12, 30, 0.002)
    assert ok["request_id"] == data["metadata"]["autoroute"]["request_id"]
    assert (bad["outcome"], bad["error_class"], bad["latency_ms"], bad["task"]) == ("failure", "TimeoutError", 30000.0, None)


def test_the_proxy_handler_is_built_on_first_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("AUTOROUTE_CONFIG", str(config))
    monkeypatch.setattr(litellm_plugin, "_handler", None)
    handler = litellm_plugin.proxy_handler
    assert isinstance(handler, AutorouteCallback) and litellm_plugin.proxy_handler is handler
    with pytest.raises(AttributeError):
        litellm_plugin.nothing_here  # noqa: B018


def test_the_prompts_language_narrows_the_candidates_as_in_the_gateway(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("input_cost_per_mtok: 1.0,", "input_cost_per_mtok: 1.0, languages: [en],"))
    callback = AutorouteCallback(config, tmp_path / "data")
    german = "Schreib eine Python-Funktion, die einen regulären Ausdruck für Datumsangaben implementiert."
    english = "Implement a regex in a code snippet that parses dates."

    data = _hook(callback, {"model": "auto", "messages": [{"role": "user", "content": german}]})
    assert data["metadata"]["autoroute"]["language"] == "de"
    assert data["model"] == "mini", "coder lists English only"
    data = _hook(callback, {"model": "auto", "messages": [{"role": "user", "content": english}]})
    assert (data["model"], data["metadata"]["autoroute"]["language"]) == ("coder", "en")

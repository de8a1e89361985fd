"""The replay upstream as a real process, and the online driver through a real gateway in front of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from proxy.cli import build_parser
from proxy.replay.dataset import ReplaySet, read_records
from proxy.replay.driver import OnlineSettings, drive

from .conftest import REPO, Gateway, _stop, start_server

pytestmark = pytest.mark.e2e

FIXTURE = REPO / "tests" / "fixtures" / "replay" / "mini.jsonl"
FIB_PROMPT = "Write a Python function that returns the n-th Fibonacci number iteratively."
FIB_CODE = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"
# Priors that spread the choices over the three models (the example registries start all at 0.5 instead).
REGISTRY = """
models:
  - name: big-generalist
    litellm_params: {model: "openai/big-generalist", api_base: "{REPLAY}", timeout_s: 10}
    input_cost_per_mtok: 5.0
    output_cost_per_mtok: 15.0
    quality: {default: 0.9}
  - name: acme/coder-7b
    litellm_params: {model: "openai/acme/coder-7b", api_base: "{REPLAY}", timeout_s: 10}
    input_cost_per_mtok: 0.5
    output_cost_per_mtok: 1.5
    quality: {default: 0.5, coding: 0.95}
  - name: tiny-chat
    litellm_params: {model: "openai/tiny-chat", api_base: "{REPLAY}", timeout_s: 10}
    input_cost_per_mtok: 0.1
    output_cost_per_mtok: 0.2
    quality: {default: 0.5, writing: 0.9}
storage:
  flush_interval_ms: 50
"""


@dataclass
class ReplayUpstream:
    url: str
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture(scope="module")
def replay_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayUpstream]:
    log = tmp_path_factory.mktemp("replay") / "replay-upstream.log"
    url, proc = start_server(["replay-upstream", "--data", str(FIXTURE)], log)
    yield ReplayUpstream(url, proc)
    _stop(proc)


@pytest.fixture(scope="module")
def replay_gateway(start_gateway: Callable[..., Gateway], replay_upstream: ReplayUpstream) -> Gateway:
    return start_gateway(REGISTRY.replace("{REPLAY}", replay_upstream.base_url))


def test_replay_upstream_answers_the_openai_client(replay_upstream: ReplayUpstream) -> None:
    client = openai.OpenAI(base_url=replay_upstream.base_url, api_key="unused", max_retries=0)
    prompt = [{"role": "user", "content": FIB_PROMPT}]
    completion = client.chat.completions.create(model="acme/coder-7b", messages=prompt)
    assert completion.model == "acme/coder-7b"
    assert completion.choices[0].message.content == FIB_CODE
    assert completion.usage is not None and completion.usage.model_extra == {"cost": 4.45e-05}

    stream = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": FIB_PROMPT}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "def fib(n): return fib(n-1) + fib(n-2)"
    assert chunks[-1].usage is not None and chunks[-1].usage.model_extra == {"cost": 4.3e-06}

    with pytest.raises(openai.NotFoundError, match="prompt_not_found"):
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "unrecorded"}])
    with pytest.raises(openai.NotFoundError, match="model_not_found"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": FIB_PROMPT}])
    assert [m.id for m in client.models.list()] == ["big-generalist", "acme/coder-7b", "tiny-chat"]


def test_online_driver_runs_the_feedback_loop_through_the_gateway(replay_gateway: Gateway) -> None:
    settings = OnlineSettings(proxy=replay_gateway.url, data=FIXTURE, concurrency=4, window=10, timeout_s=30)
    report = asyncio.run(drive(settings))

    records = {r.id: r for r in read_records(FIXTURE)}
    assert (report.overall.events, report.overall.errors, report.feedback_errors) == (30, 0, 0)
    assert [e.record_id for e in report.events] == list(records)
    assert all(e.model in ("big-generalist", "acme/coder-7b", "tiny-chat") and e.request_id for e in report.events)
    assert [(w.start, w.end) for w in report.windows] == [(0, 10), (10, 20), (20, 30)]
    assert "acme/coder-7b" in {e.model for e in report.events}  # a name with a '/' goes through LiteLLM intact
    by_request = {e.request_id: e for e in report.events}
    ids = tuple(by_request)
    marks = ",".join("?" * len(ids))

    feedback = replay_gateway.wait_rows(
        f"SELECT request_id, score FROM feedback WHERE request_id IN ({marks})", ids, count=30
    )
    assert {row["request_id"]: row["score"] for row in feedback} == {e.request_id: e.quality for e in report.events}

    decisions = replay_gateway.wait_rows(
        f"SELECT request_id, selected_model FROM routing_decisions WHERE request_id IN ({marks})", ids, count=30
    )
    chosen = {row["request_id"]: row["selected_model"] for row in decisions}
    assert chosen == {e.request_id: e.model for e in report.events}
    recorded = []
    for request_id, model in chosen.items():
        outcome = records[by_request[request_id].record_id].outcome(model)
        assert outcome is not None
        recorded.append(outcome)
    assert report.overall.mean_quality == pytest.approx(sum(o.quality for o in recorded) / 30)

    perf = replay_gateway.wait_rows(
        f"SELECT request_id, model, cost_usd, cost_source FROM model_performance WHERE request_id IN ({marks})", ids,
        count=30,
    )  # fmt: skip
    assert len(perf) == 30
    for row in perf:
        event = by_request[row["request_id"]]
        assert row["model"] == event.model and row["cost_source"] == "provider"
        assert row["cost_usd"] == pytest.approx(event.cost_usd)
    assert report.overall.mean_cost == pytest.approx(sum(row["cost_usd"] for row in perf) / 30)


def test_online_command_writes_json_and_plot(
    replay_gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "online.json", tmp_path / "online.png"
    args = build_parser().parse_args(
        ["eval", "online", "--proxy", f"{replay_gateway.url}/v1", "--data", str(FIXTURE), "--events", "6",
         "--window", "4", "--json", str(out), "--plot", str(png)]
    )  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].split()[:3] == ["1-4", "4", "0"]
    payload = json.loads(out.read_text())
    assert payload["settings"]["events"] == 6 and "api_key" not in payload["settings"]
    assert payload["overall"]["events"] == 6 and payload["overall"]["errors"] == 0
    assert [w["end"] for w in payload["windows"]] == [4, 6]
    assert set(payload["baselines"]) == {*ReplaySet.load(FIXTURE).models, "oracle"}
    assert png.read_bytes()[:4] == b"\x89PNG"

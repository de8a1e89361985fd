"""The LiteLLM plugin at parity, inside a real `litellm` proxy process in front of the fake upstream: the README's
config (examples/litellm-proxy.yaml with the demo registry examples/local-fake.yaml) routes, streams, falls back,
records into the store, takes feedback and swaps in a new learned router while serving."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from router_plugins.classify import StaticEmbedder
from router_plugins.classify.static_embedding import TABLE_FILE
from router_plugins.datadir import DataDir
from router_plugins.outcomes import OutcomeSet
from router_plugins.registry import load_registry
from router_plugins.routers import LearnedRouter, RouterContext

from .conftest import REPO, Upstream, _env, _stop, _wait_ready, free_port

EXAMPLE = REPO / "examples" / "litellm-proxy.yaml"
REGISTRY = REPO / "examples" / "local-fake.yaml"
DEMO_UPSTREAM = "http://127.0.0.1:4010/v1"
MASTER_KEY = "sk-autoroute-e2e"
CODING = "Implement a regex in Python that parses ISO dates."
MATH = "Solve for x: 3x + 7 = 22. Show the steps."


@dataclass
class Proxy:
    url: str
    config: Path
    data: Path
    proc: subprocess.Popen[bytes]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=MASTER_KEY, max_retries=0)

    def rows(self, sql: str, params: tuple[Any, ...] = (), count: int = 1, timeout: float = 10.0) -> list[sqlite3.Row]:
        """Rows are written a moment after the call ends: poll until `count` of them are there."""
        deadline = time.monotonic() + timeout
        while True:
            conn = sqlite3.connect(f"file:{self.data / 'autoroute.db'}?mode=ro", uri=True, timeout=5)
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:  # the store is not created yet
                rows = []
            finally:
                conn.close()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def decision(self, request_id: str) -> sqlite3.Row:
        (row,) = self.rows("SELECT * FROM routing_decisions WHERE request_id = ?", (request_id,))
        return row

    def attempts(self, request_id: str, count: int = 1) -> list[tuple[Any, ...]]:
        rows = self.rows("SELECT * FROM model_performance WHERE request_id = ? ORDER BY attempt", (request_id,), count)
        return [(r["attempt"], r["model"], r["outcome"]) for r in rows]


def test_the_readme_shows_the_tested_config() -> None:
    assert EXAMPLE.read_text().strip() in (REPO / "README.md").read_text(), "README and examples/ drifted apart"


@pytest.fixture(scope="module")
def proxy(upstream: Upstream, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The example config as it is, but for two things: the fake upstream's address, and `mathematician` down (its
    deployment answers 500), so that math prompts fall back."""
    workdir = tmp_path_factory.mktemp("litellm")
    data = workdir / "data"
    DataDir(data).ensure()
    shutil.copy(artifacts_dir / TABLE_FILE, data / "artifacts" / TABLE_FILE)  # distilled once per test session
    registry = workdir / "registry.yaml"
    text = REGISTRY.read_text()
    assert "data_dir: autoroute-data-demo" in text
    registry.write_text(text.replace("data_dir: autoroute-data-demo", f"data_dir: {data}\n  flush_interval_ms: 50"))
    config = workdir / "litellm.yaml"
    example = EXAMPLE.read_text()
    assert DEMO_UPSTREAM in example and "model: openai/mathematician," in example
    config.write_text(example.replace(DEMO_UPSTREAM, f"{upstream.url}/v1").replace(
        "model: openai/mathematician,", "model: openai/mathematician-error-500,"))  # fmt: skip
    port = free_port()
    log = workdir / "litellm.log"
    env = _env({"AUTOROUTE_CONFIG": str(registry), "LITELLM_MASTER_KEY": MASTER_KEY})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_ready(f"{url}/health/liveliness", proc, log)
    yield Proxy(url, registry, data, proc)
    _stop(proc)


def test_auto_is_routed_recorded_and_named_in_the_answer(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": CODING}]
    )
    answer, headers = raw.parse(), raw.headers
    assert answer.choices[0].message.content.startswith("[coder]"), "the fake upstream names the backend it played"
    assert answer.model == "coder" and headers["x-autoroute-model"] == "coder", "not `auto`: the model that answered"
    request_id = headers["x-autoroute-request-id"]
    assert request_id == headers["x-litellm-call-id"], "our request id is LiteLLM's call id"
    assert (headers["x-autoroute-task"], headers["x-autoroute-router"].split("@")[0]) == ("coding", "static-rules")
    decision = proxy.decision(request_id)
    assert (decision["task"], decision["router_name"], decision["status"]) == ("coding", "static-rules", "success")
    assert (decision["routed_model"], decision["selected_model"], decision["attempts"]) == ("coder", "coder", 1)
    assert decision["prompt_text"] == CODING and decision["classification_layer"] == "text_model"
    assert proxy.attempts(request_id) == [(1, "coder", "success")]
    chat = proxy.client().chat.completions.with_raw_response.create(
        model="auto:cost", messages=[{"role": "user", "content": "hi, how are you today?"}]
    )
    assert chat.parse().model == "local-small" and proxy.decision(chat.headers["x-litellm-call-id"])["task"] == "chat"
    named = proxy.client().chat.completions.with_raw_response.create(
        model="mini", messages=[{"role": "user", "content": CODING}]
    )
    assert named.parse().choices[0].message.content.startswith("[mini]"), "a named model is not re-routed"
    assert proxy.decision(named.headers["x-litellm-call-id"])["router_name"] == "passthrough"


def test_a_stream_names_its_model_in_every_chunk_and_records_its_first_token(proxy: Proxy) -> None:
    with proxy.client().chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": CODING}], stream=True
    ) as response:
        request_id = response.headers["x-autoroute-request-id"]
        assert response.headers["x-autoroute-model"] == "coder"
        chunks = list(response.parse())
    assert chunks and {chunk.model for chunk in chunks} == {"coder"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("[coder]")
    decision = proxy.decision(request_id)
    assert (decision["stream"], decision["status"], decision["selected_model"]) == (1, "success", "coder")
    (row,) = proxy.rows("SELECT * FROM model_performance WHERE request_id = ?", (request_id,))
    assert row["outcome"] == "success" and row["stream"] == 1 and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert row["completion_tokens"] > 0 and row["cost_usd"] > 0


def test_a_failing_backend_falls_back_to_the_next_candidate(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": MATH}]
    )
    answer, request_id = raw.parse(), raw.headers["x-autoroute-request-id"]
    assert answer.choices[0].message.content.startswith("[frontier-large]")
    assert answer.model == "frontier" and raw.headers["x-autoroute-model"] == "frontier"
    decision = proxy.decision(request_id)
    assert (decision["task"], decision["routed_model"], decision["selected_model"]) == ("math", "mathematician",
                                                                                        "frontier")  # fmt: skip
    assert decision["attempts"] == 2
    assert proxy.attempts(request_id, count=2) == [(1, "mathematician", "failure"), (2, "frontier", "success")]
    with proxy.client().chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": MATH}], stream=True
    ) as response:
        streamed_id = response.headers["x-autoroute-request-id"]
        assert {chunk.model for chunk in response.parse()} == {"frontier"}
    assert proxy.attempts(streamed_id, count=2) == [(1, "mathematician", "failure"), (2, "frontier", "success")]
    with pytest.raises(openai.InternalServerError) as failed:  # named: no fallback, as in the gateway
        proxy.client().chat.completions.create(model="mathematician", messages=[{"role": "user", "content": MATH}])
    failed_id = failed.value.response.headers["x-autoroute-request-id"]
    decision = proxy.decision(failed_id)
    assert (decision["status"], decision["error_code"], decision["router_name"]) == ("failure", "upstream_unavailable",
                                                                                    "passthrough")  # fmt: skip
    assert proxy.attempts(failed_id) == [(1, "mathematician", "failure")]


def test_feedback_for_a_plugin_request_lands_in_the_store(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": CODING}]
    )
    request_id = raw.headers["x-litellm-call-id"]
    proxy.decision(request_id)  # written a moment after the answer
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "feedback", request_id, "--score", "0.8", "--config", str(proxy.config)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = proxy.rows("SELECT * FROM feedback WHERE request_id = ?", (request_id,))
    assert (row["score"], row["source"]) == (0.8, "cli")


def test_a_new_learned_router_is_swapped_in_while_serving(proxy: Proxy) -> None:
    """`autoroute train` (or the trainer) writes a new artifact and moves `learned-current.json`: the next decisions
    are the learned router's, without a restart."""
    registry = load_registry(proxy.config)
    models = [m.name for m in registry.models]
    data = DataDir(proxy.data)
    texts = [CODING, MATH, "hi, how are you today?", "Summarize this paragraph in one line."] * 10
    rng = np.random.default_rng(0)
    shape = (len(texts), len(models))
    outcomes = OutcomeSet([str(i) for i in range(len(texts))], texts, [None] * len(texts), [None] * len(texts), models,
                          rng.random(shape).round(), np.full(shape, 0.001))  # fmt: skip
    learned = LearnedRouter(registry, RouterContext(static_embed=StaticEmbedder.load(data.path(TABLE_FILE)).embed))
    learned.fit(outcomes)
    learned.save(data.artifacts)
    deadline, router = time.monotonic() + 20, ""
    while router != f"learned@{learned.version}":
        assert time.monotonic() < deadline, f"still routed by {router}"
        raw = proxy.client().chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CODING}]
        )
        router = raw.headers["x-autoroute-router"]
        time.sleep(0.3)
    decision = proxy.decision(raw.headers["x-autoroute-request-id"])
    assert (decision["router_name"], decision["router_version"]) == ("learned", learned.version)

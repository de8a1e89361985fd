"""router_plugins.litellm_plugin inside a real LiteLLM proxy server, in front of the fake upstream."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from .conftest import REPO, Upstream, _env, _stop, _wait_ready, free_port

MASTER_KEY = "sk-autoroute-e2e"
REGISTRY = (Path(__file__).parent.parent / "fixtures" / "litellm_plugin" / "registry.yaml").read_text()
LITELLM = """
model_list:
  - {model_name: coder, litellm_params: {model: openai/coder, api_base: "UPSTREAM", api_key: unused}}
  - {model_name: mini, litellm_params: {model: openai/mini, api_base: "UPSTREAM", api_key: unused}}
  # `auto` must be a known model name for the proxy to accept it; the plugin rewrites it before the call.
  - {model_name: auto, litellm_params: {model: openai/mini, api_base: "UPSTREAM", api_key: unused}}
litellm_settings:
  callbacks: router_plugins.litellm_plugin.proxy_handler
general_settings:
  master_key: MASTER
"""


@pytest.fixture(scope="module")
def litellm_proxy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("litellm")
    data = workdir / "data"
    (workdir / "registry.yaml").write_text(REGISTRY + f"storage: {{data_dir: {data}}}\n")
    (workdir / "litellm.yaml").write_text(
        LITELLM.replace("UPSTREAM", f"{upstream.url}/v1").replace("MASTER", MASTER_KEY)
    )
    port = free_port()
    log = workdir / "litellm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "litellm"), "--config", str(workdir / "litellm.yaml"),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=_env({"AUTOROUTE_CONFIG": str(workdir / "registry.yaml")}), stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_ready(f"{url}/health/liveliness", proc, log)
    yield url, data
    _stop(proc)


def test_the_plugin_routes_auto_and_records_outcomes_inside_litellm(litellm_proxy: tuple[str, Path]) -> None:
    url, data = litellm_proxy
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY)
    coding = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Implement a regex in a code snippet that parses dates."}]
    )
    chat = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi, how are you today?"}])
    streamed = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Implement a regex code snippet."}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    # The fake upstream answers "[<model>] <prompt>": the model the plugin chose served each call.
    assert coding.choices[0].message.content.startswith("[coder]")
    assert chat.choices[0].message.content.startswith("[mini]")
    assert text.startswith("[coder]")
    named = client.chat.completions.create(model="mini", messages=[{"role": "user", "content": "Implement a regex."}])
    assert named.choices[0].message.content.startswith("[mini]"), "a named model passes untouched"
    outcomes = data / "litellm-outcomes.jsonl"
    deadline = time.monotonic() + 10
    while len(lines := (outcomes.read_text().splitlines() if outcomes.exists() else [])) < 4:
        assert time.monotonic() < deadline, f"outcomes not recorded: {lines}"
        time.sleep(0.2)
    records = [json.loads(line) for line in lines]
    routed = [r for r in records if r["task"] is not None]
    assert sorted((r["model"], r["task"]) for r in routed) == [("coder", "coding"), ("coder", "coding"), ("mini", "chat")]
    assert all(r["outcome"] == "success" and r["latency_ms"] > 0 and r["completion_tokens"] for r in records)
    assert all(r["cost_usd"] > 0 for r in records), "priced from the registry where LiteLLM knows no price"

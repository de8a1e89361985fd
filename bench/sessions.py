"""Agent sessions through a real gateway: model switches inside tool loops, escalations, cost; sessions vs per-request.

    python bench/sessions.py --json docs/sessions.json       # ~3-5 min on 2 cores

Conversations are generated, seeded: each opens with a real user prompt (the real-traffic set's `test` split,
`bench/real_prompts.py`, so many languages and tasks), then runs a tool loop of 2-8 turns: the model calls a tool
(the fake upstream answers a forced tool choice with a tool call), the tool's result (200-2,000 characters of file
contents) goes back, and the model is asked again; the last turn lets it answer in text. One backend is flaky (every
other call fails), so fallbacks happen mid-session as they do in production.

The same conversations run twice against a fresh gateway each: `router.sessions` on (the default) and off (every
request routed on its own). Exploration is on in both (`learning.explore: on`), as a learning deployment has it.
Reported per mode: switches inside tool loops (a turn answered by another model than the turn before it), each
escalation with its reason, cost (the store's), and the prior quality (the registry's, per task) of the models that
answered: the fake upstream measures no real quality, so that column says what the router expected, not what users got.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai  # noqa: E402
import real_prompts  # noqa: E402
from _harness import PYTHON, Servers, free_port, machine, prepare_data_dir, write_json  # noqa: E402

SESSIONS = 60
REGISTRY = """
models:
  - {name: premium, litellm_params: {model: openai/premium, api_base: "{UPSTREAM}", timeout_s: 10},
     input_cost_per_mtok: 3.0, output_cost_per_mtok: 15.0, context_window: 200000,
     quality: {default: 0.88, coding: 0.91, debugging: 0.90, math: 0.85}}
  - {name: standard, litellm_params: {model: openai/standard, api_base: "{UPSTREAM}", timeout_s: 10},
     input_cost_per_mtok: 0.5, output_cost_per_mtok: 1.5, context_window: 128000,
     quality: {default: 0.80, coding: 0.82, debugging: 0.80, math: 0.78}}
  - {name: coder, litellm_params: {model: openai/coder-flaky, api_base: "{UPSTREAM}", timeout_s: 10},
     input_cost_per_mtok: 0.3, output_cost_per_mtok: 0.9, context_window: 64000, specialized_for: [coding, debugging],
     quality: {default: 0.60, coding: 0.86, debugging: 0.84}}
  - {name: mini, litellm_params: {model: openai/mini, api_base: "{UPSTREAM}", timeout_s: 10},
     input_cost_per_mtok: 0.15, output_cost_per_mtok: 0.6, context_window: 32000,
     quality: {default: 0.72, chat: 0.80, translation: 0.80, summarization: 0.78}}
router:
  circuit_breaker: {enabled: false}
  sessions: {enabled: SESSIONS}
learning:
  explore: "on"
  winrate: {exploration: 0.2}
storage: {flush_interval_ms: 50}
"""
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file of the repository",
                                           "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
FORCE = {"type": "function", "function": {"name": "read_file"}}


def conversations(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    openings = rng.sample(real_prompts.load("test"), SESSIONS)
    return [{"opening": row["text"][:4000], "task": row["task"], "turns": rng.randint(2, 8),
             "results": [rng.randint(200, 2000) for _ in range(8)]} for row in openings]  # fmt: skip


def drive(base_url: str, convs: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """Every conversation's turns as (model that answered, request id)."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    out = []
    for conv in convs:
        messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent with tools."},
                                          {"role": "user", "content": conv["opening"]}]  # fmt: skip
        turns = []
        for i in range(conv["turns"]):
            last = i == conv["turns"] - 1
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=messages, tools=TOOLS,  # type: ignore[arg-type]
                tool_choice="auto" if last else FORCE,  # type: ignore[arg-type]
            )  # fmt: skip
            turns.append((raw.headers["x-autoroute-model"], raw.headers["x-autoroute-request-id"]))
            message = raw.parse().choices[0].message.model_dump(exclude_none=True)
            messages.append(message)
            for call in message.get("tool_calls") or []:
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": "x" * conv["results"][i]})
        out.append(turns)
    return out


def measure(sessions_on: bool, convs: list[dict[str, Any]], upstream_url: str, servers: Servers) -> dict[str, Any]:
    workdir = servers.workdir / ("on" if sessions_on else "off")
    workdir.mkdir()
    config = workdir / "config.yaml"
    config.write_text(
        REGISTRY.replace("{UPSTREAM}", f"{upstream_url}/v1").replace("SESSIONS", str(sessions_on).lower())
    )
    data = prepare_data_dir(workdir / "data")
    port = free_port()
    command = [PYTHON, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
               "--data-dir", str(data), "--no-reload"]  # fmt: skip
    gateway = servers.start(f"gateway-{workdir.name}", command, port, "/health/readiness")
    started = time.monotonic()
    turns = drive(f"{gateway.url}/v1", convs)
    wall = time.monotonic() - started
    time.sleep(1.0)  # the recorder's last batch
    db = sqlite3.connect(f"file:{data / 'autoroute.db'}?mode=ro", uri=True)
    reasons = dict(db.execute("SELECT request_id, selection_reason FROM routing_decisions").fetchall())
    costs = dict(db.execute("SELECT request_id, SUM(cost_usd) FROM model_performance GROUP BY request_id").fetchall())
    db.close()
    quality = {m["name"]: m.get("quality", {}) for m in _models(config)}
    switches, escalations, expected, loop_turns = 0, Counter[str](), [], 0
    for conv, served in zip(convs, turns):
        for i, (model, request_id) in enumerate(served):
            q = quality[model]
            expected.append(q.get(conv["task"], q.get("default", 0.5)))
            if i == 0:
                continue
            loop_turns += 1
            if model != served[i - 1][0]:
                switches += 1
            reason = reasons.get(request_id) or ""
            if "session: escalated" in reason:
                escalations[reason.split("session: escalated", 1)[1].split(";")[0].strip()] += 1
    requests = sum(len(t) for t in turns)
    return {
        "sessions": "on" if sessions_on else "off", "conversations": len(convs), "requests": requests,
        "turns_inside_tool_loops": loop_turns, "switches_inside_tool_loops": switches,
        "escalations": sum(escalations.values()), "escalation_reasons": dict(escalations.most_common()),
        "cost_usd": round(sum(v or 0.0 for v in costs.values()), 6),
        "mean_prior_quality": round(sum(expected) / len(expected), 4), "wall_s": round(wall, 1),
    }  # fmt: skip


def _models(config: Path) -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(config.read_text())["models"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    convs = conversations()
    with Servers() as servers:
        port = free_port()
        upstream = servers.start("upstream", [PYTHON, "-m", "proxy.cli", "fake-upstream", "--port", str(port)], port,
                                 "/health")  # fmt: skip
        results = [measure(on, convs, upstream.url, servers) for on in (True, False)]
    report = {"command": "python bench/sessions.py --json docs/sessions.json", "machine": machine(), "modes": results}
    for row in results:
        print(row)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

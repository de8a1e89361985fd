"""Two gateway replicas on one Postgres database, each with its own data directory: a request served by one is known
to the other (its feedback, its receipt), both compute the same win rates from the shared rows, and a router
version promoted or pinned on one is served by the other (`proxy.shared_versions`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

from router_plugins.thresholds import ARTIFACT_FORMAT

from ..postgres import Cluster
from .conftest import REPO, Gateway, Upstream, registry_text

DB_VARIABLE = "AUTOROUTE_DATABASE_URL"
LEARNING = """
learning:
  chain: [learned, winrate, static-rules]
  aggregate_interval_s: 0.5
  train_interval_s: 0
  winrate: {exploration: 0.0}
"""
TRAINING_SET = REPO / "tests" / "fixtures" / "outcomes" / "e2e" / "train.jsonl"
MATH = "Solve for x: 4x + 9 = 37. How many apples is that?"
TRANSLATION = "Translate 'thank you' into German."


def _chat(gateway: Gateway, text: str) -> tuple[str, dict[str, str]]:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers["x-autoroute-request-id"], dict(raw.headers)


def _receipt(gateway: Gateway, request_id: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.base_url}/decisions/{request_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _cells(gateway: Gateway) -> list[dict[str, Any]] | None:
    path = gateway.data_dir / "artifacts" / "winrate-current.json"
    return json.loads(path.read_text())["cells"] if path.exists() else None


def _cli(gateway: Gateway, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "proxy.cli", *args, "--config", str(gateway.config), "--data-dir",
                           str(gateway.data_dir)], capture_output=True, text=True, env=gateway.env, cwd=REPO,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return value


def test_two_replicas_share_requests_feedback_win_rates_and_router_versions(
    start_gateway: Callable[..., Gateway], upstream: Upstream, postgres: Cluster
) -> None:
    config = registry_text(upstream).replace("storage:\n", f"storage:\n  url_env: {DB_VARIABLE}\n") + LEARNING
    env = {DB_VARIABLE: postgres.new_database()}
    a, b = start_gateway(config, env=env), start_gateway(config, env=env)
    try:
        assert a.data_dir != b.data_dir and not (a.data_dir / "autoroute.db").exists()

        # A request through A, its feedback through B (A's receipt flushes A's recorder: B then finds the decision).
        request_id, headers = _chat(a, MATH)
        served_by = headers["x-autoroute-model"]
        _receipt(a, request_id)
        sent = httpx.post(f"{b.base_url}/feedback", json={"request_id": request_id, "score": 0.0})
        assert sent.status_code == 200, sent.text
        from_a, from_b = _receipt(a, request_id), _receipt(b, request_id)
        assert from_a == from_b and from_b["routing"]["selected_model"] == served_by
        assert [f["score"] for f in from_a["feedback"]] == [0.0]
        other_id, _ = _chat(b, TRANSLATION)
        assert _receipt(b, other_id) == _receipt(a, other_id)  # and the other way round

        # Both aggregate the same rows into the same win rates.
        def agreed() -> bool:
            cells_a, cells_b = _cells(a), _cells(b)
            scored = [c for c in cells_a or [] if c["task"] == "math" and c["model"] == served_by and c["failures"] > 0]
            return bool(scored) and cells_a == cells_b

        _until(agreed, "the replicas' win rates did not agree on the scored request")

        # A promotion on A (`autoroute train --force`, published to the store) is served by B.
        trained = json.loads(_cli(a, "train", "--data", str(TRAINING_SET), "--folds", "0", "--force"))
        version = trained["version"]
        assert trained["gate"]["promoted"] and trained["gate"]["forced"]

        def learned_on_b() -> bool:
            return _chat(b, MATH)[1]["x-autoroute-router"] == f"learned@{version}"

        _until(learned_on_b, f"replica B did not serve the version {version} promoted on A")
        artifact = f"artifacts/learned-{version}.npz"
        assert (b.data_dir / artifact).read_bytes() == (a.data_dir / artifact).read_bytes()

        # A pin on B (tuned thresholds that only B's data directory holds) is served by A.
        (b.data_dir / "artifacts" / "thresholds-shared.json").write_text(json.dumps(
            {"format": ARTIFACT_FORMAT, "version": "shared", "thresholds": {"keywords": 0.71}}
        ))  # fmt: skip
        assert "-> shared (pin)" in _cli(b, "router", "pin", "shared", "--kind", "thresholds")

        def threshold_on_a() -> bool:
            request_id, _ = _chat(a, TRANSLATION)
            return _receipt(a, request_id)["classification"]["layers"][0]["threshold"] == 0.71

        _until(threshold_on_a, "replica A did not serve the thresholds pinned on B")
        listing = _cli(a, "router", "list")
        assert "* shared" in listing and f"* {version}" in listing, listing
    finally:  # before the session's database goes: their last writes and their shutdown need it
        codes = a.stop(), b.stop()
    assert codes == (0, 0)

"""Real traffic through a real gateway (the openai client, feedback over HTTP), then `autoroute report --html` and
`autoroute top` on its data directory: the numbers in them are the traffic that was sent."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from proxy.cli import main

from .conftest import Gateway

GAP_S = 6.0
"""Quiet time before our traffic: the report starts in its middle; `top`'s window reaches `TOP_MARGIN_S` before it."""
TOP_MARGIN_S = 2.0
"""`top` reads its clock after ours (start-up, store): up to this much later its window still holds our first request,
and it still starts after the other tests' traffic (GAP_S / 2 before `since`)."""
SENT = [
    ("Write a Python function that merges two sorted lists.", "coder"),
    ("Good morning, report reader! How are you today?", "mini"),  # its label must not touch other tests' prompts
    ("Solve for x: 3x + 7 = 22", "mathematician"),
]


def test_report_and_top_show_the_traffic_sent(gateway: Gateway, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # The shared gateway has served other tests: the report's window starts after their traffic, before ours.
    since = time.time() + GAP_S / 2
    time.sleep(GAP_S)
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    ids = {}
    for prompt, model in SENT:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": prompt}])
        assert raw.headers["x-autoroute-model"] == model
        ids[model] = raw.headers["x-autoroute-request-id"]
    feedback = [{"request_id": ids["mathematician"], "score": 1.0, "task": "math"},
                {"request_id": ids["mini"], "thumbs": "down", "task": "translation"}]  # fmt: skip
    for body in feedback:
        assert httpx.post(f"{gateway.base_url}/feedback", json=body).status_code == 200
    gateway.wait_rows("SELECT 1 FROM model_performance", count=3)
    gateway.wait_rows("SELECT 1 FROM routing_decisions", count=3)

    out, pngs = tmp_path / "report.html", tmp_path / "png"
    common = ["--config", str(gateway.config), "--data-dir", str(gateway.data_dir)]
    assert main(["report", "--html", str(out), "--png-dir", str(pngs), "--since", str(since), *common]) == 0
    page = out.read_text()
    summary = re.search(r'<section id="summary">(.*?)</section>', page, re.S)
    assert summary and "<td>requests</td><td>3</td>" in summary.group(1)
    models = re.search(r'<section id="models">(.*?)</section>', page, re.S)
    assert models and all(f"<td>{m}</td><td>1</td>" in models.group(1) for _, m in SENT)
    assert "2 labelled requests; accuracy 50.0%" in page
    assert "no learned-router artifact" in page
    assert {"traffic.png", "success.png", "latency.png", "confusion.png"} <= {p.name for p in pngs.iterdir()}

    capsys.readouterr()
    assert main(["top", "-w", str((time.time() - since + TOP_MARGIN_S) / 3600), *common]) == 0
    text = capsys.readouterr().out
    assert "requests 3   success 100.0%" in text and "2 task labels" in text
    per_model = text.split("Per model (3 requests)")[1]
    assert all(re.search(rf"^  {m} +1 +33\.3%", per_model, re.M) for _, m in SENT)

"""The online driver's aggregation (windows, tasks, baselines), its report outputs, settings and CLI wiring."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import build_parser
from proxy.replay import commands
from proxy.replay.dataset import Record
from proxy.replay.driver import OnlineSettings, drive
from proxy.replay.report import (
    Baseline,
    Event,
    Stats,
    baselines,
    build_report,
    format_report,
    plot_report,
    stats,
    windows,
)  # fmt: skip

FIXTURE = Path(__file__).parent.parent / "fixtures" / "replay" / "mini.jsonl"

EVENTS = [
    Event(0, "r0", "coding", "A", 1.0, 0.010, "id0"),
    Event(1, "r1", "math", "B", 0.0, 0.002, "id1"),
    Event(2, "r2", "coding", error="APIConnectionError: refused"),
    Event(3, "r3", "writing", "A", 0.5, 0.010, "id3", feedback_error="HTTP 503: queue full"),
    Event(4, "r4", "math", "B", 1.0, None, "id4"),
    Event(5, "r5", "coding", "C", 0.25, 0.001, "id5"),
    Event(6, "r6", "writing", "A", 0.75, 0.004, "id6"),
]


def approx(stats_: Stats, events: int, errors: int, quality: float | None, cost: float | None,
           share: dict[str, float]) -> None:  # fmt: skip
    assert (stats_.events, stats_.errors) == (events, errors)
    assert stats_.mean_quality == (pytest.approx(quality) if quality is not None else None)
    assert stats_.mean_cost == (pytest.approx(cost) if cost is not None else None)
    assert stats_.share == pytest.approx(share)


def test_windows_in_record_order_with_cumulative_means() -> None:
    shuffled = [EVENTS[i] for i in (5, 0, 6, 2, 1, 4, 3)]
    first, second, third = windows(shuffled, 3)
    assert [(w.start, w.end) for w in (first, second, third)] == [(0, 3), (3, 6), (6, 7)]
    approx(first.stats, 3, 1, 0.5, 0.006, {"A": 0.5, "B": 0.5})
    assert (first.cumulative_quality, first.cumulative_cost) == (pytest.approx(0.5), pytest.approx(0.006))
    approx(second.stats, 3, 0, 1.75 / 3, 0.0055, {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3})
    assert (second.cumulative_quality, second.cumulative_cost) == (pytest.approx(0.55), pytest.approx(0.00575))
    approx(third.stats, 1, 0, 0.75, 0.004, {"A": 1.0})
    assert (third.cumulative_quality, third.cumulative_cost) == (pytest.approx(3.5 / 6), pytest.approx(0.0054))
    with pytest.raises(ValueError):
        windows(EVENTS, 0)


def test_overall_and_by_task() -> None:
    report = build_report(list(reversed(EVENTS)), window=100, elapsed_s=2.0)
    approx(report.overall, 7, 1, 3.5 / 6, 0.0054, {"A": 0.5, "B": 2 / 6, "C": 1 / 6})
    assert list(report.by_task) == ["coding", "math", "writing"]
    approx(report.by_task["coding"], 3, 1, 0.625, 0.0055, {"A": 0.5, "C": 0.5})
    approx(report.by_task["math"], 2, 0, 0.5, 0.002, {"B": 1.0})
    approx(report.by_task["writing"], 2, 0, 0.625, 0.007, {"A": 1.0})
    assert report.feedback_errors == 1
    assert report.total_cost == pytest.approx(0.027)
    assert [e.index for e in report.events] == list(range(7))
    assert len(report.windows) == 1 and report.windows[0].stats == report.overall


def test_all_failed_and_untasked_events() -> None:
    failed = [Event(0, "a", None, error="boom"), Event(1, "b", None, error="boom")]
    report = build_report(failed, window=1, elapsed_s=0.0)
    approx(report.overall, 2, 2, None, None, {})
    assert list(report.by_task) == ["none"]
    assert stats([]) == Stats(0, 0, None, None, {})


def _record(rid: str, outcomes: dict[str, tuple[float, float | None]]) -> Record:
    raw = {
        m: {"quality": q, "cost_usd": c, "cost_estimated": False, "response": None} for m, (q, c) in outcomes.items()
    }
    return Record(rid, ({"role": "user", "content": rid},), None, raw)


def test_baselines_each_model_and_the_oracle() -> None:
    records = [
        _record("r1", {"A": (1.0, 0.01), "B": (1.0, 0.001), "C": (0.0, None)}),
        _record("r2", {"A": (0.5, 0.02), "B": (0.0, 0.002), "C": (0.5, 0.0005)}),
    ]
    fixed = baselines(records, ["A", "B", "C"])
    assert fixed["A"] == Baseline(pytest.approx(0.75), pytest.approx(0.015))  # type: ignore[arg-type]
    assert fixed["B"] == Baseline(pytest.approx(0.5), pytest.approx(0.0015))  # type: ignore[arg-type]
    assert fixed["C"] == Baseline(pytest.approx(0.25), pytest.approx(0.0005))  # type: ignore[arg-type]
    # The oracle takes the best quality per prompt, and the cheapest model among those that reach it.
    assert fixed["oracle"] == Baseline(pytest.approx(0.75), pytest.approx(0.00075))  # type: ignore[arg-type]


def test_table_json_and_plot(tmp_path: Path) -> None:
    fixed = {"A": Baseline(0.9, 0.01), "B": Baseline(0.4, None), "oracle": Baseline(0.95, 0.003)}
    report = build_report(EVENTS, window=3, elapsed_s=2.0, fixed=fixed)
    table = format_report(report)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["window", "events", "errors", "quality", "cost/call"]
    assert lines[1].split()[:5] == ["1-3", "3", "1", "0.500", "0.006000"]
    assert "A 50%, B 50%" in lines[1]
    assert any(line.split()[:5] == ["overall", "7", "1", "0.583", "0.005400"] for line in lines)
    assert "feedback errors 1" in table and "3.5 events/s" in table
    assert any(line.split() == ["oracle", "0.950", "0.003000"] for line in lines)
    assert any(line.split() == ["B", "0.400", "-"] for line in lines)

    payload: dict[str, Any] = json.loads(json.dumps(report.to_json()))
    assert payload["overall"]["events"] == 7 and payload["overall"]["mean_quality"] == pytest.approx(3.5 / 6)
    assert [w["end"] for w in payload["windows"]] == [3, 6, 7]
    assert payload["by_task"]["coding"]["errors"] == 1
    assert payload["baselines"]["oracle"] == {"mean_quality": 0.95, "mean_cost": 0.003}
    assert payload["events"][2]["error"].startswith("APIConnectionError")

    out = tmp_path / "curve.png"
    plot_report(report, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_validate_and_normalise_the_proxy_address() -> None:
    assert OnlineSettings("http://127.0.0.1:4000/v1/", FIXTURE).root == "http://127.0.0.1:4000"
    assert OnlineSettings("http://gw:4000", FIXTURE).root == "http://gw:4000"
    for bad in ({"concurrency": 0}, {"window": 0}, {"events": 0}, {"timeout_s": 0.0}):
        with pytest.raises(ValueError):
            OnlineSettings("http://gw", FIXTURE, **bad)  # type: ignore[arg-type]


def test_unreachable_gateway_gives_error_events_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on `port` once the socket is closed: every call is refused.
    settings = OnlineSettings(f"http://127.0.0.1:{port}", FIXTURE, events=5, concurrency=2, timeout_s=5)
    report = asyncio.run(drive(settings))
    approx(report.overall, 5, 5, None, None, {})
    assert all(e.error and "Connection" in e.error for e in report.events)
    assert report.baselines["big-generalist"].mean_quality is not None


def test_cli_registers_both_commands() -> None:
    parser = build_parser()
    up = parser.parse_args(["replay-upstream", "--data", "set.jsonl"])
    assert (up.func, up.data, up.host, up.port) == (commands._replay_upstream, "set.jsonl", "127.0.0.1", 4020)
    online = parser.parse_args(["eval", "online", "--data", "set.jsonl", "--events", "20", "--concurrency", "8"])
    assert online.func is commands._online
    assert (online.proxy, online.events, online.concurrency, online.window) == ("http://127.0.0.1:4000", 20, 8, 100)
    assert (online.model, online.timeout, online.json, online.plot) == ("auto", 60.0, None, None)


@pytest.mark.parametrize("args", [["--concurrency", "0"], ["--window", "-1"], ["--timeout", "0"], ["--events", "x"]])
def test_cli_rejects_bad_numbers(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "online", "--data", "set.jsonl", *args])
    assert "error" in capsys.readouterr().err


def test_cli_reports_a_missing_data_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = build_parser().parse_args(["eval", "online", "--data", str(tmp_path / "none.jsonl")])
    assert args.func(args) == 2
    assert "cannot read outcome file" in capsys.readouterr().err

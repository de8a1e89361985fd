"""`router_plugins.progress`: a bar on a terminal, log lines elsewhere, nothing unless asked; the outermost shows."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from router_plugins.progress import Progress, shown, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bar_on_a_terminal() -> None:
    terminal, clock = Terminal(), Clock()
    with shown(terminal), Progress("embedding", 200, "texts", clock=clock) as progress:
        clock.now += 2.0
        progress.update(50)
        progress.update(10)  # within REDRAW_S of the last draw: not drawn
        clock.now += 2.0
        progress.update(140)
    frames = terminal.getvalue().split("\r")[1:]
    assert len(frames) == 3, "drawn at 50, at the end, and once more when closed"
    assert frames[0].startswith("embedding  [######------------------]  50/200 texts  25%  25.0/s  ~6 s left")
    assert "200/200 texts  100%  50.0/s  in 4 s" in frames[-1] and frames[-1].endswith("\n")


def test_log_lines_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    pipe, clock = io.StringIO(), Clock()
    caplog.set_level(logging.INFO, logger="autoroute.progress")
    with shown(pipe, every_s=10.0):
        with Progress("quick", 5, clock=clock) as quick:
            quick.update(5)
        with Progress("replaying", 100, "requests", clock=clock) as slow:
            for _ in range(4):
                clock.now += 4.0
                slow.update(25)
    assert pipe.getvalue() == "", "no bar when the stream is not a terminal"
    assert [r.getMessage() for r in caplog.records] == [
        "replaying  75/100 requests  75%  6.2/s  ~4 s left",  # 12 s in: the first line after 10 s
        "replaying  100/100 requests  100%  6.2/s  in 16 s (done)",
    ], "short work stays quiet; long work logs while it runs and when it ends"


def test_nothing_unless_asked(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="autoroute.progress")
    assert list(track(range(3), "silent")) == [0, 1, 2]
    assert capsys.readouterr().err == "" and not caplog.records


def test_only_the_outermost_work_is_shown() -> None:
    terminal = Terminal()
    with shown(terminal):
        for _ in track(range(2), "cross-validation", unit="folds"):
            assert list(track(range(3), "fitting")) == [0, 1, 2]
        assert list(track(["a"], "after")) == ["a"], "shown again once the outer work ended"
    text = terminal.getvalue()
    assert "cross-validation" in text and "after" in text and "fitting" not in text


def test_shown_follows_the_work_into_tasks_and_threads() -> None:
    terminal = Terminal()

    def in_thread() -> None:
        with Progress("threaded", 1) as progress:
            progress.update()

    async def run() -> None:
        await asyncio.to_thread(in_thread)

    with shown(terminal):
        asyncio.run(run())
    assert "threaded  [" in terminal.getvalue()

"""`autoroute report --html` and `autoroute top` over a store with known rows (tests/unit/analytics_rows.py)."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from proxy.analytics.top import CLEAR, run_top
from proxy.cli import main

from .analytics_rows import NOW, populated_store

PNG = b"\x89PNG\r\n\x1a\n"


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def cells(fragment: str) -> list[str]:
    return re.findall(r"<td>(.*?)</td>", fragment)


def test_report_writes_the_html_and_the_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populated_store(tmp_path / "data" / "autoroute.db").close()
    out, pngs, document = tmp_path / "out" / "report.html", tmp_path / "png", tmp_path / "analysis.json"
    argv = ["report", "--html", str(out), "--png-dir", str(pngs), "--json", str(document), "--data-dir",
            str(tmp_path / "data"), "--config", str(tmp_path / "missing.yaml"), "--since", str(NOW - 3600)]  # fmt: skip
    assert main(argv) == 0
    assert "5 requests in the window" in capsys.readouterr().out  # r0 is older than --since
    written = sorted(p.name for p in pngs.iterdir())
    assert written == ["calibration.png", "confusion.png", "cost.png", "latency.png", "layers.png", "success.png",
                       "traffic.png"]  # fmt: skip  (no learned router here: no importance figure)
    assert all((pngs / name).read_bytes().startswith(PNG) for name in written)
    page = out.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    assert page.count('src="data:image/png;base64,') == 7
    assert cells(section(page, "summary"))[:4] == ["requests", "5", "success", "80.0% [37.6%, 96.4%]"]
    models = cells(section(page, "models"))
    assert models[:6] == ["coder", "2", "40.0%", "2", "100.0%", "[34.2%, 100.0%]"]
    success = cells(section(page, "success"))
    assert success[16:22] == ["math", "frontier", "2", "1", "50.0%", "[9.5%, 90.5%]"]
    latency = cells(section(page, "latency"))
    assert latency[:7] == ["coder", "2", "150.0", "150.0", "190.0", "195.0", "199.0"]
    classifier = cells(section(page, "classifier"))
    assert classifier[:9] == ["keywords", "2", "40.0%", "5", "40.0%", "0.360", "0.038", "2", "50.0%"]
    confusion = section(page, "confusion")
    assert "3 labelled requests; accuracy 66.7%" in confusion
    assert cells(confusion)[:10] == ["chat", "1", "0", "0", "100.0%", "coding", "0", "1", "0", "100.0%"]
    calibration = section(page, "calibration")
    assert "3 decisions of the learned router" in calibration and "Brier score 0.1408" in calibration
    assert "expected calibration error 0.3167" in calibration
    importance = section(page, "importance")
    assert "permutation importance" in importance and "no data in window" in importance
    assert "the registry is needed" in importance
    assert "no data in window" in section(page, "ab") and "no data in window" in section(page, "learning")
    assert [c for c in cells(section(page, "recent")) if re.fullmatch(r"r\d", c)] == ["r5", "r4", "r3", "r2", "r1"]
    analysis = json.loads(document.read_text())
    assert analysis["totals"]["requests"] == 5 and analysis["confusion"]["counts"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_report_on_an_empty_window_says_so_in_every_section(tmp_path: Path) -> None:
    populated_store(tmp_path / "autoroute.db").close()
    out = tmp_path / "report.html"
    assert main(["report", "--html", str(out), "--data-dir", str(tmp_path), "--since", "1h"]) == 0
    page = out.read_text()
    for key in ("traffic", "models", "success", "latency", "classifier", "confusion", "calibration", "importance",
                "ab", "learning", "recent"):  # fmt: skip
        assert "no data in window" in section(page, key), key
    assert "<img" not in page


def test_report_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    assert "give --html OUT" in capsys.readouterr().err
    assert main(["report", "--html", str(tmp_path / "r.html"), "--data-dir", str(tmp_path)]) == 2
    assert "no store at" in capsys.readouterr().err and not (tmp_path / "autoroute.db").exists()
    assert main(["report", "--html", "x.html", "--data-dir", str(tmp_path), "--since", "soon"]) == 2
    assert "--since 'soon'" in capsys.readouterr().err


def test_report_ab_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populated_store(tmp_path / "autoroute.db").close()
    assert main(["report", "ab", "--data-dir", str(tmp_path), "--since", "7d"]) == 0
    assert "A/B report: 0 decisions in the test" in capsys.readouterr().out


def test_top_shows_the_cascade_the_layers_and_the_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populated_store(tmp_path / "autoroute.db", now=time.time()).close()
    assert main(["top", "-w", "1", "--data-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text
    assert text.startswith("autoroute top: last 1 h")
    assert "requests 5   success 80.0% [38-96]   fallbacks 1   spend $0.013500" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    cascade = text.split("Cascade: requests per deciding layer\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in cascade] == ["keywords", "static_embedding", "knn", "fallback"]
    assert cascade[0].split()[-2:] == ["2", "40.0%"] and "█" * 11 in cascade[0]
    assert cascade[2].split()[-2:] == ["0", "0.0%"] and "█" not in cascade[2]
    performance = text.split("Per-layer performance\n")[1].split("\n\n")[0].splitlines()
    assert performance[1].split()[:6] == ["keywords", "5", "2", "40.0%", "0.360", "0.038"]
    assert performance[1].split()[6:] == ["50.0%", "[9-91]", "(2)"]
    assert performance[3].split()[:3] == ["knn", "0", "0"] and "(no labels)" in performance[3]
    coder = lines["coder"].split()
    assert coder[:3] == ["coder", "2", "40.0%"] and coder[-6:] == ["2", "100.0%", "[34-100]", "150", "195", "$0.003000"]
    assert lines["mathematician"].split()[1:3] == ["0", "0.0%"]


def test_top_live_redraws_a_bounded_number_of_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populated_store(tmp_path / "autoroute.db", now=time.time()).close()
    argv = ["top", "--live", "--iterations", "2", "--interval", "0.01", "--data-dir", str(tmp_path)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("autoroute top: last 1 h") == 2 and "\x1b" not in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_frames_replace_each_other_on_a_terminal_and_ctrl_c_ends_cleanly() -> None:
    frames = iter(["one", "two"])

    def frame() -> str:
        try:
            return next(frames)
        except StopIteration:
            raise KeyboardInterrupt from None

    out, pauses = Terminal(), []
    assert run_top(frame, out, live=True, interval_s=3.0, sleep=pauses.append) == 0
    assert out.getvalue() == f"{CLEAR}one\n{CLEAR}two\n\n" and pauses == [3.0, 3.0]
    once = Terminal()
    assert run_top(lambda: "still", once) == 0 and once.getvalue() == "still\n"  # not live: no escape codes

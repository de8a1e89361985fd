"""Run the fault suite and write what it measured: docs/reliability.json, and the table of docs/RELIABILITY.md.

    python -m tests.faults.report                 # the suite (its wall time is in the JSON)
    python -m tests.faults.report --durability    # and the kill -9 feedback test, which takes minutes more

Every figure in the table comes from the JSON this writes (each case's `figures` fixture); nothing is typed in by
hand. The table is rewritten between the markers of docs/RELIABILITY.md; the prose around it is not touched.
When a case fails, nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
JSON_PATH = REPO / "docs" / "reliability.json"
DOC_PATH = REPO / "docs" / "RELIABILITY.md"
START, END = "<!-- fault table: written by python -m tests.faults.report -->", "<!-- end of fault table -->"
GROUPS = ("auth", "ssrf", "upstream", "streaming", "store", "config", "contract", "load")
DURABILITY_TEST = "tests/e2e/test_feedback_durability.py::test_acknowledged_feedback_survives_kill_9"
_DURABILITY_LINE = re.compile(r"(\d+) posts acknowledged over (\d+) kills, (\d+) missing")


def _env(figures: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    if figures is not None:
        env["AUTOROUTE_FIGURES"] = str(figures)
    return env


def run_suite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.json"
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider"],
                              cwd=REPO, env=_env(figures))  # fmt: skip
        wall = time.monotonic() - started
        measured: dict[str, Any] = json.loads(figures.read_text()) if figures.exists() else {"cases": []}
    failed = [c["test"] for c in measured["cases"] if c.get("outcome") != "passed"]
    if done.returncode != 0 or failed:
        raise SystemExit(f"the fault suite failed ({failed or done.returncode}); nothing written")
    measured["suite_wall_s"] = round(wall, 1)
    return measured


def run_durability() -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", DURABILITY_TEST, "-q", "-s", "-p", "no:cacheprovider"],
                          cwd=REPO, env=_env(), capture_output=True, text=True)  # fmt: skip
    match = _DURABILITY_LINE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"the durability test failed; nothing written:\n{done.stdout[-3000:]}")
    acknowledged, kills, missing = map(int, match.groups())
    return {"test": DURABILITY_TEST, "command": "python -m tests.faults.report --durability",
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "acknowledged": acknowledged,
            "kills": kills, "missing": missing, "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(measured: dict[str, Any]) -> str:
    rows: dict[str, list[str]] = {group: [] for group in GROUPS}
    for case in measured["cases"]:
        test = f"`{case['file']}::{case['test']}`"
        rows[case["group"]].append(f"| {case['case'].replace('_', ' ')} | {case['group']} | {_cell(case['checks'])} "
                                   f"| {_cell(case['figure'])} | {test} |")  # fmt: skip
    durability = measured.get("durability")
    if durability:
        figure = (
            f"{durability['missing']} of {durability['acknowledged']:,} acknowledged posts lost over "
            f"{durability['kills']} kill -9 in {durability['wall_s']} s (`{durability['command']}`, "
            f"{durability['measured_at'][:10]})"
        )
    else:
        figure = "(run `python -m tests.faults.report --durability`)"
    rows["store"].append(f"| kill -9 durability | store | Feedback answered 200 is in the store after the gateway is "
                         f"killed with SIGKILL mid-traffic and restarted, cycle after cycle. | {figure} | "
                         f"`{DURABILITY_TEST}` (not run by the suite) |")  # fmt: skip
    machine = measured["machine"]
    cases = sum(len(r) for r in rows.values()) - 1
    lines = [
        START,
        f"{cases} cases, one test each, plus kill -9 "
        f"durability. Measured {measured['measured_at'][:10]} on {machine['cpus']} CPUs (load average "
        f"{machine['load_avg_1m_at_end']} at the end), Python {machine['python']}; the suite took "
        f"{measured['suite_wall_s']} s.",
        "",
        "| case | group | what is checked | figure | test |",
        "|---|---|---|---|---|",
        *(row for group in GROUPS for row in rows[group]),
        END,
    ]  # fmt: skip
    return "\n".join(lines)


def write_doc(measured: dict[str, Any]) -> None:
    text = DOC_PATH.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    DOC_PATH.write_text(text[:start] + table(measured) + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--durability", action="store_true", help="also run the kill -9 feedback test (minutes)")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the JSON, run nothing")
    args = parser.parse_args(argv)
    previous = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    if args.table_only:
        measured = previous
    else:
        measured = run_suite()
        durability = run_durability() if args.durability else previous.get("durability")
        if durability:
            measured["durability"] = durability
        JSON_PATH.write_text(json.dumps(measured, indent=2) + "\n")
    write_doc(measured)
    written = "the table of" if args.table_only else f"{JSON_PATH.relative_to(REPO)} and the table of"
    print(f"wrote {written} {DOC_PATH.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

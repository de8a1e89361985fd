"""What the nested-CV table commands share: their common arguments and rewriting a table between two doc markers."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cv_arguments(description: str, sets: Sequence[str], seeds: Sequence[int]) -> argparse.ArgumentParser:
    """The offline environment, and the arguments of a command that runs 5-fold CV over routing sets and seeds."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "routing")
    parser.add_argument("--data-dir", type=Path, default=Path("autoroute-data"), help="holds the static table")
    parser.add_argument("--sets", nargs="+", default=list(sets))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(seeds))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--render-only", action="store_true", help="rewrite the doc's table from the JSON alone")
    return parser


def write_between(doc: Path, start: str, end: str, table: str) -> None:
    """Replace what lies between the markers `start` and `end` in `doc` by `table`."""
    text = doc.read_text()
    begin, finish = text.index(start) + len(start), text.index(end)
    doc.write_text(text[:begin] + "\n" + table + "\n" + text[finish:])


def merge_row(path: Path, keys: Sequence[str], row: Any) -> dict[str, Any]:
    """Set `row` at `keys` in the JSON file at `path` and write it back; the file is read again first, so runs of
    different sets may share it (one process per set). Returns the merged results."""
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    node = results
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = row
    path.write_text(json.dumps(results, indent=1) + "\n")
    return results

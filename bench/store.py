"""The feedback store: rows/s of the batched writer, the cost of Recorder.record() on the request path, and the time
`autoroute train` takes on 100k logged, feedback-labelled decisions.

    .venv/bin/python bench/store.py --json docs/perf/store.json

(a) SQLiteStore.write_batch straight, in batches of the recorder's default size; (b) the same rows through the
Recorder (enqueue on the loop, batches written in a worker thread) until flushed; (c) record() timed one call at a
time while the writer runs; (d) `--rows` decisions with a performance row and a feedback score each, written into a
fresh store with real prompts (shared/data/tasks), then `autoroute train` run on it as a user would. Temp files only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

from proxy.events import DecisionRecord, FeedbackRecord, PerformanceRecord, Record  # noqa: E402
from proxy.recorder import Recorder  # noqa: E402
from proxy.store import SQLiteStore  # noqa: E402
from router_plugins.datadir import DataDir  # noqa: E402

PROMPTS = h.REPO.parent / "shared" / "data" / "tasks" / "train.jsonl"
MODELS = ("frontier", "mini", "coder", "mathematician", "local-small")
TASKS = ("coding", "math", "chat", "writing", "reasoning")
LAYER_ATTEMPTS = [
    {"layer": "keywords", "task": "coding", "confidence": 0.7, "threshold": 0.55, "accepted": True, "latency_ms": 0.05,
     "detail": "matched: function, python"},
]  # fmt: skip
ALTERNATIVES = [
    {"model": m, "utility": 0.8 - i * 0.05, "quality": 0.8, "cost_per_1k": 0.001, "latency_ms": 900, "source": "rule"}
    for i, m in enumerate(MODELS)
]  # fmt: skip


def load_prompts() -> list[str]:
    if not PROMPTS.exists():
        return ["Write a Python function that merges two sorted lists.", "What is the capital of Australia?"]
    with PROMPTS.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"][:500] for line in lines if line.strip()]


def records(n: int, prompts: list[str], *, feedback: bool, seed: int = 0) -> list[Record]:
    """n requests: a decision and a performance row each (and a feedback score when asked), like the gateway logs."""
    rng = random.Random(seed)
    now = time.time()
    out: list[Record] = []
    for i in range(n):
        rid = f"ar-bench-{seed}-{i:08d}"
        model, task = MODELS[i % len(MODELS)], TASKS[rng.randrange(len(TASKS))]
        text = prompts[i % len(prompts)]
        if i >= len(prompts):
            text = f"{text} (variant {i // len(prompts)})"
        out.append(DecisionRecord(
            request_id=rid, created_at=now + i * 1e-3, requested_model="auto", preference="balanced", task=task,
            task_confidence=0.8, classification_layer="keywords", needs_clarification=False,
            layer_attempts=LAYER_ATTEMPTS, selected_model=model, routed_model=model,
            selection_reason="static rules: best utility", alternatives=ALTERNATIVES, router_name="static-rules",
            router_version="bench", propensity=1.0, stream=False, status="success", attempts=1,
            prompt_chars=len(text), prompt_text=text,
        ))  # fmt: skip
        out.append(PerformanceRecord(
            request_id=rid, created_at=now + i * 1e-3, attempt=1, model=model, task=task, outcome="success",
            latency_ms=rng.uniform(200, 2000), ttft_ms=rng.uniform(50, 500), prompt_tokens=len(text) // 4,
            completion_tokens=rng.randrange(20, 400), cost_usd=rng.uniform(1e-5, 1e-2), cost_source="litellm",
        ))  # fmt: skip
        if feedback:
            score = min(1.0, max(0.0, rng.gauss(0.5 + 0.1 * (MODELS.index(model) % 3), 0.25)))
            out.append(FeedbackRecord(rid, now + i * 1e-3, score, None, None, "api"))
    return out


def bench_writer(n: int, batch: int, prompts: list[str], workdir: Path) -> dict[str, Any]:
    rows = records(n, prompts, feedback=False, seed=1)
    store = SQLiteStore(workdir / "writer.db")
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.write_batch(rows[i : i + batch])
    elapsed = time.perf_counter() - started
    store.close()
    return {"rows": len(rows), "batch": batch, "seconds": elapsed, "rows_per_s": len(rows) / elapsed}


async def bench_recorder(n: int, prompts: list[str], workdir: Path) -> dict[str, Any]:
    """The same rows enqueued through the Recorder as fast as the loop allows, until all are written."""
    rows = records(n, prompts, feedback=False, seed=2)
    store = SQLiteStore(workdir / "recorder.db")
    recorder = Recorder(store, queue_size=len(rows) + 1)
    await recorder.start()
    started = time.perf_counter()
    for i, rec in enumerate(rows):
        recorder.record(rec)
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the writer take batches, as a busy request path would
    enqueued = time.perf_counter() - started
    await recorder.flush()
    elapsed = time.perf_counter() - started
    await recorder.stop()
    store.close()
    stats = recorder.stats
    return {"rows": len(rows), "enqueue_s": enqueued, "seconds": elapsed, "rows_per_s": len(rows) / elapsed,
            "written": stats.written, "dropped": stats.dropped, "lost": stats.lost, "batches": stats.batches}  # fmt: skip


async def bench_enqueue(n: int, prompts: list[str], workdir: Path) -> dict[str, Any]:
    """record() timed call by call (a decision and a performance record per request) while the writer runs."""
    rows = records(n // 2, prompts, feedback=False, seed=3)
    store = SQLiteStore(workdir / "enqueue.db")
    recorder = Recorder(store)  # the gateway's defaults: queue 10,000, batches of 500, 200 ms
    await recorder.start()
    timings: list[float] = []
    clock = time.perf_counter
    for i, rec in enumerate(rows):
        t0 = clock()
        recorder.record(rec)
        timings.append(clock() - t0)
        if i % 50 == 49:
            await asyncio.sleep(0.005)  # <= 10k records/s, a busy gateway's rate (2 records a request)
    await recorder.stop()
    store.close()
    us = [t * 1e6 for t in timings]
    return {"calls": len(us), "p50_us": h.percentile(us, 50), "p99_us": h.percentile(us, 99),
            "max_us": max(us), "mean_us": sum(us) / len(us), "dropped": recorder.stats.dropped}  # fmt: skip


def bench_training(n: int, prompts: list[str], workdir: Path, folds: int, timeout_s: float) -> dict[str, Any]:
    data_dir = h.prepare_data_dir(workdir / "train-data")
    for artifact in DataDir(h.BENCH_DATA).artifacts.glob("static-embedding-*.npz"):
        shutil.copy2(artifact, DataDir(data_dir).path(artifact.name))
    rows = records(n, prompts, feedback=True, seed=4)
    store = SQLiteStore(DataDir(data_dir).db)
    started = time.perf_counter()
    for i in range(0, len(rows), 500):
        store.write_batch(rows[i : i + 500])
    write_s = time.perf_counter() - started
    store.close()
    config = workdir / "train.yaml"
    config.write_text((h.REPO / "bench" / "overhead.yaml").read_text().replace("{UPSTREAM}", "http://127.0.0.1:9/v1"))
    command = [h.PYTHON, "-m", "proxy.cli", "train", "--config", str(config), "--data-dir", str(data_dir),
               "--folds", str(folds)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=h.REPO, env=h.env(), capture_output=True, text=True, timeout=timeout_s)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"autoroute train failed: {done.stderr[-3000:]}")
    report = json.loads(done.stdout[done.stdout.index("{") :])
    return {"requests": n, "rows_written": len(rows), "write_s": write_s, "write_rows_per_s": len(rows) / write_s,
            "folds": folds, "seconds": elapsed, "trained_on": report.get("prompts"),
            "reported_seconds": report.get("seconds")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writer-requests", type=int, default=25_000, help="requests (2 rows each) for (a) and (b)")
    parser.add_argument("--enqueue-calls", type=int, default=20_000)
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 5],
                        help="`autoroute train --folds` values to time (0: fit only; 5: the CLI's default, CV first)")
    parser.add_argument("--train-timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    prompts = load_prompts()
    results: dict[str, Any] = {"machine": h.machine(), "settings": {k: str(v) for k, v in vars(args).items()}}
    workdir = Path(tempfile.mkdtemp(prefix="autoroute-bench-store-"))
    try:
        results["writer"] = bench_writer(args.writer_requests, 500, prompts, workdir)
        results["recorder"] = asyncio.run(bench_recorder(args.writer_requests, prompts, workdir))
        results["enqueue"] = asyncio.run(bench_enqueue(args.enqueue_calls, prompts, workdir))
        results["training"] = [bench_training(args.train_rows, prompts, workdir / f"f{f}", f, args.train_timeout)
                               for f in args.folds]  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    h.write_json(args.json, results)


def table(r: dict[str, Any]) -> str:
    w, rec, e = r["writer"], r["recorder"], r["enqueue"]
    lines = [
        f"{r['machine']['cpus']} CPUs, load average at start {r['machine']['load_avg_1m_at_start']:.2f}",
        f"writer, SQLiteStore.write_batch: {w['rows']} rows in batches of {w['batch']}: {w['seconds']:.2f} s, "
        f"{w['rows_per_s']:,.0f} rows/s",
        f"writer through the Recorder: {rec['rows']} rows: {rec['seconds']:.2f} s, {rec['rows_per_s']:,.0f} rows/s "
        f"(enqueued in {rec['enqueue_s']:.2f} s; {rec['batches']} batches, dropped {rec['dropped']}, lost {rec['lost']})",
        f"Recorder.record(): {e['calls']} calls: p50 {e['p50_us']:.1f} us, p99 {e['p99_us']:.1f} us, max "
        f"{e['max_us']:.0f} us, mean {e['mean_us']:.1f} us (dropped {e['dropped']})",
    ]  # fmt: skip
    for t in r["training"]:
        lines.append(
            f"autoroute train --folds {t['folds']} on {t['requests']:,} logged requests with feedback: "
            f"{t['seconds']:.1f} s (trained on {t['trained_on']}; the {t['rows_written']:,} rows were written in "
            f"{t['write_s']:.1f} s, {t['write_rows_per_s']:,.0f} rows/s)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

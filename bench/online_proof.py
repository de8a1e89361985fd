"""Online proof of the learning loop: the real gateway, the replay upstream and the real client, from priors only.

    python bench/online_proof.py --json docs/online_proof.json

For each set (RouterBench, LLMRouter train streams), one run: start `autoroute replay-upstream` and `autoroute serve` with the
set's example registry (every model at the same prior, no rules) plus an A/B split: half of `auto` traffic served by
static rules (control), half by the win-rate router (treatment: Thompson exploration, recency-weighted win rates
recomputed every second from the feedback the driver posts). Reports per arm quality and cost, the learning curve
(treatment − control quality per window) over the first `--drift-at` events; then drift: from that event on the most
served model has every answer scored 0, and the report counts the events until its share of the treatment arm's
last 20 events falls to a third of what it was in the 200 events before. Servers listen on 127.0.0.1 only; every run is bounded in events and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "routing"
SETS = {"routerbench": "replay-routerbench.yaml", "llmrouter": "replay-llmrouter.yaml"}
LEARNING = """
router:
  classifier:
    transformer_knn: {{enabled: false}}
    torch_head: {{enabled: false}}
learning:
  chain: [{chain}]
  aggregate_interval_s: 1
  train_interval_s: {train_interval}
  min_new_feedback: 150
  winrate: {{exploration: {exploration}, half_life_events: {half_life}, prior_strength: 2}}
  ab: {{mode: split, treatment_share: 0.5}}
"""


def run_set(name: str, events: int, drift_at: int | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from proxy.evaluation.ab import ab_report, format_ab_report
    from proxy.replay.dataset import read_records
    from proxy.replay.driver import OnlineSettings, drive
    from proxy.store import SQLiteStore
    from router_plugins.datadir import DataDir

    data = DATA / name / "train.jsonl"
    upstream_port, gateway_port = h.free_port(), h.free_port()
    config_text = (REPO / "examples" / SETS[name]).read_text().replace("127.0.0.1:4020", f"127.0.0.1:{upstream_port}")
    config_text = config_text.split("\nstorage:")[0] + LEARNING.format(
        exploration=args.exploration, half_life=args.half_life, train_interval=args.train_interval,
        chain="learned, winrate, static-rules" if args.train_interval else "winrate, static-rules")  # fmt: skip
    run_dir = workdir / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_text)
    table, artifacts = DataDir(REPO / "autoroute-data").artifacts, DataDir(run_dir / "data").artifacts
    if table.exists():  # the static table, when built already, saves the first start ~30 s
        shutil.copytree(table, artifacts, ignore=shutil.ignore_patterns("learned-*", "task-*"))
    cli = [sys.executable, "-m", "proxy.cli"]
    drift = None if drift_at is None else (args.drift_model or "*", drift_at)
    with h.Servers(workdir=run_dir, keep=True) as servers:
        servers.start("upstream", [*cli, "replay-upstream", "--data", str(data), "--port", str(upstream_port)],
                      upstream_port, "/v1/models")  # fmt: skip
        servers.start("gateway", [*cli, "serve", "--config", str(run_dir / "config.yaml"), "--port", str(gateway_port),
                                  "--data-dir", str(run_dir / "data")], gateway_port, "/health/readiness")  # fmt: skip
        settings = OnlineSettings(f"http://127.0.0.1:{gateway_port}", data, events, concurrency=args.concurrency,
                                  window=args.window, drift=drift)  # fmt: skip
        report = asyncio.run(asyncio.wait_for(drive(settings, read_records(data, events)), args.max_seconds))
    ok = [e for e in report.events if e.ok]
    store = SQLiteStore(DataDir(run_dir / "data").db)
    try:
        learning_events = [{k: e[k] for k in ("kind", "version", "scores", "reason")} for e in store.learning_events()]
        before_drift = {e.request_id for e in ok if drift is None or e.index < drift[1]}
        statistics = ab_report([r for r in store.ab_outcomes() if r["request_id"] in before_drift], metric="quality")
    finally:
        store.close()
    print(format_ab_report(statistics))
    if drift is not None and drift[0] == "*":
        served = Counter(e.model for e in ok if e.index < drift[1] and e.arm == "treatment")
        drift = (served.most_common(1)[0][0], drift[1])
    summary = summarise(ok, args.window, drift)
    summary["learning_events"] = list(reversed(learning_events))
    summary["report_ab"] = statistics
    return summary


def summarise(events: list[Any], window: int, drift: tuple[str, int] | None) -> dict[str, Any]:
    def arm_stats(rows: list[Any]) -> dict[str, float]:
        if not rows:
            return {"events": 0}
        return {"events": len(rows), "quality": round(sum(e.quality for e in rows) / len(rows), 4),
                "cost_per_event": sum(e.cost_usd or 0.0 for e in rows) / len(rows)}  # fmt: skip

    measured = [e for e in events if drift is None or e.index < drift[1]]
    out: dict[str, Any] = {"arms": {arm: arm_stats([e for e in measured if e.arm == arm]) for arm in ("control", "treatment")}}
    curve = []
    for start in range(0, max(e.index for e in events) + 1, window):
        part = [e for e in events if start <= e.index < start + window]
        t = [e.quality for e in part if e.arm == "treatment"]
        c = [e.quality for e in part if e.arm == "control"]
        if t and c:
            curve.append({"events": start + window, "treatment": round(sum(t) / len(t), 4), "control": round(sum(c) / len(c), 4),
                          "difference": round(sum(t) / len(t) - sum(c) / len(c), 4)})  # fmt: skip
    out["curve"] = curve
    treatment = [e for e in events if e.arm == "treatment"]
    out["treatment_models"] = Counter(e.model for e in treatment).most_common(5)
    if drift is not None:
        model, at = drift
        before = [e for e in events if at - 200 <= e.index < at]
        treatment_before = [e for e in before if e.arm == "treatment"]
        share_before = sum(e.model == model for e in treatment_before) / max(len(treatment_before), 1)
        after = sorted((e for e in treatment if e.index >= at), key=lambda e: e.index)
        moved_at = None
        for k in range(len(after)):
            recent = after[max(0, k - 19): k + 1]  # the last 20 treatment events
            if len(recent) == 20 and sum(e.model == model for e in recent) / 20 <= share_before / 3:
                moved_at = after[k].index - at
                break
        out["drift"] = {"model": model, "at_event": at, "share_before": round(share_before, 3), "events_to_move": moved_at}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--events", type=int, default=1600)
    parser.add_argument("--drift-at", type=int, default=1000, help="A/B numbers are measured before this event")
    parser.add_argument("--drift-model", help="the model whose quality drops (default: the treatment arm's favourite)")
    parser.add_argument("--exploration", type=float, default=0.15)
    parser.add_argument("--half-life", type=float, default=40.0)
    parser.add_argument("--train-interval", type=float, default=0.0,
                        help="seconds between trainer runs (0: the win-rate router alone, no learned router)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on each run")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    results: dict[str, Any] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="online-proof-") as tmp:
        for name in args.sets:
            ab = run_set(name, args.events, args.drift_at, args, Path(tmp))
            results[name] = ab
            c, t = ab["arms"]["control"], ab["arms"]["treatment"]
            print(f"{name}: control q {c['quality']:.3f} cost/event ${c['cost_per_event']:.6f} | treatment q "
                  f"{t['quality']:.3f} cost/event ${t['cost_per_event']:.6f} | Δq {t['quality'] - c['quality']:+.3f}")
            for point in ab["curve"]:
                print(f"  after {point['events']:5d} events: treatment {point['treatment']:.3f} control "
                      f"{point['control']:.3f} Δ {point['difference']:+.3f}")
            print(f"  drift: {ab['drift']}")
            for event in ab["learning_events"]:
                print(f"  trainer: {event['kind']} {event['version']}: {event['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

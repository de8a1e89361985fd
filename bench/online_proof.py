"""Online proof of the learning loop at matched cost: static rules against the learned loop, on held-out prompts.

    python bench/online_proof.py --json docs/online_proof.json --plot docs/online_proof.png

For each set (RouterBench, LLMRouter train streams):

1. **Split by prompt.** Each record goes to the tuning slice when the hash of its prompt text (`unit_hash`, the
   A/B split's blake2b) is below `--tuning-share`, else to the held-out slice; duplicated prompts land together.
   Nothing measured on the held-out slice chooses anything.
2. **Priors from the tuning slice.** Every model's registry prior is its mean recorded quality on the tuning slice
   (`default`), and per task label of the set (coding, reasoning, ...) its mean on that task: what an operator who
   benchmarked the models would write. Both arms start from these priors and the `balanced` preference.
3. **Static arm:** a gateway with `learning.chain: [static-rules]`, no exploration: the operator's configuration.
   **Learned arm:** a gateway with `[learned, winrate, static-rules]`, exploration with the propensity floor, the
   trainer every few seconds behind the promotion gate's defaults (ESS >= 200, per-model evidence, bounds).
4. **Cost matched on the tuning slice.** The static arm runs on the tuning slice; then the learned arm, for each
   exploration setting of `--explore` and each `balanced` cost weight of `--cost-weights` in increasing order until
   its mean cost per event is at most the static arm's there, less `--cost-margin` (10%: one run's cost varies by
   about that much from run to run). Of the matching settings the one with the best tuning quality is used on the
   held-out slice (none matching: the cheapest, and the report says so). Two gateways rather than one A/B split,
   because both arms of a split share the request's preference, so their cost weights could not differ.
5. **Held out:** both arms run on the same held-out stream, in the same order (`--events` measured events; then
   `--drift-events` more, cycling over the slice when it is shorter, during which the learned arm's favourite model
   has every answer scored 0 in both arms). Reported: quality and cost per arm, the cost ratio (paired bootstrap
   interval), Δquality (Welch's interval; the paired interval too, since both arms saw the same prompts), curves
   per window, the events until the learned arm's share of the degraded model falls to a third of what it was in
   the 200 events before, the trainer's decisions (`learning_events`), and what a router that knew the recorded
   outcomes would reach at the static arm's cost, choosing per source of the set or per prompt.

Each run is its own gateway and data directory behind one replay upstream per set, on 127.0.0.1 only; every run is
bounded in events and seconds. Quality and cost are the set's recorded ones, so CPU contention changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
import _online_stats as st  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "routing"
SETS = {"routerbench": "replay-routerbench.yaml", "llmrouter": "replay-llmrouter.yaml"}
UPSTREAM = "127.0.0.1:4020"
CLASSIFIER = {"transformer_knn": {"enabled": False}, "torch_head": {"enabled": False}}


@dataclass(frozen=True)
class Arm:
    """One gateway's routing: static rules alone, or the learning loop with its exploration and cost weight."""

    name: str
    cost_weight: float = 0.15
    """The `balanced` preference's cost weight (the registry default is 0.15)."""
    exploration: float = 0.0
    floor: float = 0.0
    half_life: float = 40.0
    prior_strength: float = 4.0
    train_interval_s: float = 5.0

    def learning(self) -> dict[str, Any]:
        if self.name == "static":
            return {"chain": ["static-rules"], "explore": "off"}
        return {
            "chain": ["learned", "winrate", "static-rules"], "aggregate_interval_s": 1,
            "train_interval_s": self.train_interval_s, "min_new_feedback": 150,
            "winrate": {"exploration": self.exploration, "propensity_floor": self.floor,
                        "half_life_events": self.half_life, "prior_strength": self.prior_strength},
        }  # fmt: skip


def split_by_prompt(records: Sequence[Any], tuning_share: float) -> tuple[list[Any], list[Any]]:
    from router_plugins.assembly import unit_hash

    tuning = [r for r in records if unit_hash(r.prompt) < tuning_share]
    held_out = [r for r in records if unit_hash(r.prompt) >= tuning_share]
    return tuning, held_out


def priors(records: Sequence[Any], models: Sequence[str], tasks: set[str]) -> dict[str, dict[str, float]]:
    """Each model's mean recorded quality on `records`, overall (`default`) and per task label the registry knows."""
    out: dict[str, dict[str, float]] = {}
    for model in models:
        scores: dict[str, list[float]] = {"default": []}
        for record in records:
            outcome = record.outcome(model)
            if outcome is None:
                continue
            scores["default"].append(outcome.quality)
            if record.task in tasks:
                scores.setdefault(record.task, []).append(outcome.quality)
        out[model] = {task: round(float(np.mean(values)), 3) for task, values in scores.items() if values}
    return out


def registry_yaml(name: str, upstream_port: int, model_priors: dict[str, dict[str, float]], arm: Arm) -> str:
    from router_plugins.registry import load_registry

    example = REPO / "examples" / SETS[name]
    config = yaml.safe_load(example.read_text())
    for model in config["models"]:
        model["litellm_params"]["api_base"] = model["litellm_params"]["api_base"].replace(
            UPSTREAM, f"127.0.0.1:{upstream_port}"
        )
        model["quality"] = model_priors[model["name"]]
    preferences = {k: asdict(v) for k, v in load_registry(example).preferences.items()}  # the example's: the defaults
    # Replayed latencies say nothing about the models: neither arm weighs them.
    preferences["balanced"] = {"quality_weight": 1.0, "cost_weight": arm.cost_weight, "latency_weight": 0.0}
    config.pop("storage", None)
    config.update(preferences=preferences, router={"classifier": CLASSIFIER}, learning=arm.learning())
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Run:
    arm: Arm
    events: list[Any]
    decisions: dict[str, dict[str, Any]]
    """request id -> the logged decision (task, router)."""
    learning_events: list[dict[str, Any]]
    seconds: float


class Bench:
    """One set: its replay upstream, and one fresh gateway and data directory per run."""

    def __init__(self, name: str, servers: h.Servers, workdir: Path, args: argparse.Namespace) -> None:
        from proxy.replay.dataset import read_model_names, read_records

        self.name, self.servers, self.workdir, self.args = name, servers, workdir, args
        self.data = DATA / name / "train.jsonl"
        self.records = read_records(self.data)
        self.models = read_model_names(self.data, self.records)
        with self.data.open(encoding="utf-8") as lines:
            self.sources = {str(row.get("id")): row.get("source") for row in map(json.loads, lines)}
        self.port = h.free_port()
        self.runs = 0
        servers.start(f"{name}-upstream", [h.PYTHON, "-m", "proxy.cli", "replay-upstream", "--data", str(self.data),
                                           "--port", str(self.port)], self.port, "/v1/models")  # fmt: skip

    def run(self, arm: Arm, records: Sequence[Any], priors_: dict[str, dict[str, float]],
            drift: tuple[str, int] | None = None) -> Run:  # fmt: skip
        from proxy.replay.driver import OnlineSettings, drive
        from proxy.store import SQLiteStore
        from router_plugins.classify.static_embedding import TABLE_FILE
        from router_plugins.datadir import DataDir

        self.runs += 1
        run_dir = self.workdir / f"{self.name}-{self.runs}-{arm.name}"
        data_dir = DataDir(run_dir / "data").ensure()
        table = next((DataDir(s).path(TABLE_FILE) for s in h.TABLE_SOURCES if DataDir(s).path(TABLE_FILE).exists()),
                     None)  # fmt: skip
        if table is not None:  # the static table, when built already, saves the first start ~30 s
            shutil.copy2(table, data_dir.path(TABLE_FILE))
        (run_dir / "config.yaml").write_text(registry_yaml(self.name, self.port, priors_, arm))
        port = h.free_port()
        command = [h.PYTHON, "-m", "proxy.cli", "serve", "--config", str(run_dir / "config.yaml"), "--port", str(port),
                   "--data-dir", str(data_dir.root), "--no-reload"]  # fmt: skip
        gateway = self.servers.start(f"{self.name}-{self.runs}-gateway", command, port, "/health/readiness")
        started = time.monotonic()
        try:
            settings = OnlineSettings(gateway.url, self.data, len(records), concurrency=self.args.concurrency,
                                      window=self.args.window, drift=drift)  # fmt: skip
            report = asyncio.run(asyncio.wait_for(drive(settings, list(records)), self.args.max_seconds))
        finally:
            h.stop(gateway)
        store = SQLiteStore(data_dir.db)
        try:
            decisions = {d["request_id"]: {"task": d["task"], "router": d["router_name"]}
                         for d in store.logged_decisions()}  # fmt: skip
            learning = [{k: e.get(k) for k in ("kind", "version", "reason", "scores")}
                        for e in reversed(store.learning_events())]  # fmt: skip
        finally:
            store.close()
        events = sorted(report.events, key=lambda e: e.index)
        failed = [e for e in events if not e.ok]
        if len(failed) > len(events) // 20:
            raise RuntimeError(f"{len(failed)} of {len(events)} events failed, e.g. {failed[0].error}")
        return Run(arm, events, decisions, learning, time.monotonic() - started)


def tune(bench: Bench, tuning: Sequence[Any], priors_: dict[str, dict[str, float]], args: argparse.Namespace
         ) -> dict[str, Any]:  # fmt: skip
    """The learned arm's exploration and cost weight, chosen on the tuning slice so its cost is at most static's."""
    stream = list(tuning[: args.events])
    static = st.arm_summary(bench.run(Arm("static"), stream, priors_).events)
    print(
        f"{bench.name} tuning ({len(stream)} events): static q {static['quality']:.3f} ${static['cost_per_event']:.6f}"
    )
    # One run's cost varies by about ±10% from run to run (exploration draws): the margin keeps the held-out cost at
    # or below the static arm's with that noise.
    budget = static["cost_per_event"] * (1.0 - args.cost_margin)
    grid = []
    for setting in args.explore:
        exploration, floor = (float(x) for x in setting.split(":"))
        for weight in sorted(args.cost_weights):
            arm = Arm("learned", weight, exploration, floor, args.half_life, args.prior_strength, args.train_interval)
            run = bench.run(arm, stream, priors_)
            result = {**st.arm_summary(run.events), "routers": st.routers(run, len(stream)),
                      "learning_events": dict(Counter(e["kind"] for e in run.learning_events))}  # fmt: skip
            matched = result["cost_per_event"] <= budget
            grid.append(
                {"exploration": exploration, "floor": floor, "cost_weight": weight, **result, "matched": matched}
            )
            print(f"  explore {exploration} floor {floor} cost weight {weight}: q {result['quality']:.3f} "
                  f"${result['cost_per_event']:.6f}{'  matched' if matched else ''}")  # fmt: skip
            if matched:
                break
    matching = [g for g in grid if g["matched"]]
    chosen = max(matching, key=lambda g: g["quality"]) if matching else min(grid, key=lambda g: g["cost_per_event"])
    settings = {k: chosen[k] for k in ("exploration", "floor", "cost_weight")}
    return {"events": len(stream), "static": static, "budget_per_event": budget, "grid": grid,
            "matched": bool(matching), "chosen": settings}  # fmt: skip


def evaluate(bench: Bench, held_out: Sequence[Any], priors_: dict[str, dict[str, float]], chosen: dict[str, float],
             args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    from proxy.replay.report import baselines

    total = args.events + args.drift_events
    stream = [held_out[i % len(held_out)] for i in range(total)]  # the drift phase cycles over a short slice
    arm = Arm("learned", chosen["cost_weight"], chosen["exploration"], chosen["floor"], args.half_life,
              args.prior_strength, args.train_interval)  # fmt: skip
    drift_at = args.events if args.drift_events else None
    learned = bench.run(arm, stream, priors_, None if drift_at is None else ("*", drift_at))
    favourite = Counter(e.model for e in learned.events if e.ok and e.index < args.events).most_common(1)[0][0]
    static = bench.run(Arm("static"), stream, priors_, None if drift_at is None else (favourite, drift_at))
    out = st.compare(static.events, learned.events, args.events, args.window, seed=args.seed)
    fixed = baselines(stream[: args.events], bench.models)
    singles = {m: b for m, b in fixed.items() if m != "oracle"}
    best = max(singles, key=lambda m: singles[m].mean_quality or 0.0)
    cheapest = min(singles, key=lambda m: singles[m].mean_cost or 0.0)
    out["references"] = {
        label: {
            "model": model,
            "quality": st.rounded(fixed[model].mean_quality),
            "cost_per_event": fixed[model].mean_cost,
        }
        for label, model in (("best_single", best), ("cheapest", cheapest), ("oracle", "oracle"))
    }
    out["ceilings_at_static_cost"] = ceilings(bench, stream[: args.events], out["arms"]["static"]["cost_per_event"])
    if drift_at is not None:
        out["drift"] = st.drift_summary(learned.events, static.events, favourite, drift_at, args.window)
    out["learned_routers"] = st.routers(learned, args.events)
    out["gateway_tasks"] = st.task_table(static.events, static.decisions, args.events)
    out["learning_events"] = learned.learning_events
    out["seconds"] = {"learned": round(learned.seconds, 1), "static": round(static.seconds, 1)}
    return out


def ceilings(bench: Bench, records: Sequence[Any], budget: float) -> dict[str, Any]:
    """What a router that knew the recorded outcomes could reach at the static arm's cost on the measured events:
    choosing one model per source of the set (ARC, MBPP, ...: finer than any task label), or per prompt (the oracle)."""

    def group(rows: Sequence[Any]) -> tuple[int, dict[str, tuple[float, float]]]:
        outcomes = {m: [o for r in rows if (o := r.outcome(m)) is not None] for m in bench.models}
        means = {m: (np.mean([o.quality for o in found]), np.mean([o.cost_usd or 0.0 for o in found]))
                 for m, found in outcomes.items() if found}  # fmt: skip
        return len(rows), {m: (float(q), float(c)) for m, (q, c) in means.items()}

    by_source: dict[str, list[Any]] = {}
    for record in records:
        by_source.setdefault(bench.sources.get(record.id) or "none", []).append(record)
    per_source = st.best_at_cost([group(rows) for rows in by_source.values()], budget)
    per_prompt = st.best_at_cost([group([r]) for r in records], budget)
    return {"sources": len(by_source), "per_source": per_source, "per_prompt": per_prompt}


def run_set(name: str, servers: h.Servers, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from router_plugins.registry import default_tasks

    bench = Bench(name, servers, workdir, args)
    tuning, held_out = split_by_prompt(bench.records, args.tuning_share)
    priors_ = priors(tuning, bench.models, {t.name for t in default_tasks()})
    result: dict[str, Any] = {"records": len(bench.records), "tuning_records": len(tuning),
                              "held_out_records": len(held_out), "priors": priors_}  # fmt: skip
    if args.cost_weight is not None:
        exploration, floor = (float(x) for x in args.explore[0].split(":"))
        result["tuning"] = {"chosen": {"exploration": exploration, "floor": floor, "cost_weight": args.cost_weight},
                            "given": True}  # fmt: skip
    else:
        result["tuning"] = tune(bench, tuning, priors_, args)
    if not args.tune_only:
        result.update(evaluate(bench, held_out, priors_, result["tuning"]["chosen"], args))
        print(st.format_set(name, result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--tuning-share", type=float, default=0.5, help="share of prompts (by hash) used for tuning")
    parser.add_argument("--events", type=int, default=1000, help="events measured per arm (and per tuning run)")
    parser.add_argument("--drift-events", type=int, default=300, help="events after the measured ones, under drift")
    parser.add_argument("--cost-weights", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    parser.add_argument(
        "--explore",
        nargs="+",
        default=["0.05:0.002", "0.1:0.005"],
        metavar="BUDGET:FLOOR",
        help="learning.winrate exploration budgets and propensity floors tried on the tuning slice",
    )
    parser.add_argument(
        "--cost-margin",
        type=float,
        default=0.1,
        help="matched: the learned arm's tuning cost is at most (1 - this) x the static arm's",
    )
    parser.add_argument("--cost-weight", type=float, help="skip tuning: this cost weight and the first --explore")
    parser.add_argument("--half-life", type=float, default=40.0)
    parser.add_argument("--prior-strength", type=float, default=4.0)
    parser.add_argument("--train-interval", type=float, default=5.0, help="seconds between trainer steps")
    parser.add_argument("--tune-only", action="store_true", help="run the tuning slice only (no held-out numbers)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap resampling")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound on each run")
    parser.add_argument("--json", type=Path, metavar="OUT")
    parser.add_argument("--plot", type=Path, metavar="PNG")
    args = parser.parse_args()
    started = time.monotonic()
    results: dict[str, Any] = {"command": " ".join(["python", "bench/online_proof.py", *sys.argv[1:]]),
                               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "machine": h.machine()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="online-proof-") as tmp, h.Servers(workdir=Path(tmp), keep=True) as servers:
        for name in args.sets:
            results[name] = run_set(name, servers, Path(tmp), args)
    results["seconds"] = round(time.monotonic() - started, 1)
    print(f"{results['seconds']:.0f} s in all")
    h.write_json(args.json, results)
    if args.plot and not args.tune_only:
        st.plot(results, args.sets, args.plot)


if __name__ == "__main__":
    main()

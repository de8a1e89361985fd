"""How long the learned router takes to retrain on 100,000 outcomes of 11 models (issue 16: within 60 s).

    OMP_NUM_THREADS=1 LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \\
      python bench/train_time.py --data-dir autoroute-data --json docs/perf/train_time.json

The prompts are real: every distinct prompt of the five routing sets and of the task-labelled files
(`../shared/data/routing/*/train.jsonl`, `../shared/data/tasks/{train,real_dev}.jsonl`), cycled to 100k rows; a
repeat carries a distinct trailing line, so no embedding is computed once and reused. The outcomes are drawn from a
fixed logistic model on the prompts' embeddings (their values do not change the work), one cost per row and model.

Timed, single-threaded (`OMP_NUM_THREADS=1`: the trainer shares the two cores with the request path):
`LearnedRouter.fit` as shipped (`learning.max_train_rows` = 50,000: a random half is fitted; `selection_rows` =
10,000) and with the lighter `CONFIGS["light"]`, each split into featurising (the base features) and the rest (on
the selection subsample: the format groups, each model's C, the low-rank structure, the scale on C and the cost
model chosen by inner CV; then the final fits on every row; `router_plugins/routers/fitting.py`). The machine's load
average at each start is recorded beside the times: other work on the two cores slows the fit, and the JSON says how
busy the machine was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = ("routerbench", "llmrouter", "routellm", "mmlu_pro", "alpaca_eval")
MODELS = 11
BUDGET_S = 60.0


def real_texts(rows: int) -> list[str]:
    from router_plugins.outcomes import load_outcomes

    texts: list[str] = []
    for name in SETS:
        texts += load_outcomes(DATA / "routing" / name / "train.jsonl").texts
    for name in ("train", "real_dev"):
        with open(DATA / "tasks" / f"{name}.jsonl") as handle:
            texts += [json.loads(line)["text"] for line in handle]
    distinct = list(dict.fromkeys(texts))
    return [distinct[i % len(distinct)] + ("" if i < len(distinct) else f"\n(#{i})") for i in range(rows)]


def synthetic_outcomes(texts: list[str], embed: Any) -> Any:
    from router_plugins.outcomes import OutcomeSet

    rng = np.random.default_rng(0)
    emb = embed(texts)
    truth = rng.normal(0, 3, (emb.shape[1], MODELS))
    logits = emb @ truth + rng.normal(0, 1, (len(texts), MODELS))
    quality = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    cost = np.outer([len(t) for t in texts], np.linspace(1e-8, 1e-6, MODELS)) + 1e-5
    models = [f"m{j}" for j in range(MODELS)]
    n = len(texts)
    return OutcomeSet([str(i) for i in range(n)], texts, [None] * n, ["synthetic"] * n, models, quality, cost, {})


CONFIGS: dict[str, dict[str, int]] = {"shipped": {}, "light": {"selection_rows": 3_000, "max_train_rows": 25_000}}
"""`learning` settings timed: the defaults, and a lighter pair an operator can set to retrain faster (its routing
quality on the five sets is not what docs/EVALUATION.md reports: those use every training row for their choices)."""


def timed_fit(data: Any, embed: Any, overrides: dict[str, int]) -> dict[str, Any]:
    from proxy.evaluation.offline import registry_for
    from router_plugins.routers import LearnedRouter, RouterContext

    spent = {"features_s": 0.0}

    class Timed(LearnedRouter):
        def features(self, texts: Any, tasks: Any) -> np.ndarray:
            started = time.perf_counter()
            try:
                return super().features(texts, tasks)
            finally:
                spent["features_s"] += time.perf_counter() - started

    registry = registry_for(data)
    registry = dataclasses.replace(registry, learning=dataclasses.replace(registry.learning, **overrides))
    router = Timed(registry, RouterContext(static_embed=embed))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    router.fit(data)
    total = time.perf_counter() - started
    return {
        "max_train_rows": registry.learning.max_train_rows, "selection_rows": registry.learning.selection_rows,
        "offered": router.offered, "fitted": router.trained_on,
        "total_s": round(total, 1), "features_s": round(spent["features_s"], 1),
        "selection_and_fits_s": round(total - spent["features_s"], 1),
        "C_chosen": dict(sorted({str(c): list(router.regularisation.values()).count(c)
                                 for c in router.regularisation.values()}.items())),
        "chosen": {k: router.fit_choices.get(k) for k in ("format_groups", "structure", "scale")},
        "load_average_at_start": round(load, 2), "within_budget": total <= BUDGET_S,
    }  # fmt: skip


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from router_plugins.classify.static_embedding import StaticEmbedder

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("autoroute-data"), help="holds the static table")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "perf" / "train_time.json")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    static = StaticEmbedder.load_or_build(args.data_dir)
    data = synthetic_outcomes(real_texts(args.rows), static.embed)
    out: dict[str, Any] = {"rows": args.rows, "models": MODELS, "budget_s": BUDGET_S,
                           "threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()}  # fmt: skip
    for name in args.configs:
        out[name] = timed_fit(data, static.embed, CONFIGS[name])
        print(name, json.dumps(out[name]), flush=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

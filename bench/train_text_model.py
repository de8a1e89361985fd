"""Fit the shipped text model (classifier layer 2) on the real-traffic train split, choosing everything on it.

    .venv/bin/python bench/train_text_model.py --json docs/classifier/text_model_training.json

Hyperparameters (the SVM's C, the weight of the start/end views, the NB-SVM's share), the softmax temperature and
the thresholds of the keyword and text-model layers are all chosen by grouped 5-fold cross-validation on the train
split (the same item in several languages stays in one fold); the test split is never read. The default taxonomy's
examples and the prompts written for this project (bench/data/authored/) are added to every training fold, never
scored. The final model is fitted on the whole train split plus those and written to router_plugins/data/text-model-v1.npz.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.real_prompts import group_key, load  # noqa: E402 - after the path set-up above
from router_plugins.classify.keywords import KeywordLayer  # noqa: E402
from router_plugins.classify.text_model import SHIPPED_FILE, focus  # noqa: E402
from router_plugins.classify.text_model_fit import TextModelTraining, fit_temperature, fit_text_model  # noqa: E402
from router_plugins.classify.training import registry_prompts  # noqa: E402
from router_plugins.classify.translation import asks_for_translation  # noqa: E402
from router_plugins.registry import default_tasks  # noqa: E402

AUTHORED = ROOT / "bench" / "data" / "authored"
"""Prompts written for this project in 20 languages, every task (training only; see its README)."""
GRID_C = (0.5, 1.0, 2.0)
GRID_EDGE = (1.0,)
"""0.7 and 1.4 were never better than 1.0 in the earlier searches (their JSON is in the git history)."""
GRID_NB = (0.0, 0.3, 0.5)
FOLDS = 5


def grouped_folds(groups: list[str], k: int) -> list[np.ndarray]:
    """Test indices of k folds; every group in exactly one, sizes balanced greedily (deterministic)."""
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    order = sorted(by_group.values(), key=lambda rows: (-len(rows), rows[0]))
    folds: list[list[int]] = [[] for _ in range(k)]
    for rows in order:
        min(folds, key=len).extend(rows)
    return [np.array(sorted(f)) for f in folds]


def choose_thresholds(probabilities: np.ndarray, tasks: list[str], keyword_verdicts: list[Any],
                      accept: list[set[str]], fallback: str) -> dict[str, Any]:
    """The keyword and text-model thresholds that make the cascade (keywords -> text model -> fallback) most
    accurate on out-of-fold predictions; ties go to the higher thresholds (fewer keyword decisions, more
    generalist fallbacks), and the precision of each layer's decisions is reported beside."""
    best: dict[str, Any] | None = None
    table = []
    top = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    for kw in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01):
        for tm in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
            decided_by, predicted = [], []
            for i, verdict in enumerate(keyword_verdicts):
                if verdict.task is not None and verdict.confidence >= kw:
                    decided_by.append("keywords"), predicted.append(verdict.task)
                elif confidence[i] >= tm:
                    decided_by.append("text_model"), predicted.append(tasks[top[i]])
                else:
                    decided_by.append("fallback"), predicted.append(fallback)
            right = np.array([p in a for p, a in zip(predicted, accept)])
            entry: dict[str, Any] = {"keywords": kw, "text_model": tm, "accuracy": round(float(right.mean()), 4)}
            for layer in ("keywords", "text_model", "fallback"):
                rows = np.array([d == layer for d in decided_by])
                entry[f"{layer}_share"] = round(float(rows.mean()), 4)
                entry[f"{layer}_precision"] = round(float(right[rows].mean()), 4) if rows.any() else None
            table.append(entry)
            if best is None or (entry["accuracy"], kw, tm) > (best["accuracy"], best["keywords"], best["text_model"]):
                best = entry
    assert best is not None
    return {"best": best, "grid": table}


def out_of_fold(rows: list[dict[str, Any]], extra: list[tuple[str, str]], tasks: list[str],
                training: TextModelTraining, folds: list[np.ndarray]) -> np.ndarray:  # fmt: skip
    margins = np.zeros((len(rows), len(tasks)))
    for test in folds:
        mask = np.ones(len(rows), bool)
        mask[test] = False
        texts = [r["text"] for r, m in zip(rows, mask) if m] + [t for t, _ in extra]
        labels = [r["task"] for r, m in zip(rows, mask) if m] + [task for _, task in extra]
        model = fit_text_model(texts, labels, tasks, training=training)
        margins[test] = model.margins([rows[i]["text"] for i in test])
    return margins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=SHIPPED_FILE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = load("train")
    task_types = default_tasks()
    tasks = [t.name for t in task_types]
    extra = [(p.text, p.task) for p in registry_prompts(task_types)]
    authored = [(r["text"], r["task"]) for path in sorted(AUTHORED.glob("*.jsonl"))
                for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["task"] in tasks]  # fmt: skip
    extra += authored
    accept = [set(r["accept"]) for r in rows]
    folds = grouped_folds([group_key(r["id"]) for r in rows], FOLDS)

    search = []
    for c, edge, nb in itertools.product(GRID_C, GRID_EDGE, GRID_NB):
        training = TextModelTraining(c=c, edge_weight=edge, nb_share=nb)
        margins = out_of_fold(rows, extra, tasks, training, folds)
        predicted = [tasks[i] for i in margins.argmax(axis=1)]
        score = float(np.mean([p in a for p, a in zip(predicted, accept)]))
        search.append({"c": c, "edge_weight": edge, "nb_share": nb, "cv_accuracy": round(score, 4), "margins": margins})
        print(f"C={c} edge={edge} nb={nb}: {score:.4f}", file=sys.stderr, flush=True)
    best = max(search, key=lambda s: s["cv_accuracy"])
    training = TextModelTraining(c=best["c"], edge_weight=best["edge_weight"], nb_share=best["nb_share"])
    # A prompt that accepts several labels ("write a brand name and explain its value": writing or knowledge) is
    # trained on the accepted label the out-of-fold model finds most likely, not always on its first one: the model
    # then need not learn a line the labels do not draw (+0.8 to +1.0 point of CV accuracy in the shipped fits:
    # `relabelled_multi_label` in the JSON).
    relabelled = [r | {"task": max(r["accept"], key=lambda t: best["margins"][i, tasks.index(t)])}
                  if len(r["accept"]) > 1 else r for i, r in enumerate(rows)]  # fmt: skip
    margins = out_of_fold(relabelled, extra, tasks, training, folds)
    relabelled_score = float(np.mean([tasks[i] in a for i, a in zip(margins.argmax(axis=1), accept)]))
    kept = relabelled_score > best["cv_accuracy"]
    if kept:
        rows, best = relabelled, best | {"margins": margins, "cv_accuracy": round(relabelled_score, 4)}
    print(f"relabelled multi-label prompts: {relabelled_score:.4f}", file=sys.stderr, flush=True)
    targets = np.array([tasks.index(r["task"]) for r in rows])
    temperature = fit_temperature(best["margins"], targets)
    from router_plugins.classify.scoring import softmax

    probabilities = softmax(best["margins"], temperature)
    # The translation rule (router_plugins/classify/translation.py) vetoes `translation` without a request to
    # translate; its effect on the same out-of-fold predictions, for the record (it is not a tuned choice).
    top = probabilities.argmax(axis=1)
    second = np.argsort(-probabilities, axis=1)[:, 1]
    translation = tasks.index("translation")
    vetoed = [tasks[s if t == translation and not asks_for_translation(focus(r["text"])) else t]
              for t, s, r in zip(top, second, rows)]  # fmt: skip
    rule = {"cv_accuracy_without": round(float(np.mean([tasks[t] in a for t, a in zip(top, accept)])), 4),
            "cv_accuracy_with": round(float(np.mean([v in a for v, a in zip(vetoed, accept)])), 4),
            "vetoed": int(sum(tasks[t] != v for t, v in zip(top, vetoed)))}  # fmt: skip
    keywords = KeywordLayer(task_types)
    keyword_verdicts = [keywords.classify(r["text"]) for r in rows]
    thresholds = choose_thresholds(probabilities, tasks, keyword_verdicts, accept, fallback="chat")

    model = fit_text_model([r["text"] for r in rows] + [t for t, _ in extra], [r["task"] for r in rows] + [t for _, t in extra],
                           tasks, training=training, temperature=temperature,
                           meta={"trained_on": "bench/real_prompts.py train split + default taxonomy examples",
                                 "cv_accuracy": best["cv_accuracy"], "thresholds": thresholds["best"]})  # fmt: skip
    model.save(args.out)
    report = {
        "command": "python bench/train_text_model.py --json " + str(args.json),
        "train_prompts": len(rows),
        "registry_examples": len(extra) - len(authored),
        "authored_prompts": len(authored),
        "folds": FOLDS,
        "search": [{k: v for k, v in s.items() if k != "margins"} for s in search],
        "relabelled_multi_label": {"changed": sum(a["task"] != b["task"] for a, b in zip(rows, load("train"))),
                                   "cv_accuracy": round(relabelled_score, 4), "kept": kept},
        "chosen": {"c": training.c, "edge_weight": training.edge_weight, "nb_share": training.nb_share,
                   "temperature": round(temperature, 4)},  # fmt: skip
        "thresholds": thresholds,
        "translation_rule": rule,
        "model": {"file": str(args.out.relative_to(ROOT)), "features": model.meta["features"],
                  "bytes": args.out.stat().st_size},  # fmt: skip
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("chosen", "model", "seconds")} | {"best": thresholds["best"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fitting the text model (layer 2): vocabularies and idf, a linear SVM (with an NB-SVM averaged in), a temperature.

Training needs scikit-learn; serving (text_model.py) needs only numpy.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..progress import track
from .scoring import softmax
from .text_model import TOKEN_PATTERN, Block, TextModel, _Featurizer, view


@dataclass(frozen=True)
class TextModelTraining:
    c: float = 1.0
    """The SVM's inverse regularisation (chosen by grouped cross-validation on the train split)."""
    edge_weight: float = 1.0
    char_min_df: int = 2
    word_min_df: int = 2
    nb_share: float = 0.0
    """Weight of an NB-SVM (per task, features scaled by their log-count ratio) averaged with the plain SVM, each
    scaled by its margins' spread; the average of two linear models is one, so serving costs the same."""


def fit_text_model(
    texts: Sequence[str],
    labels: Sequence[str],
    tasks: Sequence[str],
    sample_weight: np.ndarray | None = None,
    training: TextModelTraining = TextModelTraining(),
    temperature: float = 1.0,
    meta: Mapping[str, Any] | None = None,
) -> TextModel:
    """Fit the vocabularies, idf and a one-vs-rest linear SVM. `temperature` comes from out-of-fold margins
    (see `fit_temperature`); 1.0 when not known."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    unknown = sorted(set(labels) - set(tasks))
    if unknown:
        raise ValueError(f"labels not among the tasks: {', '.join(unknown)}")
    specs = [("all", "char_wb", (1, 4), 1.0, training.char_min_df), ("all", "word", (1, 2), 1.0, training.word_min_df)]
    if training.edge_weight > 0:
        specs += [(v, a, n, training.edge_weight, m) for v in ("head", "tail") for _, a, n, _, m in specs[:2]]
    blocks = []
    for name, analyzer, ngram, weight, min_df in specs:
        views = [view(t, name) for t in texts]
        vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram, sublinear_tf=True, dtype=np.float32,
                                     token_pattern=TOKEN_PATTERN if analyzer == "word" else None,
                                     min_df=min(min_df, len(views)))  # fmt: skip
        try:
            vectorizer.fit(views)
        except ValueError:  # no term left (tiny data): a block with no vocabulary contributes nothing
            blocks.append(Block(name, analyzer, ngram, (), np.zeros(0, np.float32), weight))
            continue
        vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
        blocks.append(Block(name, analyzer, ngram, tuple(vocabulary), vectorizer.idf_.astype(np.float32), weight))
    featurizer = _Featurizer(blocks)
    x = featurizer.transform(texts)
    present = sorted(set(labels), key=list(tasks).index)
    weights = np.zeros((featurizer.size, len(tasks)), dtype=np.float32)
    bias = np.full(len(tasks), -1e3)  # tasks with no example are never chosen
    if len(present) == 1:
        bias[list(tasks).index(present[0])] = 0.0
    else:
        svm = LinearSVC(C=training.c)
        svm.fit(x, list(labels), sample_weight=sample_weight)
        columns = [list(tasks).index(c) for c in svm.classes_]
        coef = svm.coef_ if len(svm.classes_) > 2 else np.vstack([-svm.coef_[0], svm.coef_[0]])
        intercept = svm.intercept_ if len(svm.classes_) > 2 else np.array([-svm.intercept_[0], svm.intercept_[0]])
        weights[:, columns] = coef.T
        bias[columns] = intercept
        if training.nb_share > 0:
            nb_weights, nb_bias = _fit_nbsvm(x, labels, present, training.c, sample_weight)
            columns = [list(tasks).index(c) for c in present]
            plain = x @ weights[:, columns] + bias[columns]
            nb = x @ nb_weights + nb_bias
            share, spread, nb_spread = training.nb_share, float(np.std(plain)), float(np.std(nb))
            weights[:, columns] = (1 - share) * weights[:, columns] / spread + share * nb_weights / nb_spread
            bias[columns] = (1 - share) * bias[columns] / spread + share * nb_bias / nb_spread
    info = dict(meta or {}) | {
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 2),
        "prompts": len(texts),
        "features": featurizer.size,
        "training": {"c": training.c, "edge_weight": training.edge_weight, "nb_share": training.nb_share},
    }
    info["fingerprint"] = hashlib.sha256(json.dumps([list(tasks), info["fitted_at"], len(texts)]).encode()).hexdigest()[
        :12
    ]
    return TextModel(tuple(tasks), tuple(blocks), weights, bias, temperature, info)


def fit_temperature(margins: np.ndarray, targets: np.ndarray) -> float:
    """The softmax temperature that minimises the log loss of out-of-fold margins (a grid, then refined)."""

    def loss(t: float) -> float:
        p = softmax(margins, t)
        return float(-np.mean(np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))))

    grid = np.geomspace(0.02, 5.0, 60)
    best = float(grid[int(np.argmin([loss(t) for t in grid]))])
    fine = np.linspace(best * 0.85, best * 1.15, 31)
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


def _fit_nbsvm(
    x: Any, labels: Sequence[str], present: Sequence[str], c: float, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest SVMs over features scaled by each task's log-count ratio (Wang & Manning's NB-SVM), folded back
    into weights over the plain features: (features, tasks) and (tasks,)."""
    from sklearn.svm import LinearSVC

    present_binary = (x > 0).astype(np.float32)
    y = np.array(labels)
    weights = np.zeros((x.shape[1], len(present)), dtype=np.float64)
    bias = np.zeros(len(present))
    for i, task in enumerate(present):
        positive = y == task
        p = np.asarray(present_binary[positive].sum(axis=0)).ravel() + 1.0
        q = np.asarray(present_binary[~positive].sum(axis=0)).ravel() + 1.0
        ratio = np.log((p / p.sum()) / (q / q.sum()))
        svm = LinearSVC(C=c)
        svm.fit(x.multiply(ratio).tocsr(), positive.astype(int), sample_weight=sample_weight)
        weights[:, i] = ratio * svm.coef_[0]
        bias[i] = svm.intercept_[0]
    return weights, bias


def fit_calibrated_text_model(
    texts: Sequence[str],
    labels: Sequence[str],
    tasks: Sequence[str],
    sample_weight: np.ndarray | None = None,
    training: TextModelTraining = TextModelTraining(),
    folds: int = 3,
    meta: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> TextModel:
    """Fit on everything, with the temperature fitted on `folds`-fold out-of-fold margins (1.0 with too few
    prompts to hold any out)."""
    temperature = 1.0
    index = {task: i for i, task in enumerate(tasks)}
    if len(texts) >= 10 * folds and len(set(labels)) > 1:
        order = np.random.default_rng(seed).permutation(len(texts))
        margins = np.zeros((len(texts), len(tasks)))
        for part in track(np.array_split(order, folds), "calibrating the text model", unit="folds"):
            keep = np.ones(len(texts), bool)
            keep[part] = False
            model = fit_text_model([t for t, k in zip(texts, keep) if k], [x for x, k in zip(labels, keep) if k], tasks,
                                   None if sample_weight is None else sample_weight[keep], training)  # fmt: skip
            margins[part] = model.margins([texts[i] for i in part])
        temperature = fit_temperature(margins, np.array([index[x] for x in labels]))
    return fit_text_model(texts, labels, tasks, sample_weight, training, temperature, meta)

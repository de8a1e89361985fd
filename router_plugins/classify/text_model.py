"""Layer 2: a linear model over character and word n-grams, fitted on real labelled prompts in many languages.

Why n-grams and not the static MiniLM table: MiniLM's vocabulary is English, while a third to two thirds of real
prompts are not; character n-grams read any script (Chinese has no spaces, Russian inflects) and cost well under a
millisecond. Three views of the text are weighed separately, because the ask usually sits at the start or the end
of a prompt and pasted material fills the middle: the whole (focused) text, its first and its last
`EDGE_CHARS` characters.

Scores are a linear SVM's margins turned into probabilities by a softmax whose temperature was fitted on
out-of-fold margins (so a confidence of 0.8 is right about four times in five), and the file holds what serving
needs: per block its vocabulary and idf, the weights, the temperature, the task names. No pickle.
"""

from __future__ import annotations

import functools
import json
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..datadir import ArtifactVersionError, DamagedArtifact, write_atomically
from .layer import LayerVerdict
from .scoring import softmax, verdict
from .translation import asks_for_translation

TEXT_MODEL_VERSION = "text-model-v1"
SHIPPED_FILE = Path(__file__).resolve().parent.parent / "data" / f"{TEXT_MODEL_VERSION}.npz"
"""Fitted on the real-traffic train split for the default taxonomy (`bench/train_text_model.py`)."""
ARTIFACT_FILE = f"{TEXT_MODEL_VERSION}-current.npz"
"""`autoroute train-classifier` writes its fit here in the data directory; it wins over the shipped file."""
HEAD_CHARS = 300
TAIL_CHARS = 700
EDGE_CHARS = 120
RECENT_TEXTS = 64
TOKEN_PATTERN = r"(?u)\b\w+\b"


@dataclass(frozen=True)
class Block:
    """One view of the text and one analyzer: its n-gram vocabulary, idf and weight."""

    view: str
    """`all` (the focused text), `head` or `tail` (its first or last EDGE_CHARS characters)."""
    analyzer: str
    """`char_wb` or `word`."""
    ngram: tuple[int, int]
    vocabulary: tuple[str, ...]
    idf: np.ndarray
    weight: float = 1.0


def focus(text: str) -> str:
    """The start and the end of a long prompt: where the ask is."""
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return f"{text[:HEAD_CHARS]} … {text[-TAIL_CHARS:]}"


def view(text: str, name: str) -> str:
    text = focus(text)
    if name == "head":
        return text[:EDGE_CHARS]
    if name == "tail":
        return text[-EDGE_CHARS:]
    return text


_WHITESPACE = re.compile(r"\s\s+")
_TOKEN = re.compile(TOKEN_PATTERN)


def char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    """Character n-grams inside word boundaries (each word padded with a space), as scikit-learn's `char_wb`
    analyzer makes them from lowercased text: the vocabulary was fitted with it, so serving must match it."""
    grams: list[str] = []
    sizes = range(low, high + 1)
    for word in _WHITESPACE.sub(" ", text.lower()).split():
        word = f" {word} "
        length = len(word)
        if length > high:  # the common case: every size fits, one comprehension for all of them
            grams += [word[i : i + n] for n in sizes for i in range(length - n + 1)]
            continue
        for n in sizes:
            if n >= length:  # a short word yields itself once for every longer n
                grams.append(word)
                break
            grams += [word[i : i + n] for i in range(length - n + 1)]
    return grams


def word_ngrams(text: str, low: int, high: int) -> list[str]:
    """Word n-grams of lowercased `\\w+` tokens joined by a space, as scikit-learn's `word` analyzer makes them."""
    tokens = _TOKEN.findall(text.lower())
    if low == 1 and high == 1:
        return tokens
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return grams


class _Featurizer:
    """Text -> per block, sublinear term counts times idf, unit length, times the block weight.

    Plain Python over a dict per block: scikit-learn's vectorizers cost ~0.4 ms a call in validation alone, six
    calls per prompt; this is the same arithmetic (checked equal in the tests) in a fraction of that."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self.blocks = tuple(blocks)
        self._index = [{term: i for i, term in enumerate(b.vocabulary)} for b in self.blocks]
        self._offsets = np.cumsum([0] + [len(b.vocabulary) for b in self.blocks])[:-1]
        self.size = sum(len(b.vocabulary) for b in self.blocks)
        # The corrections layer and the text model layer read the same request: it is featurised once.
        self.row = functools.lru_cache(maxsize=RECENT_TEXTS)(self._row)  # type: ignore[method-assign]

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's nonzero feature indices and values (the last RECENT_TEXTS are kept; do not modify them)."""
        return self._row(text)

    def _row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        columns: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for block, index, offset in zip(self.blocks, self._index, self._offsets):
            piece = view(text, block.view)
            grams = (char_wb_ngrams if block.analyzer == "char_wb" else word_ngrams)(piece, *block.ngram)
            counter = Counter(grams)  # each distinct n-gram is looked up once
            get = index.get
            looked_up = np.fromiter([get(g, -1) for g in counter], dtype=np.int64, count=len(counter))
            known = looked_up >= 0
            if not known.any():
                continue
            ids = looked_up[known]
            tf = np.fromiter(counter.values(), dtype=np.float32, count=len(counter))[known]
            weights = (1.0 + np.log(tf)) * block.idf[ids]
            norm = float(np.sqrt(np.dot(weights, weights)))
            if norm > 0:
                columns.append(ids + offset)
                values.append(weights * (block.weight / norm))
        if not columns:
            ids, data = np.zeros(0, np.int64), np.zeros(0, np.float32)
        else:
            ids, data = np.concatenate(columns), np.concatenate(values).astype(np.float32)
        ids.flags.writeable = data.flags.writeable = False  # shared through the cache
        return ids, data

    def transform(self, texts: Sequence[str]) -> Any:
        from scipy.sparse import csr_matrix

        rows = [self.row(t) for t in texts]
        indptr = np.cumsum([0] + [len(c) for c, _ in rows])
        indices = np.concatenate([c for c, _ in rows]) if rows else np.zeros(0, np.int64)
        data = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, np.float32)
        return csr_matrix((data, indices, indptr), shape=(len(texts), self.size), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class TextModel:
    tasks: tuple[str, ...]
    blocks: tuple[Block, ...]
    weights: np.ndarray
    """(features, tasks)."""
    bias: np.ndarray
    temperature: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weights.shape != (sum(len(b.vocabulary) for b in self.blocks), len(self.tasks)):
            raise ValueError(f"weights have shape {self.weights.shape}, expected (features, {len(self.tasks)})")
        if self.bias.shape != (len(self.tasks),) or self.temperature <= 0:
            raise ValueError("bias must have one value per task and the temperature must be positive")
        object.__setattr__(self, "_featurizer", _Featurizer(self.blocks))

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))

    def features(self, texts: Sequence[str]) -> Any:
        return self._featurizer.transform(texts)  # type: ignore[attr-defined]

    def margins(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1:  # the request path: a gather of the rows the text touches, no sparse matrix
            columns, values = self._featurizer.row(texts[0])  # type: ignore[attr-defined]
            return (values @ self.weights[columns]).astype(np.float64)[None, :] + self.bias
        x = self.features(texts)
        return np.asarray(x @ self.weights, dtype=np.float64) + self.bias

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.margins(texts), self.temperature)

    def mismatch(self, task_names: Sequence[str]) -> str | None:
        if set(task_names) != set(self.tasks):
            return f"fitted for tasks {sorted(self.tasks)}, the registry has {sorted(task_names)}"
        return None

    def save(self, path: Path) -> Path:
        """Write atomically (temporary file, then rename): a reader never sees half of it."""
        arrays: dict[str, np.ndarray] = {
            "version": np.array(TEXT_MODEL_VERSION),
            "tasks": np.array(self.tasks),
            "weights": self.weights.astype(np.float16),
            "bias": self.bias.astype(np.float64),
            "temperature": np.array(self.temperature),
            "meta": np.array(json.dumps(dict(self.meta), sort_keys=True)),
            "blocks": np.array(json.dumps([[b.view, b.analyzer, list(b.ngram), b.weight] for b in self.blocks])),
        }
        for i, block in enumerate(self.blocks):
            arrays[f"vocabulary{i}"] = np.array(block.vocabulary)
            arrays[f"idf{i}"] = block.idf.astype(np.float32)
        return write_atomically(path, lambda handle: np.savez_compressed(handle, **arrays))  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> TextModel:
        """Read a saved model; ValueError when the file is another version or damaged."""
        try:
            # Opened here, not by np.load: on a damaged archive np.load raises and leaves its own handle open.
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
                version = str(data["version"])
                if version != TEXT_MODEL_VERSION:
                    raise ArtifactVersionError(f"{path} is {version}, expected {TEXT_MODEL_VERSION}")
                specs = json.loads(str(data["blocks"]))
                blocks = tuple(
                    Block(v, a, (int(n[0]), int(n[1])), tuple(str(t) for t in data[f"vocabulary{i}"]),
                          data[f"idf{i}"].astype(np.float32), float(w))
                    for i, (v, a, n, w) in enumerate(specs)
                )  # fmt: skip
                tasks = tuple(str(t) for t in data["tasks"])
                weights, bias = data["weights"].astype(np.float32), data["bias"].astype(np.float64)
                return cls(tasks, blocks, weights, bias, float(data["temperature"]), json.loads(str(data["meta"])))
        except ArtifactVersionError:
            raise
        except (KeyError, OSError, EOFError, json.JSONDecodeError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise DamagedArtifact(f"{path} is not a usable text model: {exc}") from exc


class TextModelLayer:
    """The text model's most probable task; its calibrated probability is the confidence."""

    name = "text_model"

    def __init__(self, model: TextModel) -> None:
        self._model = model

    @property
    def model(self) -> TextModel:
        return self._model

    def classify(self, text: str) -> LayerVerdict:
        if not text.strip():
            return LayerVerdict(None, 0.0, "empty text")
        probabilities = self._model.probabilities([text])[0]
        tasks = self._model.tasks
        best = int(np.argmax(probabilities))
        if tasks[best] == "translation" and not asks_for_translation(focus(text)):
            # Foreign text is not a request to translate it: the next most likely task stands.
            probabilities = probabilities.copy()
            probabilities[best] = 0.0
            probabilities /= probabilities.sum()
            found = verdict(probabilities, tasks)
            return LayerVerdict(
                found.task, found.confidence, f"{found.detail}; translation vetoed: no request to translate"
            )
        return verdict(probabilities, tasks)


def load_text_model(artifacts: Path | None) -> TextModel | None:
    """The data directory's fitted model when there is a usable one, else the shipped one (None if neither)."""
    import logging

    log = logging.getLogger(__name__)
    for path in ((artifacts / ARTIFACT_FILE) if artifacts else None, SHIPPED_FILE):
        if path is None or not path.exists():
            continue
        try:
            return TextModel.load(path)
        except ValueError as exc:
            log.error("text model not used: %s", exc)
    return None

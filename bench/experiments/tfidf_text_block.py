"""A TF-IDF block of the prompt's words and word pairs beside the learned router's dense features (issue 16, item 2).

The static embedding averages a prompt into 384 numbers; which words it holds ("prove", "SQL", "A. B. C. D.") is
lost. This block keeps them: the prompt's first and last `EDGE_CHARS` characters, lowercased `\\w+` words and word
pairs seen in at least `MIN_DF` training prompts (the `MAX_TERMS` most frequent), sublinear tf × idf, unit length.
Each model's quality is then one logistic regression over [dense features | block], each part with its own L2
constant chosen by inner CV (`joint_logistic`). The vocabulary is fitted on all the rows given, the inner held-out
ones included: it reads no outcome.

Serving needs no scikit-learn: `Vocabulary.row` is the vectoriser's arithmetic in plain Python over a dict (checked
equal in tests/unit/test_text_block.py), and an artifact holds the terms, idf and weights as plain arrays
(`to_arrays` / `from_arrays`), never a pickle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_plugins.classify.text_model import TOKEN_PATTERN, word_ngrams
from tfidf_joint_logistic import JointFit

EDGE_CHARS = 2000
"""A long prompt is read at its first and last this many characters: where the ask is, and the bound on the cost."""
NGRAMS = (1, 2)
MIN_DF = 3
MAX_TERMS = 30_000
ARRAY_KEYS = ("text_terms", "text_idf", "text_coef", "text_C", "text_CS")
"""The arrays `to_arrays` writes into an artifact."""


def clip(text: str) -> str:
    """The first and last `EDGE_CHARS` characters of a long prompt (a line break between them)."""
    if len(text) <= 2 * EDGE_CHARS:
        return text
    return f"{text[:EDGE_CHARS]}\n{text[-EDGE_CHARS:]}"


# -- vocabulary -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Vocabulary:
    terms: tuple[str, ...]
    idf: np.ndarray
    """[len(terms)] float32"""
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.idf.shape != (len(self.terms),):
            raise ValueError(f"{len(self.terms)} terms but {self.idf.shape} idf values")
        object.__setattr__(self, "_index", {term: i for i, term in enumerate(self.terms)})

    def __len__(self) -> int:
        return len(self.terms)

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's nonzero columns and values: scikit-learn's TfidfVectorizer(sublinear_tf) on `clip(text)`."""
        counts = Counter(word_ngrams(clip(text), *NGRAMS))
        get = self._index.get
        looked_up = np.fromiter([get(g, -1) for g in counts], dtype=np.int64, count=len(counts))
        known = looked_up >= 0
        ids = looked_up[known]
        if not ids.size:
            return ids, np.zeros(0, np.float32)
        tf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))[known]
        values = (1.0 + np.log(tf)) * self.idf[ids]
        return ids, (values / np.sqrt(np.dot(values, values))).astype(np.float32)

    def transform(self, texts: Sequence[str]) -> Any:
        """[n, len(terms)] float32 CSR matrix."""
        from scipy.sparse import csr_matrix

        rows = [self.row(t) for t in texts]
        indptr = np.cumsum([0] + [len(ids) for ids, _ in rows])
        indices = np.concatenate([ids for ids, _ in rows]) if rows else np.zeros(0, np.int64)
        data = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, np.float32)
        return csr_matrix((data, indices, indptr), shape=(len(texts), len(self)), dtype=np.float32)


def fit_vocabulary(texts: Sequence[str], min_df: int = MIN_DF, max_terms: int = MAX_TERMS) -> tuple[Vocabulary, Any]:
    """The block's vocabulary and idf, and the texts' [n, terms] float32 CSR matrix (scikit-learn, imported here)."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=NGRAMS, min_df=min(min_df, len(texts)),
                                 max_features=max_terms, sublinear_tf=True, dtype=np.float32)  # fmt: skip
    try:
        matrix = vectorizer.fit_transform([clip(t) for t in texts])
    except ValueError:  # no term left (tiny data): a block with no columns contributes nothing
        return Vocabulary((), np.zeros(0, np.float32)), csr_matrix((len(texts), 0), dtype=np.float32)
    terms = tuple(sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__))
    return Vocabulary(terms, vectorizer.idf_.astype(np.float32)), matrix.tocsr()


def text_logits(vocabulary: Vocabulary, text_coef: np.ndarray, text: str) -> np.ndarray:
    """[M] the block's share of one prompt's logits: a gather of the rows its terms touch, no sparse matrix."""
    ids, values = vocabulary.row(text)
    return (values @ text_coef[ids]).astype(np.float64)


# -- artifacts ------------------------------------------------------------------------------------------------------


def to_arrays(vocabulary: Vocabulary, fit: JointFit) -> dict[str, np.ndarray]:
    """What an artifact needs to serve the block, as plain arrays (np.savez, loaded with allow_pickle=False)."""
    return {
        "text_terms": np.array(vocabulary.terms, dtype=np.str_),
        "text_idf": vocabulary.idf.astype(np.float32),
        "text_coef": fit.weights.text_coef.astype(np.float32),
        "text_C": np.asarray(fit.C, dtype=np.float64),
        "text_CS": np.asarray(fit.CS, dtype=np.float64),
    }


def from_arrays(arrays: Mapping[str, np.ndarray], models: int) -> tuple[Vocabulary, np.ndarray]:
    """The vocabulary and the block's weights [terms, models]; ValueError when they do not fit together."""
    terms = tuple(str(t) for t in arrays["text_terms"])
    vocabulary = Vocabulary(terms, np.asarray(arrays["text_idf"], dtype=np.float32))
    text_coef = np.asarray(arrays["text_coef"], dtype=np.float32)
    if text_coef.shape != (len(terms), models):
        raise ValueError(f"block weights of shape {text_coef.shape}, expected ({len(terms)}, {models})")
    return vocabulary, text_coef

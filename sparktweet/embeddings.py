"""Word embeddings: word2vec trained with gensim on the training corpus (no Spark, no TensorFlow)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


def train_word2vec(
    token_lists: Sequence[Sequence[str]],
    dim: int = 64,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 15,
    seed: int = 13,
    workers: int = 2,
):
    """Train skip-gram word2vec on tokenised tweets and return its ``KeyedVectors``.

    Examples
    --------
    >>> kv = train_word2vec([["bag", "lost"], ["bag", "delay"]] * 20, dim=8, min_count=1, epochs=2)
    >>> kv["bag"].shape
    (8,)
    """
    from gensim.models import Word2Vec

    sentences = [list(t) for t in token_lists if t]
    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=1,
        negative=10,
        epochs=epochs,
        seed=seed,
        workers=workers,
    )
    log.info("word2vec: %d words, %d dims, trained on %d tweets", len(model.wv), dim, len(sentences))
    return model.wv


def embedding_matrix(index: dict[str, int], vectors, dim: int, seed: int = 13) -> np.ndarray:
    """Rows for each vocabulary index: the word2vec vector when known, small noise otherwise; row 0 (padding) is zero."""
    rng = np.random.default_rng(seed)
    size = max(index.values(), default=1) + 1
    matrix = rng.normal(0.0, 0.05, size=(size, dim)).astype("float32")
    matrix[0] = 0.0
    hits = 0
    for word, i in index.items():
        if vectors is not None and word in vectors:
            matrix[i] = vectors[word]
            hits += 1
    log.info("embedding matrix: %d of %d words initialised from word2vec", hits, len(index))
    return matrix

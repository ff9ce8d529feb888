"""Word valences from the VADER lexicon (vaderSentiment package), for the sentiment LSTM's lexicon channel.

Only training reads the lexicon: the valences are baked into the saved Keras model as a frozen
one-dimensional embedding, so inference needs neither the package nor the file.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

# VADER valences run from about -4 to +4; the channel carries them scaled to about [-1, 1].
SCALE = 4.0


@functools.lru_cache(maxsize=1)
def vader_lexicon() -> dict[str, float]:
    """The VADER lexicon as ``word -> mean valence`` (raises ImportError without vaderSentiment)."""
    from importlib import resources

    text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 2:
            try:
                out[parts[0].lower()] = float(parts[1])
            except ValueError:
                continue
    return out


# The tokeniser turns emoji into placeholders; give the sentiment-bearing ones a valence too.
PLACEHOLDER_VALENCE = {"xemojipos": 2.0, "xemojineg": -2.0}


def valences(words: Sequence[str], lexicon: Mapping[str, float] | None = None) -> np.ndarray:
    """One scaled valence per word (0 when unknown), as a float32 vector."""
    lex = vader_lexicon() if lexicon is None else lexicon
    return np.array([lex.get(w, PLACEHOLDER_VALENCE.get(w, 0.0)) / SCALE for w in words], dtype="float32")

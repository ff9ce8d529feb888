"""Guided LDA with gensim: topics seeded by each category's keywords (no Spark, no TensorFlow).

Seeding works through the topic-word prior ``eta``: a category's keywords get a large prior in
that category's topic and a tiny one elsewhere, so the topic forms around them while LDA still
learns the co-occurring vocabulary. Extra unseeded topics soak up chatter; a tweet is labelled
with its most probable *seeded* topic.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

META_FILE = "lda.json"
MODEL_FILE = "lda.gensim"
DICT_FILE = "dictionary.gensim"
FORMAT = "sparktweet-guided-lda-1"


@dataclass
class GuidedLda:
    """A trained gensim LDA whose first ``len(codes)`` topics belong to the categories ``codes``."""

    lda: object
    dictionary: object
    codes: list[str]
    # Per-token count weights (context keywords); tokens not listed count 1. Applied in training and inference.
    weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def train(
        cls,
        token_lists: Sequence[Sequence[str]],
        seeds: dict[str, Sequence[str]],
        *,
        extra_topics: int = 2,
        seed_weight: float = 5.0,
        seed_share: float = 0.8,
        base_eta: float = 0.01,
        passes: int = 8,
        iterations: int = 100,
        no_below: int = 3,
        no_above: float = 0.4,
        ignore: Sequence[str] = (),
        alpha: str = "asymmetric",
        seed: int = 13,
        context: Sequence[str] = (),
        context_weight: float = 1.0,
    ) -> "GuidedLda":
        """Train on ``token_lists``; ``seeds`` maps each category code to its seed tokens.

        ``context`` lists seed tokens that describe the circumstances of any complaint rather than its
        subject (waiting, hours, phoning): each of their occurrences counts ``context_weight`` instead
        of 1, in training and when labelling, so a tweet's subject words win over equally many context words.
        """
        from gensim.corpora import Dictionary
        from gensim.models import LdaModel

        if extra_topics < 0:
            raise ValueError(f"extra_topics must be 0 or more, got {extra_topics}")
        if extra_topics == 0:
            # Measured on the airline tweets: one category took 87 % of the tweets (its topic absorbed "customer", "pay").
            log.warning("guided LDA without extra topics: the generic words of every tweet must go to some category's "
                        "topic, which then takes most tweets; use extra_topics >= 1")
        codes = list(seeds)
        docs = [list(t) for t in token_lists]
        dictionary = Dictionary(docs)
        keep = {w for words in seeds.values() for w in words if w in dictionary.token2id}
        dictionary.filter_extremes(no_below=no_below, no_above=no_above, keep_n=20000, keep_tokens=sorted(keep))
        # Placeholders, negations and generic airline chatter carry no topic: left in, they top every topic's word list.
        dictionary.filter_tokens(bad_ids=[dictionary.token2id[w] for w in set(ignore) - keep if w in dictionary.token2id])
        weights = {w: float(context_weight) for w in context if w in dictionary.token2id and context_weight != 1.0}
        by_id = {dictionary.token2id[w]: v for w, v in weights.items()}
        corpus = [[(wid, c * by_id.get(wid, 1.0)) for wid, c in dictionary.doc2bow(d)] for d in docs]
        k = len(codes) + extra_topics
        eta = np.full((k, len(dictionary)), base_eta, dtype="float64")
        seeded = 0
        for t, code in enumerate(codes):
            for word in seeds[code]:
                wid = dictionary.token2id.get(word)
                if wid is None:
                    continue
                eta[:, wid] = base_eta / 10
                eta[t, wid] = seed_weight
                seeded += 1
        log.info("guided LDA: %d docs, %d terms, %d topics, %d seed words in vocabulary", len(docs), len(dictionary), k, seeded)
        lda = LdaModel(
            id2word=dictionary, num_topics=k, eta=eta, alpha=alpha,
            passes=passes, iterations=iterations, random_state=seed, eval_every=None,
        )
        # Variational LDA forgets a prior once the data outweighs it, so seed the initial topic-word
        # statistics too: each seed word starts with most of its expected mass in its own topic.
        sstats = lda.state.get_lambda() - eta
        counts = np.zeros(len(dictionary))
        for bow in corpus:
            for wid, c in bow:
                counts[wid] += c
        for t, code in enumerate(codes):
            for word in seeds[code]:
                wid = dictionary.token2id.get(word)
                if wid is not None:
                    sstats[:, wid] *= 0.01
                    sstats[t, wid] += counts[wid] * seed_share
        lda.state.sstats = sstats.astype(lda.dtype)
        lda.sync_state()
        if corpus:
            lda.update(corpus, passes=passes, iterations=iterations)
        return cls(lda, dictionary, codes, weights)

    def topic_matrix(self, token_lists: Sequence[Sequence[str] | None], max_iter: int = 100, tol: float = 1e-3,
                     chunk: int = 4096) -> np.ndarray:
        """Per-document topic distributions (n, topics).

        The variational E-step of online LDA (Hoffman et al., 2010) with a fixed uniform start, so a
        tweet gets the same distribution whichever batch or worker scores it (gensim's own
        ``inference`` starts from random draws). Documents are iterated together, vectorised over
        their (document, word) pairs; each one stops updating once it has converged, and every sum
        stays within one document, so the result does not depend on the batch around it.
        """
        from scipy.special import psi

        k = self.lda.num_topics
        alpha = np.asarray(self.lda.alpha, dtype="float64")
        exp_elog_beta = np.asarray(self.lda.expElogbeta, dtype="float64")
        out = np.full((len(token_lists), k), 1.0 / k)
        token2id = self.dictionary.token2id
        weight = {token2id[w]: v for w, v in self.weights.items() if w in token2id}
        for begin in range(0, len(token_lists), chunk):
            docs, words, counts = [], [], []
            for row in range(begin, min(begin + chunk, len(token_lists))):
                tokens = token_lists[row]
                if tokens is None:
                    continue
                bow: dict[int, int] = {}
                for token in tokens:
                    wid = token2id.get(token)
                    if wid is not None:
                        bow[wid] = bow.get(wid, 0) + 1
                for wid in sorted(bow):
                    docs.append(row)
                    words.append(wid)
                    counts.append(bow[wid] * weight.get(wid, 1.0))
            if docs:
                out[np.unique(docs)] = self._e_step(np.array(docs), np.array(words), np.array(counts, dtype="float64"),
                                                    alpha, exp_elog_beta, max_iter, tol, psi)
        return out

    @staticmethod
    def _e_step(docs, words, cts, alpha, exp_elog_beta, max_iter, tol, psi) -> np.ndarray:
        """Normalised gamma of each distinct document in ``docs`` (pairs sorted by document)."""
        rows, first = np.unique(docs, return_index=True)
        seg = np.repeat(np.arange(len(rows)), np.diff(np.append(first, len(docs))))
        beta = exp_elog_beta[:, words].T  # (pairs, k)
        gamma = np.ones((len(rows), beta.shape[1]))
        exp_theta = np.exp(psi(gamma) - psi(gamma.sum(axis=1, keepdims=True)))
        active = np.arange(len(rows))
        pairs = np.arange(len(docs))
        for _ in range(max_iter):
            b = beta[pairs]
            phinorm = (exp_theta[seg[pairs]] * b).sum(axis=1) + 1e-100
            starts = np.flatnonzero(np.r_[True, seg[pairs][1:] != seg[pairs][:-1]])
            summed = np.add.reduceat((cts[pairs] / phinorm)[:, None] * b, starts, axis=0)
            last = gamma[active]
            new = alpha + exp_theta[active] * summed
            gamma[active] = new
            exp_theta[active] = np.exp(psi(new) - psi(new.sum(axis=1, keepdims=True)))
            still = np.abs(new - last).mean(axis=1) >= tol
            if not still.any():
                break
            active = active[still]
            pairs = pairs[np.isin(seg[pairs], active)]
        return gamma / gamma.sum(axis=1, keepdims=True)

    def label(self, token_lists: Sequence[Sequence[str] | None]) -> tuple[list[str], np.ndarray]:
        """Most probable seeded category per document and its probability."""
        theta = self.topic_matrix(token_lists)
        seeded = theta[:, : len(self.codes)]
        best = seeded.argmax(axis=1)
        return [self.codes[i] for i in best], seeded[np.arange(len(best)), best]

    def top_words(self, n: int = 10) -> dict[str, list[tuple[str, float]]]:
        """Top words of every topic, keyed by category code (or ``extra_<i>``)."""
        out = {}
        for t in range(self.lda.num_topics):
            name = self.codes[t] if t < len(self.codes) else f"extra_{t - len(self.codes)}"
            out[name] = [(w, float(p)) for w, p in self.lda.show_topic(t, topn=n)]
        return out

    def coherence(self, token_lists: Sequence[Sequence[str]], measure: str = "c_v", topn: int = 10) -> dict[str, float]:
        """Topic coherence (c_v by default), overall and per topic."""
        from gensim.models import CoherenceModel

        cm = CoherenceModel(
            model=self.lda, texts=[list(t) for t in token_lists], dictionary=self.dictionary, coherence=measure, topn=topn, processes=1
        )
        per_topic = cm.get_coherence_per_topic()
        names = list(self.top_words(1))
        return {"overall": float(np.mean(per_topic)), **{names[i]: float(v) for i, v in enumerate(per_topic)}}

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.lda.save(os.path.join(path, MODEL_FILE))
        self.dictionary.save(os.path.join(path, DICT_FILE))
        with open(os.path.join(path, META_FILE), "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "codes": self.codes, "weights": self.weights}, f)

    @classmethod
    def load(cls, path: str) -> "GuidedLda":
        from gensim.corpora import Dictionary
        from gensim.models import LdaModel

        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            from sparktweet.errors import ModelError

            raise ModelError(f"{path}: LDA format {meta.get('format')!r} is not {FORMAT!r}; retrain the model.")
        return cls(LdaModel.load(os.path.join(path, MODEL_FILE)), Dictionary.load(os.path.join(path, DICT_FILE)), list(meta["codes"]),
                   {str(w): float(v) for w, v in (meta.get("weights") or {}).items()})

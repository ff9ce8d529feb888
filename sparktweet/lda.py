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
from dataclasses import dataclass
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
    ) -> "GuidedLda":
        from gensim.corpora import Dictionary
        from gensim.models import LdaModel

        codes = list(seeds)
        docs = [list(t) for t in token_lists]
        dictionary = Dictionary(docs)
        keep = {w for words in seeds.values() for w in words if w in dictionary.token2id}
        dictionary.filter_extremes(no_below=no_below, no_above=no_above, keep_n=20000, keep_tokens=sorted(keep))
        # Placeholders, negations and generic airline chatter carry no topic: left in, they top every topic's word list.
        dictionary.filter_tokens(bad_ids=[dictionary.token2id[w] for w in set(ignore) - keep if w in dictionary.token2id])
        corpus = [dictionary.doc2bow(d) for d in docs]
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
        return cls(lda, dictionary, codes)

    def topic_matrix(self, token_lists: Sequence[Sequence[str] | None], max_iter: int = 100, tol: float = 1e-3) -> np.ndarray:
        """Per-document topic distributions (n, topics).

        The variational E-step of online LDA (Hoffman et al., 2010) with a fixed uniform start, so a
        tweet gets the same distribution whichever batch or worker scores it (gensim's own
        ``inference`` starts from random draws).
        """
        from scipy.special import psi

        k = self.lda.num_topics
        alpha = np.asarray(self.lda.alpha, dtype="float64")
        exp_elog_beta = np.asarray(self.lda.expElogbeta, dtype="float64")
        out = np.full((len(token_lists), k), 1.0 / k)
        for row, tokens in enumerate(token_lists):
            bow = self.dictionary.doc2bow(list(tokens)) if tokens is not None else []
            if not bow:
                continue
            ids = [w for w, _ in bow]
            cts = np.array([c for _, c in bow], dtype="float64")
            beta_d = exp_elog_beta[:, ids]
            gamma = np.ones(k)
            exp_theta = np.exp(psi(gamma) - psi(gamma.sum()))
            phinorm = exp_theta @ beta_d + 1e-100
            for _ in range(max_iter):
                last = gamma
                gamma = alpha + exp_theta * ((cts / phinorm) @ beta_d.T)
                exp_theta = np.exp(psi(gamma) - psi(gamma.sum()))
                phinorm = exp_theta @ beta_d + 1e-100
                if np.mean(np.abs(gamma - last)) < tol:
                    break
            out[row] = gamma / gamma.sum()
        return out

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
            json.dump({"format": FORMAT, "codes": self.codes}, f)

    @classmethod
    def load(cls, path: str) -> "GuidedLda":
        from gensim.corpora import Dictionary
        from gensim.models import LdaModel

        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            from sparktweet.errors import ModelError

            raise ModelError(f"{path}: LDA format {meta.get('format')!r} is not {FORMAT!r}; retrain the model.")
        return cls(LdaModel.load(os.path.join(path, MODEL_FILE)), Dictionary.load(os.path.join(path, DICT_FILE)), list(meta["codes"]))

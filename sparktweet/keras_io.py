"""Keras LSTM text classifiers: build, train, save, load and fast batched inference.

No pyspark here: the Spark stages in :mod:`sparktweet.lstm` call this code inside Python workers,
and benchmarks call it in a plain Python process.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PAD, OOV = 0, 1
MODEL_FILE = "model.keras"
META_FILE = "classifier.json"
FORMAT = "sparktweet-lstm-1"


def configure_tensorflow(threads: int = 0) -> None:
    """Pin TensorFlow's thread pools (0 keeps TF's default); must run before TF builds its first op."""
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            # Already initialised in this process: the first setting stays.
            log.debug("TensorFlow threads already configured")


@dataclass
class Vocabulary:
    """Token → index map; 0 is padding and 1 is out-of-vocabulary."""

    words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.index = {w: i + 2 for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int = 8000, min_count: int = 2) -> "Vocabulary":
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count][:max_size]
        return cls(words)

    def __len__(self) -> int:
        return len(self.words) + 2

    def encode(self, token_lists: Sequence[Sequence[str] | None], max_len: int) -> np.ndarray:
        """Right-padded int32 matrix; the last ``max_len`` tokens are kept (the ask often comes last)."""
        out = np.zeros((len(token_lists), max_len), dtype="int32")
        get = self.index.get
        for row, tokens in enumerate(token_lists):
            if tokens is None:
                continue
            ids = [get(t, OOV) for t in tokens][-max_len:]
            out[row, : len(ids)] = ids
        return out


POOLINGS = ("last", "last_mean", "attention")
CLASS_WEIGHTS = ("balanced", "sqrt", "none")
# "constant": Adam at learning_rate throughout (early stopping picks the epoch); "cosine": the rate falls
# from learning_rate to 0 along a half cosine over the run's epochs, so the last epoch ends at 0.
LR_SCHEDULES = ("constant", "cosine")


def build_lstm(
    vocab_size: int,
    num_classes: int,
    embedding: np.ndarray | None,
    embedding_dim: int = 64,
    units: int = 64,
    dropout: float = 0.3,
    trainable_embeddings: bool = True,
    compile_model: bool = True,
    pooling: str = "last",
    learning_rate: float = 2e-3,
    name: str | None = None,
    lexicon: bool = False,
    valence: np.ndarray | None = None,
):
    """Embedding (word2vec-initialised) → bidirectional LSTM → pooling → softmax.

    ``pooling``: ``last`` reads the LSTM's final states; ``last_mean`` adds the masked mean of its
    outputs over the tokens; ``attention`` a learned weighted sum of them (additive attention).

    ``lexicon``: a frozen one-dimensional embedding (``valence``, one lexicon valence per vocabulary
    index, see :mod:`sparktweet.lexicon`) is appended to each token's embedding, and the tweet's
    valence summary (mean, max, min, positive and negative sums over its tokens) to the pooled vector
    before the softmax. The input stays the token ids alone.
    """
    import keras
    from keras import layers, ops

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedding_layer = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, trainable=trainable_embeddings, name="embedding")
    x = embedding_layer(inputs)
    x = layers.SpatialDropout1D(dropout / 2)(x)
    valence_layer = None
    if lexicon:
        valence_layer = layers.Embedding(vocab_size, 1, mask_zero=True, trainable=False, name="valence")
        v = valence_layer(inputs)
        x = layers.Concatenate(name="with_valence")([x, v])
    if pooling == "last":
        x = layers.Bidirectional(layers.LSTM(units), name="bilstm")(x)
    else:
        seq = layers.Bidirectional(layers.LSTM(units, return_sequences=True), name="bilstm")(x)
        mask = ops.expand_dims(ops.cast(ops.not_equal(inputs, PAD), seq.dtype), -1)
        if pooling == "last_mean":
            # Right-padded rows: the backward LSTM ends at position 0, the forward one at the last real token.
            last = ops.concatenate([_last_forward(seq, mask, units), seq[:, 0, units:]], axis=-1)
            mean = ops.sum(seq * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
            x = layers.Concatenate(name="pooled")([last, mean])
        else:
            scores = layers.Dense(1, use_bias=False, name="attention_score")(layers.Dense(units, activation="tanh", name="attention")(seq))
            weights = ops.softmax(scores + (1.0 - mask) * -1e9, axis=1)
            x = ops.sum(weights * seq, axis=1)
    x = layers.Dropout(dropout)(x)
    if lexicon:
        present = ops.expand_dims(ops.cast(ops.not_equal(inputs, PAD), "float32"), -1)
        vm = v * present
        count = ops.maximum(ops.sum(present, axis=1), 1.0)
        summary = [ops.sum(vm, axis=1) / count, ops.max(vm, axis=1), ops.min(vm, axis=1),
                   ops.sum(ops.relu(vm), axis=1), ops.sum(ops.relu(-vm), axis=1)]
        x = layers.Concatenate(name="with_lexicon")([x] + summary)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name=name)
    if embedding is not None:
        # Set after building rather than through a Constant initializer, which would copy the whole
        # matrix into the saved model's config.
        embedding_layer.set_weights([embedding])
    if valence_layer is not None and valence is not None:
        valence_layer.set_weights([np.asarray(valence, dtype="float32").reshape(vocab_size, 1)])
    if compile_model:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _last_forward(seq, mask, units: int):
    """The forward LSTM's output at each row's last real token (rows are right-padded)."""
    from keras import ops

    last = ops.maximum(ops.cast(ops.sum(mask, axis=(1, 2)), "int32") - 1, 0)
    picked = ops.take_along_axis(seq[:, :, :units], ops.reshape(last, (-1, 1, 1)), axis=1)
    return ops.squeeze(picked, axis=1)


def _class_weights(y: np.ndarray, num_classes: int, how: str) -> dict[int, float] | None:
    """``balanced``: n / (k * count); ``sqrt``: its square root (half-way to unweighted); ``none``."""
    if how not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {how!r}")
    if how == "none":
        return None
    counts = np.bincount(y, minlength=num_classes).astype("float64")
    weights = {i: float(len(y) / (num_classes * c)) if c else 0.0 for i, c in enumerate(counts)}
    return {i: float(np.sqrt(w)) for i, w in weights.items()} if how == "sqrt" else weights


def teacher_probabilities(token_lists: Sequence[Sequence[str]], y: np.ndarray, num_classes: int, folds: int = 5,
                          seed: int = 13, c: float = 3.0, vectors: np.ndarray | None = None,
                          vectors_c: float = 10.0, extra: tuple | None = None):
    """Out-of-fold class probabilities of a TF-IDF (word 1-2-grams + char 2-5-grams) logistic regression.

    Each row's probabilities come from a model fitted on the other folds only, so they say how a
    different kind of model sees that row rather than echo its label. None when the data are too
    small for that (a class with fewer than two rows, or no n-gram seen twice in a fold).

    ``vectors`` (one row per text, e.g. a pretrained sentence encoder's, see
    :mod:`sparktweet.sentence_encoder`): a second logistic regression (``vectors_c``) on them is fitted
    on the same folds, and the teacher is the mean of the two models' probabilities.

    ``extra`` = (token lists, vectors or None, source row of each): more rows, such as altered copies of
    the training rows (:func:`augment_texts`), each scored by the fold model that did not see its
    source row. The result is then the pair (probabilities of the rows, of the extra rows).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline, make_union

    texts = np.array([" ".join(t) for t in token_lists], dtype=object)
    out = np.full((len(texts), num_classes), 1.0 / num_classes, dtype="float32")
    extra_out = None
    if extra is not None:
        extra_texts = np.array([" ".join(t) for t in extra[0]], dtype=object)
        extra_vectors, extra_source = extra[1], np.asarray(extra[2])
        extra_out = np.full((len(extra_texts), num_classes), 1.0 / num_classes, dtype="float32")
    counts = np.bincount(y, minlength=num_classes)
    folds = min(folds, int(counts[counts > 0].min())) if len(y) else 0
    if folds < 2:
        return None
    for fit_idx, held_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, y):
        model = make_pipeline(
            make_union(
                TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=r"\S+"),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
            ),
            LogisticRegression(C=c, max_iter=3000),
        )
        try:
            model.fit(texts[fit_idx], y[fit_idx])
        except ValueError as exc:  # e.g. an empty vocabulary on a tiny training set
            log.warning("distillation teacher could not be fitted (%s); training on the labels alone", exc)
            return None
        dense = None
        if vectors is not None:
            dense = LogisticRegression(C=vectors_c, max_iter=3000).fit(vectors[fit_idx], y[fit_idx])

        def predict(rows_texts, rows_vectors, model=model, dense=dense):
            probs = np.zeros((len(rows_texts), num_classes), dtype="float64")
            probs[:, model.classes_] = model.predict_proba(rows_texts)
            if dense is not None:
                second = np.zeros_like(probs)
                second[:, dense.classes_] = dense.predict_proba(rows_vectors)
                probs = (probs + second) / 2.0
            return probs

        out[held_idx] = predict(texts[held_idx], None if vectors is None else vectors[held_idx])
        if extra_out is not None:
            rows = np.flatnonzero(np.isin(extra_source, held_idx))
            if len(rows):
                extra_out[rows] = predict(extra_texts[rows], None if extra_vectors is None else extra_vectors[rows])
    return out if extra is None else (out, extra_out)


# Named settings of :func:`augment_texts`. "drop" is Tang et al.'s masking and n-gram sampling; "mix" also
# swaps words for corpus words and joins pieces of two tweets, so the copies hold word combinations that no
# training row has, and only the teacher can label them (measured in docs/benchmarks.md).
AUGMENT_STYLES: dict[str, dict[str, float]] = {
    "drop": {},
    "mix": {"drop": 0.1, "span": 1.0, "min_span": 0.5, "mix": 0.3, "replace": 0.1},
}


def augment_texts(texts: Sequence[str], copies: int, seed: int = 13, drop: float = 0.15,
                  span: float = 0.3, min_span: float = 0.6, mix: float = 0.0,
                  replace: float = 0.0) -> tuple[list[str], np.ndarray]:
    """``copies`` altered copies of each text, and the index of each copy's source text.

    Each copy drops every word with probability ``drop`` (keeping at least one), and with probability
    ``span`` first keeps only a random run of at least ``min_span`` of the words: the distillation transfer
    set of Tang et al. (2019), "Distilling task-specific knowledge from BERT into simple neural networks".
    ``mix``: with that probability the copy is joined, before or after, with such a run of another
    text chosen at random (before words are dropped). ``replace``: each word kept is swapped, with that probability, for a word
    drawn from all the texts' words (by frequency). Both default to 0, which leaves the copies as above.
    """
    for name, value in (("drop", drop), ("span", span), ("min_span", min_span), ("mix", mix), ("replace", replace)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"augment_texts: {name} must be between 0 and 1, got {value}")
    rng = np.random.default_rng(seed)
    split = [(text or "").split() for text in texts]
    pool = [word for words in split for word in words] if replace > 0 else []

    def cut(w: list[str]) -> list[str]:
        if len(w) > 4 and rng.random() < span:
            length = int(rng.integers(int(np.ceil(min_span * len(w))), len(w) + 1))
            start = int(rng.integers(0, len(w) - length + 1))
            return w[start : start + length]
        return w

    out: list[str] = []
    source: list[int] = []
    for i, words in enumerate(split):
        for _ in range(copies):
            w = cut(words)
            if mix > 0 and len(split) > 1 and rng.random() < mix:
                other = int(rng.integers(0, len(split) - 1))
                other = cut(split[other + (other >= i)])  # any text but this one
                w = w + other if rng.random() < 0.5 else other + w
            keep = rng.random(len(w)) >= drop
            if len(w) and not keep.any():
                keep[int(rng.integers(0, len(w)))] = True
            kept = [word for word, k in zip(w, keep) if k]
            if pool:
                swap = rng.random(len(kept)) < replace
                kept = [pool[int(rng.integers(0, len(pool)))] if s else word for word, s in zip(kept, swap)]
            out.append(" ".join(kept))
            source.append(i)
    return out, np.array(source, dtype="int64")


def _average(members: list):
    """One Keras model whose output is the mean of the members' class probabilities."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    outputs = layers.Average(name="probs")([m(inputs) for m in members])
    return keras.Model(inputs, outputs, name="lstm_ensemble")


class TextClassifier:
    """An LSTM over token ids with its vocabulary and class labels."""

    def __init__(self, model, vocab: Vocabulary, labels: Sequence[str], max_len: int) -> None:
        self.model = model
        self.vocab = vocab
        self.labels = list(labels)
        self.max_len = max_len
        self._call = None

    @classmethod
    def train(
        cls,
        token_lists: Sequence[Sequence[str]],
        labels: Sequence[str],
        label_order: Sequence[str] | None = None,
        *,
        max_len: int = 40,
        vocab_size: int = 8000,
        embedding_dim: int = 64,
        units: int = 64,
        epochs: int = 6,
        batch_size: int = 64,
        validation_fraction: float = 0.1,
        class_weight: str = "balanced",
        pretrain_embeddings: bool = True,
        pooling: str = "last",
        dropout: float = 0.3,
        learning_rate: float = 2e-3,
        ensemble: int = 1,
        seed: int = 13,
        lexicon: bool = False,
        distill: float = 0.0,
        label_smoothing: float = 0.0,
        student: bool = False,
        student_weight: float = 1.0,
        student_epochs: int | None = None,
        teacher_encoder: str = "",
        teacher_texts: Sequence[str] | None = None,
        augment: int = 0,
        augment_style: str = "drop",
        teacher_finetune: int = 0,
        teacher_weight: float = 0.5,
        lr_schedule: str = "constant",
        teacher_per_member: bool = False,
        tokenize: Callable[[Sequence[str]], list[list[str]]] | None = None,
        verbose: int = 2,
    ) -> tuple["TextClassifier", dict]:
        """Fit on tokenised texts; returns the classifier and its training history (per epoch).

        ``ensemble`` > 1 trains that many LSTMs from different seeds (word2vec, weights, shuffling)
        and saves them as one Keras model averaging their probabilities: the average of a few
        seeds is steadier and more accurate than any one of them, at that many times the inference cost.

        ``lexicon`` adds the VADER valence channel (see :func:`build_lstm`; needs vaderSentiment to train).
        ``distill`` > 0 trains on soft targets, ``(1 - distill) * one-hot + distill * teacher``, where the
        teacher is a TF-IDF + logistic regression model's out-of-fold probabilities on the training rows
        (:func:`teacher_probabilities`): the LSTM stays the model, the teacher only shapes its targets.
        ``teacher_encoder`` (with ``distill``): ``"default"`` (the packaged MiniLM) or a model directory of a
        pretrained sentence encoder (:class:`sparktweet.sentence_encoder.SentenceEncoder`); its vectors of
        ``teacher_texts`` (the raw texts, one per row; default the tokens joined by spaces) give the
        teacher a second logistic regression, so knowledge from far more text than the training rows
        shapes the targets. The encoder is used at training time only: the model is still the LSTM.
        ``teacher_finetune`` > 0 (with ``teacher_encoder``): instead of a logistic regression on its frozen
        vectors, the encoder itself is fine-tuned for that many epochs on the training rows
        (:meth:`~sparktweet.sentence_encoder.SentenceEncoder.fine_tune`), and the teacher is its probabilities
        weighted by ``teacher_weight`` plus the TF-IDF model's weighted by the rest (at 1 the TF-IDF model is
        not fitted at all). Its probabilities on the training rows echo their labels;
        its knowledge reaches the LSTM through the altered copies (``augment``), which it has never seen.
        ``augment`` (with ``distill``): the model that is kept (the student, else each LSTM) also learns
        from that many altered copies of each training row (:func:`augment_texts`: words dropped, spans
        cut; ``augment_style`` "mix" also swaps words and joins pieces of two rows, see :data:`AUGMENT_STYLES`),
        whose targets are the teacher's probabilities from the fold model that did not see the
        source row (for a student, mixed with the ensemble's by ``student_weight``, as for the rows).
        ``tokenize`` turns the altered raw texts into tokens as the rows' were made; without it (or
        without ``teacher_texts``) the joined tokens are altered.
        ``label_smoothing`` smooths the targets towards uniform.
        ``lr_schedule`` (:data:`LR_SCHEDULES`): "cosine" decays the learning rate to 0 over ``epochs`` (the
        student's over ``student_epochs``); early stopping still restores the best epoch.

        ``student`` (with ``ensemble`` > 1) distils the ensemble into one LSTM: the members are trained
        as above, then one more LSTM (same recipe, seed ``seed + 7777``, member 0's word2vec init) learns
        ``(1 - student_weight) * targets + student_weight * ensemble probabilities`` on the training rows,
        for ``student_epochs`` epochs (default ``epochs``). The returned model is that one LSTM: the
        cost of one at inference. Its history keys carry a ``student_`` prefix.

        ``teacher_per_member`` (with ``ensemble`` > 1 and ``distill``, not with ``student``): each member
        after the first gets its own teacher and altered copies, made with the member's seed (``seed + 1000 *
        member``), so the members differ in their targets as well as in their weights. A fine-tuned teacher
        is then fine-tuned once per member: that many times the teacher's training cost.
        """
        import keras

        from sparktweet.embeddings import embedding_matrix, train_word2vec

        if distill <= 0 and (teacher_encoder or augment > 0):
            raise ValueError("teacher_encoder and augment shape the teacher's targets: they need distill > 0")
        if teacher_finetune < 0 or (teacher_finetune > 0 and not teacher_encoder):
            raise ValueError(f"teacher_finetune must be 0, or epochs > 0 with a teacher_encoder (got {teacher_finetune})")
        if not 0.0 <= teacher_weight <= 1.0:
            raise ValueError(f"teacher_weight must be between 0 and 1, got {teacher_weight}")
        if teacher_per_member and (ensemble < 2 or distill <= 0 or student):
            raise ValueError("teacher_per_member needs an ensemble (ensemble > 1) of LSTMs with a teacher (distill > 0), "
                             "and no student (its targets come from one teacher)")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if augment_style not in AUGMENT_STYLES:
            raise ValueError(f"augment_style must be one of {sorted(AUGMENT_STYLES)}, got {augment_style!r}")
        classes = list(label_order) if label_order else sorted(set(labels))
        y = np.array([classes.index(lbl) for lbl in labels], dtype="int32")
        vocab = Vocabulary.build(token_lists, max_size=vocab_size)
        x = vocab.encode(token_lists, max_len)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        n_val = int(len(y) * validation_fraction) if validation_fraction > 0 and len(y) >= 20 else 0
        val_idx, tr_idx = order[:n_val], order[n_val:]
        weights = _class_weights(y[tr_idx], len(classes), class_weight)
        valence = None
        if lexicon:
            from sparktweet.lexicon import valences

            valence = np.concatenate([np.zeros(2, dtype="float32"), valences(vocab.words)])
        soft = distill > 0 or label_smoothing > 0
        distil = student and ensemble > 1

        def shaped_targets(teacher_seed: int):
            """The kept model's targets for the training rows, and ``transfer``: (encoded altered copies, their
            teacher probabilities) or None. ``teacher_seed`` seeds the copies, the folds and the fine-tuning."""
            targets = y[tr_idx]
            transfer = None
            if soft:
                targets = np.eye(len(classes), dtype="float32")[y[tr_idx]]
                if distill > 0:
                    texts = list(teacher_texts) if teacher_texts is not None else [" ".join(t) for t in token_lists]
                    if len(texts) != len(token_lists):
                        raise ValueError(f"teacher_texts has {len(texts)} rows for {len(token_lists)} token lists")
                    fit_texts = [texts[i] for i in tr_idx]
                    altered, altered_tokens, source = [], [], np.zeros(0, dtype="int64")
                    if augment > 0:
                        altered, source = augment_texts(fit_texts, augment, seed=teacher_seed, **AUGMENT_STYLES[augment_style])
                        from_text = tokenize is not None and teacher_texts is not None
                        altered_tokens = tokenize(altered) if from_text else [t.split() for t in altered]
                    vectors = altered_vectors = tuned = None
                    if teacher_encoder:
                        from sparktweet.sentence_encoder import SentenceEncoder

                        encoder = SentenceEncoder(None if teacher_encoder == "default" else teacher_encoder)
                        if teacher_finetune > 0:
                            model = encoder.fine_tune(fit_texts, y[tr_idx], len(classes), epochs=teacher_finetune, seed=teacher_seed)
                            tuned = (model.predict_proba(fit_texts), model.predict_proba(altered) if augment > 0 else None)
                            del model
                        else:
                            vectors = encoder.encode(fit_texts)
                            altered_vectors = encoder.encode(altered) if augment > 0 else None
                        del encoder  # its weights (about 90 MB) are not needed while the LSTMs train
                    if tuned is not None and teacher_weight >= 1.0:  # the TF-IDF teacher would get no weight: not fitted
                        teacher, altered_teacher = tuned
                    else:
                        extra = (altered_tokens, altered_vectors, source) if augment > 0 else None
                        teacher = teacher_probabilities([token_lists[i] for i in tr_idx], y[tr_idx], len(classes),
                                                        seed=teacher_seed, vectors=vectors, extra=extra)
                        altered_teacher = None
                        if teacher is not None and augment > 0:
                            teacher, altered_teacher = teacher
                        if teacher is not None and tuned is not None:
                            teacher = (1.0 - teacher_weight) * teacher + teacher_weight * tuned[0]
                            altered_teacher = (None if altered_teacher is None
                                               else (1.0 - teacher_weight) * altered_teacher + teacher_weight * tuned[1])
                    if altered_teacher is not None:
                        transfer = (vocab.encode(altered_tokens, max_len), altered_teacher)
                    if teacher is not None:
                        targets = (1.0 - distill) * targets + distill * teacher
            return targets, transfer

        targets, transfer = shaped_targets(seed)
        sample_weight = None if weights is None else np.array([weights[int(c)] for c in y[tr_idx]], dtype="float32")

        def with_transfer(row_targets: np.ndarray, altered_x: np.ndarray, altered_targets: np.ndarray):
            """(targets, inputs, sample weights) of the training rows followed by the altered copies."""
            fit_x = np.concatenate([x[tr_idx], altered_x])
            fit_targets = np.concatenate([row_targets, altered_targets]).astype("float32")
            fit_weight = None
            if weights is not None:
                altered_weight = np.array([weights[int(c)] for c in altered_targets.argmax(axis=1)], dtype="float32")
                fit_weight = np.concatenate([sample_weight, altered_weight])
            return fit_targets, fit_x, fit_weight

        def fit_one(matrix, fit_targets, soft_targets: bool, fit_x=None, fit_weight=None, name: str | None = None,
                    run_epochs: int = epochs):
            """One LSTM fitted on ``fit_targets``; returns an uncompiled copy and its history (Keras seeded by the caller)."""
            model = build_lstm(
                len(vocab), len(classes), matrix, embedding_dim=embedding_dim, units=units, dropout=dropout,
                pooling=pooling, learning_rate=learning_rate, name=name, lexicon=lexicon, valence=valence,
            )
            rate = learning_rate
            if lr_schedule == "cosine":
                steps = -(-(len(tr_idx) if fit_x is None else len(fit_x)) // batch_size) * run_epochs
                rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
            if soft_targets or lr_schedule != "constant":
                model.compile(
                    optimizer=keras.optimizers.Adam(rate),
                    loss=(keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing) if soft_targets
                          else "sparse_categorical_crossentropy"),
                    metrics=["accuracy"],
                )
            callbacks = []
            validation = None
            if n_val:
                validation = (x[val_idx], np.eye(len(classes), dtype="float32")[y[val_idx]] if soft_targets else y[val_idx])
                callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True))
            fitted = model.fit(
                x[tr_idx] if fit_x is None else fit_x,
                fit_targets,
                validation_data=validation,
                epochs=run_epochs,
                batch_size=batch_size,
                sample_weight=sample_weight if fit_x is None else fit_weight,
                callbacks=callbacks,
                verbose=verbose,
            )
            # Keep an uncompiled copy: no optimizer state to carry or save.
            inference = build_lstm(
                len(vocab), len(classes), None, embedding_dim=embedding_dim, units=units, pooling=pooling,
                name=name, compile_model=False, lexicon=lexicon,
            )
            inference.set_weights(model.get_weights())
            return inference, {k: [float(v) for v in vals] for k, vals in fitted.history.items()}

        members, history, first_matrix = [], {}, None
        for member in range(max(1, ensemble)):
            member_seed = seed + 1000 * member
            keras.utils.set_random_seed(member_seed)
            matrix = None
            if pretrain_embeddings:
                vectors = train_word2vec(token_lists, dim=embedding_dim, seed=member_seed)
                matrix = embedding_matrix(vocab.index, vectors, embedding_dim, seed=member_seed)
            if member == 0:
                first_matrix = matrix
            name = f"lstm_{member}" if ensemble > 1 else None
            member_targets, member_transfer = targets, transfer
            if teacher_per_member and member > 0:
                log.info("ensemble member %d: its own teacher and copies (seed %d)", member, member_seed)
                member_targets, member_transfer = shaped_targets(member_seed)
            if member_transfer is not None and not distil:  # the altered copies go to the model that is kept
                rows_targets, rows_x, rows_weight = with_transfer(member_targets, *member_transfer)
                inference, fitted = fit_one(matrix, rows_targets, True, rows_x, rows_weight, name=name)
            else:
                inference, fitted = fit_one(matrix, member_targets, soft, name=name)
            members.append(inference)
            prefix = f"member{member}_" if ensemble > 1 else ""
            history.update({prefix + k: v for k, v in fitted.items()})
        model = members[0] if len(members) == 1 else _average(members)
        if distil:
            ensemble_probs = np.asarray(model.predict(x[tr_idx], batch_size=1024, verbose=0), dtype="float32")
            hard = targets if soft else np.eye(len(classes), dtype="float32")[targets]
            student_targets = (1.0 - student_weight) * hard + student_weight * ensemble_probs
            keras.utils.set_random_seed(seed + 7777)
            if transfer is not None:
                # As for the training rows, with the teacher in place of the labels.
                altered_ensemble = np.asarray(model.predict(transfer[0], batch_size=1024, verbose=0))
                altered_targets = (1.0 - student_weight) * transfer[1] + student_weight * altered_ensemble
                rows_targets, rows_x, rows_weight = with_transfer(student_targets, transfer[0], altered_targets)
                model, fitted = fit_one(first_matrix, rows_targets, True, rows_x, rows_weight, run_epochs=student_epochs or epochs)
            else:
                model, fitted = fit_one(first_matrix, student_targets, True, run_epochs=student_epochs or epochs)
            history.update({"student_" + k: v for k, v in fitted.items()})
        return cls(model, vocab, classes, max_len), history

    def save(self, path: str) -> None:
        """Write the model without its optimizer state (inference never needs it)."""
        os.makedirs(path, exist_ok=True)
        model = self.model
        if getattr(model, "optimizer", None) is not None:
            model = self.rebuilt()
        model.save(os.path.join(path, MODEL_FILE))
        meta = {"format": FORMAT, "labels": self.labels, "max_len": self.max_len, "vocab": self.vocab.words}
        with open(os.path.join(path, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f)

    def rebuilt(self):
        """An uncompiled copy of the network with the same weights (small config, no optimizer)."""
        weights = self.model.get_weights()
        embedding_dim = weights[0].shape[1]
        units = self.model.get_layer("bilstm").forward_layer.units
        model = build_lstm(weights[0].shape[0], len(self.labels), None, embedding_dim=embedding_dim, units=units, compile_model=False)
        model.set_weights(weights)
        return model

    @classmethod
    def load(cls, path: str, threads: int = 0) -> "TextClassifier":
        configure_tensorflow(threads)
        import keras

        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            from sparktweet.errors import ModelError

            raise ModelError(f"{path}: classifier format {meta.get('format')!r} is not {FORMAT!r}; retrain the model.")
        model = keras.models.load_model(os.path.join(path, MODEL_FILE), compile=False)
        return cls(model, Vocabulary(meta["vocab"]), meta["labels"], int(meta["max_len"]))

    def _compiled(self):
        if self._call is None:
            import tensorflow as tf

            model = self.model
            self._call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return self._call

    def predict_proba(self, token_lists: Sequence[Sequence[str] | None], batch_size: int = 1024) -> np.ndarray:
        """Class probabilities, shape (n, classes). Rows are length-bucketed so short tweets carry no padding."""
        n = len(token_lists)
        probs = np.zeros((n, len(self.labels)), dtype="float32")
        if n == 0:
            return probs
        x = self.vocab.encode(token_lists, self.max_len)
        lengths = (x != PAD).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        call = self._compiled()
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            # Exactly as wide as the chunk's longest row: no padded steps. The tf.function is traced with
            # reduce_retracing, so after a couple of widths it runs one shape-generic graph (rounding widths
            # up to multiples of 8 cost 12-19 % more per tweet, measured side by side).
            width = max(int(lengths[idx].max()), 1)
            probs[idx] = np.asarray(call(x[idx, :width]))
        return probs

    def predict(self, token_lists: Sequence[Sequence[str] | None], batch_size: int = 1024) -> tuple[list[str], np.ndarray]:
        """Predicted labels and the probability of each chosen label."""
        probs = self.predict_proba(token_lists, batch_size)
        best = probs.argmax(axis=1)
        return [self.labels[i] for i in best], probs[np.arange(len(best)), best]

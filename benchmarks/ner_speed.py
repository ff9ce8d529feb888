#!/usr/bin/env python
"""Per-stage CPU cost per tweet of the saved pipeline's models, and the NER fast path against the
spaCy pipeline, side by side in one single-threaded process.

    python benchmarks/ner_speed.py [--model models/default/pipeline] [--data Tweets.csv] [--repeat 3]

Every stage runs through the same Python-side functions as the plain-Python path of
``benchmarks/throughput.py`` (``PlainPipeline``) on every text of Tweets.csv (14,640 tweets), once
to warm up (tf.function tracing, tokenizer memos), then ``--repeat`` times; the fastest run is
reported, in milliseconds per tweet. NER is measured twice: ``ner.extract(..., fast=False)``, every
text through the spaCy pipeline (tokenizer, regex component, EntityRuler, merge), and the default
fast path; the two entity lists are compared text by text. TensorFlow is limited to one thread so
that the figures add up to one core's work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from throughput import DEFAULT_DATA, DEFAULT_MODEL, PlainPipeline


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of the fastest of ``repeat`` calls (after one warm-up call) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Saved pipeline (default: models/default/pipeline).")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Tweets.csv (default: ../shared/data/Tweets.csv).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs per stage; the fastest counts (default 3).")
    parser.add_argument("-n", "--tweets", type=int, default=0, help="Use only the first N tweets (default: all).")
    args = parser.parse_args(argv)

    import pandas as pd

    from sparktweet import ner
    from sparktweet.keras_io import configure_tensorflow
    from sparktweet.tickets import QUESTION_WORDS

    configure_tensorflow(1)
    texts = pd.read_csv(args.data, dtype=str, keep_default_na=False)["text"].tolist()
    if args.tweets:
        texts = texts[: args.tweets]
    n = len(texts)
    pipe = PlainPipeline(args.model)
    rows: list[tuple[str, float]] = []

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        seconds, result = best_of(args.repeat, fn)
        rows.append((name, seconds * 1000 / n))
        print(f"  {name:<44} {seconds * 1000 / n:7.3f} ms/tweet", flush=True)
        return result

    print(f"{n:,} tweets, model {args.model}, best of {args.repeat}")
    tokens = stage("preprocessing (TextPreprocessor.tokenize)", lambda: [pipe.pre.tokenize(t) for t in texts])
    stage("LDA inference (GuidedLda.label)", lambda: pipe.lda.label(tokens))
    topic_in = pipe._lstm_input(pipe.topic_params, texts, tokens)
    stage("topic LSTM (TextClassifier.predict)", lambda: pipe.topic.predict(topic_in, batch_size=1024))
    sentiment_in = pipe._lstm_input(pipe.sentiment_params, texts, tokens)
    sentiment, _ = stage("sentiment LSTM (TextClassifier.predict)", lambda: pipe.sentiment.predict(sentiment_in, batch_size=1024))
    slow = stage("NER, spaCy pipeline (extract fast=False)", lambda: ner.extract(pipe.nlp, texts, max_length=pipe.max_text, fast=False))
    fast = stage("NER, fast path (extract, default)", lambda: ner.extract(pipe.nlp, texts, max_length=pipe.max_text))
    starts = tuple(w.lower() for w in QUESTION_WORDS)

    def tickets() -> int:
        # The ticket decision; ids and replies are rendered for the rows that get one.
        return sum(
            1 for i, t in enumerate(texts)
            if sentiment[i] == "negative" or (("?" in t or t.lower().lstrip().startswith(starts)) and sentiment[i] != "positive")
        )

    stage("tickets (decision only)", tickets)
    same = sum(a == b for a, b in zip(slow, fast, strict=True))
    costs = dict(rows)
    ratio = costs["NER, spaCy pipeline (extract fast=False)"] / costs["NER, fast path (extract, default)"]
    total_old = sum(v for k, v in costs.items() if "fast path" not in k)
    total_new = sum(v for k, v in costs.items() if "fast=False" not in k)
    print(f"\nNER fast path: {ratio:.1f}x faster than the spaCy pipeline; identical entities on {same:,} of {n:,} texts "
          f"({100 * same / n:.2f} %)")
    print(f"all stages, one core: {total_old:.3f} ms/tweet with the spaCy NER, {total_new:.3f} ms/tweet with the fast path "
          f"(~{1000 / total_new:,.0f} tweets/s per core)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: figures are upper bounds)")
    return 0 if same == n else 1


if __name__ == "__main__":
    sys.exit(main())

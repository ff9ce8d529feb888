#!/usr/bin/env python
"""Inference speed of the saved pipeline, with and without Spark, in one command.

    python benchmarks/throughput.py [--model models/default/pipeline] [-n 100000] [--quick]

Prints, in one run:

1. whole-pipeline batch scoring with Spark ``local[2]`` (``sparktweet.scoring.score``: read the
   input, all six stages, the Python ones fused into one worker pass, write Parquet), tweets/s,
   cold (first job: Python workers start and load the models) and warm (the last of
   ``--warm-runs`` further jobs on the same session, each printed); ``--no-fuse`` runs each stage as its own pandas UDF instead, for comparison;
2. the same models in one plain Python process without Spark (TextPreprocessor → GuidedLda.label →
   TextClassifier.predict ×2 → ner.extract → ticket ids and replies), tweets/s, and the ratio;
3. one LSTM's inference alone (the topic model's ``TextClassifier.predict_proba`` on pre-tokenised tweets; the
   sentiment model beside it, with the number of LSTMs it runs: one for a distilled student, several
   for an averaged ensemble) and the
   naive design, a per-row Spark UDF calling Keras ``model.predict`` for each tweet (on 2,000 tweets);
4. peak memory (RSS) of the Spark scoring job: driver, JVM and Python workers together, and of the
   plain Python process.

The input is Tweets.csv replicated to ``-n`` tweets with fresh tweet ids, written as Parquet. The
machine is shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a fresh clone without installing the package
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("throughput")

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "Tweets.csv"
DEFAULT_MODEL = ROOT / "models" / "default" / "pipeline"
FLOORS = {"pipeline": 3000.0, "ratio": 0.8, "lstm": 10000.0}


# --- input --------------------------------------------------------------------------------------


def make_input(data: str | Path, n: int, out_dir: str, files: int = 4) -> str:
    """Tweets.csv replicated to ``n`` rows with unique tweet ids, as ``files`` Parquet files in ``out_dir``."""
    import numpy as np
    import pandas as pd

    src = pd.read_csv(data, dtype=str, keep_default_na=False)
    src = src[["tweet_id", "text", "name", "tweet_created", "airline"]]
    reps = -(-n // len(src))
    df = pd.concat([src] * reps, ignore_index=True).iloc[:n].copy()
    # 19-digit ids, unique per row: the ticket id hashes the tweet id, so copies get their own tickets.
    df["tweet_id"] = [str(10**18 + i) for i in range(n)]
    df = df.rename(columns={"name": "author_username", "tweet_created": "created_at"})
    path = os.path.join(out_dir, "tweets.parquet")
    os.makedirs(path, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(n), files)):
        df.iloc[part].to_parquet(os.path.join(path, f"part-{i:03d}.parquet"), index=False)
    return path


# --- saved pipeline without Spark ---------------------------------------------------------------


def stage_folders(pipeline: str | Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(class name, stage folder, params) of each stage of a saved PipelineModel, in order, read without Spark."""
    out = []
    for folder in sorted(glob.glob(os.path.join(str(pipeline), "stages", "*")), key=lambda p: int(os.path.basename(p).split("_")[0])):
        meta_file = min(glob.glob(os.path.join(folder, "metadata", "part-*")))
        with open(meta_file, encoding="utf-8") as f:
            meta = json.loads(f.readline())
        params = {**meta.get("defaultParamMap", {}), **meta.get("paramMap", {})}
        out.append((meta["class"].rsplit(".", 1)[-1], folder, params))
    if not out:
        raise SystemExit(f"{pipeline} is not a saved pipeline (no stages/ folder); train one or pass --model")
    return out


class PlainPipeline:
    """The saved pipeline's models called directly in this process, in the pipeline's order."""

    def __init__(self, pipeline: str | Path) -> None:
        from sparktweet import ner
        from sparktweet.categories import parse_categories
        from sparktweet.keras_io import TextClassifier
        from sparktweet.lda import GuidedLda
        from sparktweet.text import default_preprocessor

        stages = {name: (folder, params) for name, folder, params in stage_folders(pipeline)}
        art = {name: os.path.join(folder, "artifacts") for name, (folder, _) in stages.items()}
        self.pre = default_preprocessor()
        self.lda = GuidedLda.load(art["TopicLabelerModel"])
        self.topic = TextClassifier.load(art["TopicModel"])
        self.sentiment = TextClassifier.load(art["SentimentModel"])
        self.sentiment_params = stages["SentimentModel"][1]
        self.topic_params = stages["TopicModel"][1]
        ner_params = stages["EntityExtractor"][1]
        self.max_text = int(ner_params.get("maxTextLength", 100_000))
        self.nlp = ner.load_nlp(art["EntityExtractor"], model=ner_params.get("spacyModel", ""), max_length=self.max_text)
        ticket_params = stages["TicketGenerator"][1]
        raw = ticket_params.get("categoriesJson")
        if raw:
            categories = parse_categories(json.loads(raw))
        else:
            from sparktweet.categories import load_categories

            categories = load_categories()
        self.categories = {c.code: c for c in categories}
        self.tracking = ticket_params.get("trackingUrl", "http://127.0.0.1:8080/tickets/{ticket_id}")

    def _lstm_input(self, params: dict[str, Any], texts: Sequence[str], tokens: list[list[str]]) -> list[list[str]]:
        if params.get("keepStopWords"):
            from sparktweet.text import default_preprocessor

            keep = default_preprocessor(keep_stop_words=True, keep_marks=bool(params.get("keepMarks")))
            return [keep.tokenize(t) for t in texts]
        return tokens

    def score(self, frame):
        """Score a pandas frame of canonical tweets; returns the enriched frame."""
        import pandas as pd

        from sparktweet import ner
        from sparktweet.ticket_ids import make_ticket_id
        from sparktweet.tickets import QUESTION_WORDS, render_reply

        texts = frame["text"].tolist()
        tokens = [self.pre.tokenize(t) for t in texts]
        topic_label, topic_score = self.lda.label(tokens)
        category, category_score = self.topic.predict(self._lstm_input(self.topic_params, texts, tokens),
                                                      batch_size=int(self.topic_params.get("batchSize", 1024)))
        sentiment, sentiment_score = self.sentiment.predict(self._lstm_input(self.sentiment_params, texts, tokens),
                                                            batch_size=int(self.sentiment_params.get("batchSize", 1024)))
        entities = ner.extract(self.nlp, texts, max_length=self.max_text)
        starts = tuple(w.lower() for w in QUESTION_WORDS)
        ticket_ids, replies = [], []
        for i, text in enumerate(texts):
            lower = text.lower()
            question = "?" in lower or lower.lstrip().startswith(starts)
            if sentiment[i] == "negative" or (question and sentiment[i] != "positive"):
                cat = self.categories[category[i]]
                tid = make_ticket_id(frame["tweet_id"].iat[i], cat.prefix, frame["created_at"].iat[i])
                ents = entities[i].entities or []
                flight = next((f" on flight {e.text}" for e in ents if e.label == "FLIGHT"), "")
                airport = next((e.text for e in ents if e.label == "AIRPORT"), "")
                ticket_ids.append(tid)
                replies.append(render_reply(cat.template, ticket_id=tid, name=cat.name, tracking_url=self.tracking.format(ticket_id=tid),
                                            flight=flight, airport=airport))
            else:
                ticket_ids.append(None)
                replies.append(None)
        return frame.assign(
            tokens=tokens, topic_label=topic_label, topic_score=topic_score, category=category, category_score=category_score,
            sentiment=sentiment, sentiment_score=sentiment_score,
            entities=[[e._asdict() for e in r.entities] if r.entities is not None else None for r in entities],
            ticket_id=ticket_ids, reply_text=replies,
        ).pipe(pd.DataFrame)


def count_lstms(model) -> int:
    """Bidirectional LSTM layers in a Keras model, nested models (ensemble members) included."""
    from keras import layers

    return sum(count_lstms(layer) if hasattr(layer, "layers") else isinstance(layer, layers.Bidirectional) for layer in model.layers)


def plain_main(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in its own process (no pyspark session): plain pipeline and one-LSTM figures, as JSON."""
    import numpy as np
    import pandas as pd

    from sparktweet.keras_io import configure_tensorflow

    configure_tensorflow(args.plain_tf_threads)
    out: dict[str, Any] = {}
    start = time.monotonic()
    pipe = PlainPipeline(args.model)
    out["plain_load_seconds"] = time.monotonic() - start
    frame = pd.read_parquet(args.input)
    warm = frame.iloc[: min(2000, len(frame))]
    pipe.score(warm)  # traces the tf.functions and fills the tokeniser memo, like a warm Spark worker
    start = time.monotonic()
    scored = pipe.score(pd.read_parquet(args.input))
    with tempfile.TemporaryDirectory() as tmp:
        scored.drop(columns=["entities"]).to_parquet(os.path.join(tmp, "out.parquet"))
    seconds = time.monotonic() - start
    out["plain_seconds"] = seconds
    out["plain_rows"] = len(scored)
    out["plain_tweets_per_s"] = len(scored) / seconds
    # One LSTM alone, on pre-tokenised tweets: the topic model (a single LSTM). The sentiment model's
    # rate is reported beside, with the LSTMs its saved graph runs (an averaged ensemble runs several).
    texts = frame["text"].tolist()
    base_tokens = [pipe.pre.tokenize(t) for t in texts]
    for key, clf, params in (("lstm", pipe.topic, pipe.topic_params), ("sentiment_lstm", pipe.sentiment, pipe.sentiment_params)):
        tokens = pipe._lstm_input(params, texts, base_tokens)
        clf.predict_proba(tokens[:2000])
        start = time.monotonic()
        probs = clf.predict_proba(tokens)
        seconds = time.monotonic() - start
        out[f"{key}_tweets_per_s"] = len(tokens) / seconds
        out[f"{key}_rows"] = len(tokens)
        out[f"{key}_checksum"] = float(np.asarray(probs).sum())
    out["sentiment_lstms"] = count_lstms(pipe.sentiment.model)
    out["plain_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- Spark side ---------------------------------------------------------------------------------


class TreeMemory:
    """Samples the summed RSS of this process and all its descendants (JVM, Python workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
        total, todo = 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                with open(f"/proc/{pid}/statm", encoding="utf-8") as f:
                    total += int(f.read().split()[1]) * self._page
            except (OSError, IndexError, ValueError):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:  # noqa: PYI034 - a final class, not meant for subclassing
        self.peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def naive_udf_rate(spark, pipeline_model, input_path: str, n: int) -> float:
    """Tweets/s of a per-row UDF calling Keras ``model.predict`` on one tweet at a time (the topic LSTM, as in "one LSTM")."""
    import numpy as np
    from pyspark.sql import functions as F

    from sparktweet.keras_io import TextClassifier
    from sparktweet.topics import TopicModel
    from sparktweet.workers import cached, resolve_artifact

    stage = next(s for s in pipeline_model.stages if isinstance(s, TopicModel))
    ref = stage._artifact_ref()
    keep = bool(stage.getOrDefault("keepStopWords"))
    col = stage.getTextCol() if keep else stage.getTokensCol()

    @F.udf("string")
    def naive(value):
        clf = cached("naive-lstm", resolve_artifact(ref), TextClassifier.load)
        if value is None:
            return None
        if keep:
            from sparktweet.text import default_preprocessor

            tokens = default_preprocessor(keep_stop_words=True).tokenize(value)
        else:
            tokens = list(value)
        x = clf.vocab.encode([tokens], clf.max_len)
        probs = clf.model.predict(x, verbose=0)
        return clf.labels[int(np.argmax(probs[0]))]

    pre = pipeline_model.stages[0]
    df = pre.transform(spark.read.parquet(input_path).limit(n)).select(col).localCheckpoint(eager=True)
    df.select(naive(F.col(col)).alias("s")).limit(20).write.format("noop").mode("overwrite").save()  # load the model in the workers
    start = time.monotonic()
    df.select(naive(F.col(col)).alias("s")).write.format("noop").mode("overwrite").save()
    return n / (time.monotonic() - start)


def spark_main(args: argparse.Namespace, input_path: str) -> dict[str, Any]:
    from sparktweet import scoring
    from sparktweet.scoring import score
    from sparktweet.session import build_session
    from sparktweet.training import load_model

    if args.no_fuse:
        # Every stage its own pandas UDF, as before sparktweet.fusion: for before/after figures.
        scoring.fuse = lambda model: model
    out: dict[str, Any] = {}
    config = {"spark": {"master": f"local[{args.cores}]", "arrow_batch_size": args.arrow_batch, "log_level": "ERROR"}}
    mem = TreeMemory()
    with mem:
        spark = build_session(config, app_name="sparktweet-throughput")
        model = load_model(str(args.model))
        with tempfile.TemporaryDirectory() as tmp:
            cold = score(spark, model, [input_path], os.path.join(tmp, "cold"))
            # The fused pipeline is one Python UDF per task, so each task slot's pooled worker loads
            # the models once, in the cold job. With --no-fuse each stage is its own UDF and worker,
            # and a pooled worker may first get a model stage in a later job and load it then. The
            # last of ``--warm-runs`` jobs is the steady state and is the figure compared.
            warms = [score(spark, model, [input_path], os.path.join(tmp, f"warm{i}")) for i in range(max(1, args.warm_runs))]
            warm = warms[-1]
    out["spark_rows"] = warm.rows
    out["spark_cold_seconds"], out["spark_cold_tweets_per_s"] = cold.seconds, cold.tweets_per_second
    out["spark_warm_seconds"], out["spark_warm_tweets_per_s"] = warm.seconds, warm.tweets_per_second
    out["spark_warm_runs_tweets_per_s"] = [w.tweets_per_second for w in warms]
    out["spark_errors"] = warm.errors
    out["spark_tickets"] = warm.tickets
    out["spark_peak_rss_mb"] = mem.peak / 2**20
    out["naive_udf_rows"] = args.naive_n
    out["naive_udf_tweets_per_s"] = naive_udf_rate(spark, model, input_path, args.naive_n)
    spark.stop()
    return out


def verdict(value: float, floor: float) -> str:
    return "PASS" if value >= floor else "FAIL"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Saved pipeline (default: models/default/pipeline).")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Tweets.csv to replicate (default: ../shared/data/Tweets.csv).")
    parser.add_argument("-n", "--tweets", type=int, default=100_000, help="Tweets to score (default 100,000).")
    parser.add_argument("--quick", action="store_true", help="10,000 tweets and 500 for the naive UDF.")
    parser.add_argument("--naive-n", type=int, default=2000, help="Tweets for the naive per-row UDF (default 2,000).")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N] (default 2).")
    parser.add_argument("--warm-runs", type=int, default=2,
                        help="Scoring jobs after the cold one; the last is the warm figure, all are printed (default 2).")
    parser.add_argument("--arrow-batch", type=int, default=8192, help="spark.sql.execution.arrow.maxRecordsPerBatch.")
    parser.add_argument("--plain-tf-threads", type=int, default=0, help="TensorFlow threads in the plain process (0: TF's default).")
    parser.add_argument("--no-fuse", action="store_true", help="Score with one pandas UDF per stage (no sparktweet.fusion), for comparison.")
    parser.add_argument("--json", help="Also write the figures to this JSON file.")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.plain_only:
        print(json.dumps(plain_main(args)))
        return 0
    if args.quick:
        args.tweets, args.naive_n = min(args.tweets, 10_000), min(args.naive_n, 500)
    if not os.path.isdir(args.model):
        raise SystemExit(f"No saved pipeline at {args.model}: train one (`make train`) or pass --model.")
    with tempfile.TemporaryDirectory(prefix="sparktweet-throughput-") as tmp:
        input_path = make_input(args.data, args.tweets, tmp)
        log.info("input: %d tweets in %s", args.tweets, input_path)
        results: dict[str, Any] = {"tweets": args.tweets, "cores": args.cores, "arrow_batch": args.arrow_batch}
        results.update(spark_main(args, input_path))
        cmd = [sys.executable, __file__, "--plain-only", "--model", str(args.model), "--input", input_path,
               "--plain-tf-threads", str(args.plain_tf_threads)]
        plain = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.update(json.loads(plain.stdout.strip().splitlines()[-1]))
    results["load_average"] = os.getloadavg()
    ratio = results["spark_warm_tweets_per_s"] / results["plain_tweets_per_s"]
    lstm_ratio = results["lstm_tweets_per_s"] / results["naive_udf_tweets_per_s"]
    rows = [
        (f"whole pipeline, Spark local[{args.cores}]{', unfused' if args.no_fuse else ''}, warm (tweets/s)", f"{results['spark_warm_tweets_per_s']:,.0f}",
         f">= {FLOORS['pipeline']:,.0f}", verdict(results["spark_warm_tweets_per_s"], FLOORS["pipeline"])),
        ("whole pipeline, Spark, cold incl. worker start-up (tweets/s)", f"{results['spark_cold_tweets_per_s']:,.0f}", "reported", ""),
        ("  each warm job in turn (tweets/s)", ", ".join(f"{r:,.0f}" for r in results["spark_warm_runs_tweets_per_s"]), "reported", ""),
        ("same models, one plain Python process (tweets/s)", f"{results['plain_tweets_per_s']:,.0f}", "reported", ""),
        ("Spark / plain Python", f"{ratio:.2f}x", f">= {FLOORS['ratio']}x", verdict(ratio, FLOORS["ratio"])),
        ("one LSTM (the topic model), TextClassifier.predict_proba (tweets/s)", f"{results['lstm_tweets_per_s']:,.0f}",
         f">= {FLOORS['lstm']:,.0f}", verdict(results["lstm_tweets_per_s"], FLOORS["lstm"])),
        (f"sentiment model, {results['sentiment_lstms']} LSTM{'s averaged in one graph' if results['sentiment_lstms'] > 1 else ''} (tweets/s)",
         f"{results['sentiment_lstm_tweets_per_s']:,.0f}", "reported", ""),
        (f"naive per-row UDF, model.predict per tweet, {args.naive_n} tweets (tweets/s)", f"{results['naive_udf_tweets_per_s']:,.1f}",
         "reported", ""),
        ("  one LSTM / naive UDF", f"{lstm_ratio:,.0f}x", "", ""),
        ("peak RSS, Spark scoring (driver + JVM + Python workers)", f"{results['spark_peak_rss_mb']:,.0f} MB", "reported", ""),
        ("peak RSS, plain Python process", f"{results['plain_peak_rss_mb']:,.0f} MB", "reported", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"\nThroughput on {args.tweets:,} tweets (Tweets.csv replicated), model {args.model}")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    load = results["load_average"]
    print(f"\n{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          "(machine shared with other work: figures are lower bounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

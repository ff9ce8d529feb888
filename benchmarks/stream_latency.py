"""End-to-end latency and throughput of the stream job on a real local Kafka broker.

For each variant (the saved model, then the same job with the model stages replaced by a trivial
SQL stage that asks a ticket for every tweet):

1. start a fresh stream job (own topics, output and checkpoint) in this process (``local[*]``);
2. warm it up with ``--warmup-rounds`` rounds of ``--warmup`` tweets, waiting until each round is
   written (Python workers started, models loaded in every worker of the pool), so the figures
   are those of a running job, not of its start-up;
3. replay ``--rate`` tweets/s for ``--steady-warmup`` seconds, not measured: the Spark JVM keeps
   JIT-compiling Catalyst's planning code and each batch's generated classes for minutes (on two
   cores, ~470-720 compilations/s in the first minute, ~70/s after four), and a paced batch took
   3.9 s at the start of a run and 1.6-1.9 s after three minutes; a stream job runs for days, so the
   figures are those of a warm JVM, and the per-window p50s below show the trend;
4. replay ``--rate`` tweets/s for ``--duration`` seconds (tweet i sent at start + i/rate, fresh tweet ids, texts
   from the bundled sample or ``--texts`` CSV) and measure, per tweet,
   * produce -> outbox: the ``replies.outbox`` record's timestamp minus the ``tweets.raw``
     record's timestamp (both CreateTime, stamped by the producers: librdkafka at produce time,
     Spark's Kafka writer at send time), for tweets that got a ticket;
   * produce -> Parquet: the modification time of the Parquet file holding the row minus the
     ``tweets.raw`` timestamp (the file is complete then; the commit to the checkpoint follows);
5. measure the maximum sustained rate: push a backlog of ``--backlog`` tweets at once and divide
   by the time the job takes to drain it (micro-batches of ``--max-offsets-per-trigger``): a rate
   below it does not grow the lag.

Prints p50/p95/p99/max of both latencies, the achieved input rate, the sustained rate, and the
ratios model / no model.

Usage::

    python benchmarks/stream_latency.py --rate 200 --duration 120
    python benchmarks/stream_latency.py --rate 50 --duration 30 --backlog 2000 --model models/default

Starts its own broker on free ports unless ``--bootstrap host:port`` is given.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # runs from a checkout without `pip install -e .`

from sparktweet import kafka_broker, kafka_io
from sparktweet.config import load_config
from sparktweet.replay import read_dump
from sparktweet.streaming import DEDUP_STORES

log = logging.getLogger("stream_latency")
#: Issue 4's floors, for the model variant at 200 tweets/s: produce -> outbox p50 and p99 (seconds),
#: and the sustained rate (tweets/s).
FLOORS = {"p50": 1.0, "p99": 2.5, "sustained": 2000.0}
SAMPLE = os.path.join(ROOT, "sparktweet", "data", "sample_tweets.jsonl")


@dataclass
class VariantResult:
    name: str
    sent: int = 0
    input_rate: float = 0.0
    outbox_latency: list[float] = field(default_factory=list)
    parquet_latency: list[float] = field(default_factory=list)
    missing: int = 0
    sustained_rate: float | None = None
    #: produce -> outbox latencies by --window seconds of the measured replay (window index -> seconds)
    outbox_windows: dict[int, list[float]] = field(default_factory=dict)
    backlog_seconds: float | None = None
    #: Median per-batch figures of the paced phase: Spark's durationMs and the foreachBatch steps.
    breakdown: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    batch_rows: float = 0.0
    #: Kafka source scans, and shuffles read twice (ReusedExchange), in the plan of the last paced batch.
    scans: int | None = None
    reused_shuffles: int | None = None


def _progress_collector(query_name: str) -> Any:
    """A listener keeping (batchId, numInputRows, durationMs, state operator timings) of each batch of the query."""
    from sparktweet.streaming import JsonProgressListener

    class Collector(JsonProgressListener):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[tuple[int, int, dict[str, float]]] = []

        def onQueryStarted(self, event: Any) -> None:
            pass

        def onQueryProgress(self, event: Any) -> None:
            p = event.progress
            if p.name != query_name:
                return
            durations = {k: float(v) for k, v in (p.durationMs or {}).items()}
            for op in p.stateOperators or []:
                for key in ("allUpdatesTimeMs", "allRemovalsTimeMs", "commitTimeMs"):
                    durations[f"state.{key}"] = durations.get(f"state.{key}", 0.0) + float(getattr(op, key, 0) or 0)
            self.batches.append((p.batchId, p.numInputRows, durations))

        def onQueryIdle(self, event: Any) -> None:
            pass

        def onQueryTerminated(self, event: Any) -> None:
            pass

    return Collector()


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.median([r.get(k, 0.0) for r in rows])) for k in keys}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _texts(path: str | None) -> list[str]:
    if path:
        import pandas as pd

        return [t for t in pd.read_csv(path, dtype=str, keep_default_na=False)["text"].tolist() if t.strip()]
    return [json.loads(r.value)["text"] for r in read_dump(SAMPLE) if r.valid and json.loads(r.value)["text"].strip()]


class Tweets:
    """Fresh canonical tweets with unique ids."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.next_id = 1890000000000000000 + random.randrange(10**9) * 1000

    def make(self) -> tuple[bytes, bytes]:
        tweet_id = str(self.next_id)
        self.next_id += 1
        record = {"tweet_id": tweet_id, "text": self.texts[self.next_id % len(self.texts)], "author_username": "bench",
                  "created_at": "2026-11-25T10:00:00Z", "mentions": ["united"], "source": "replay"}
        return tweet_id.encode(), kafka_io.encode_tweet(record)


def _produce(config: dict, tweets: Tweets, count: int, rate: float | None) -> tuple[list[bytes], float]:
    p = kafka_io.producer(config, linger_ms=0)
    topic = kafka_io.topic_name(config, "raw")
    # Tweet i is due at began + i / rate: a late send (a sleep overshoot, a busy core) is caught up
    # by the next ones, so the run keeps the asked rate. (A token bucket of one token lost every
    # overshoot: 170 of 200 tweets/s were sent on the 2-core machine.)
    interval = 1.0 / rate if rate else 0.0
    keys = []
    began = due = time.monotonic()
    for _ in range(count):
        if interval:
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            due += interval
        key, value = tweets.make()
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        keys.append(key)
    seconds = time.monotonic() - began
    p.flush(60)
    return keys, seconds


def _timestamps(config: dict, logical: str) -> dict[bytes, float]:
    """Key -> CreateTime (seconds) of every record of the topic (first one per key)."""
    from sparktweet.demo import read_since

    out: dict[bytes, float] = {}
    for msg in read_since(config, kafka_io.topic_name(config, logical), {}, timeout=120):
        out.setdefault(msg.key(), msg.timestamp()[1] / 1000)
    return out


def _parquet_written(output: str) -> dict[str, float]:
    """tweet_id -> modification time of the Parquet file that holds it (first file per id)."""
    import pyarrow.parquet as pq

    out: dict[str, float] = {}
    for path in glob.glob(os.path.join(output, "date=*", "*.parquet")):
        written = os.path.getmtime(path)
        for tweet_id in pq.read_table(path, columns=["tweet_id"]).column("tweet_id").to_pylist():
            out[tweet_id] = min(out.get(tweet_id, written), written)
    return out


def passthrough_model() -> Any:
    """The job without its NLP stages: typed output columns from one SQL stage, a ticket for every tweet."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import SQLTransformer

    return PipelineModel([SQLTransformer(statement="""
        SELECT *, CAST(NULL AS array<string>) AS tokens, 'neutral' AS sentiment, CAST(1.0 AS double) AS sentiment_score,
               CAST(NULL AS string) AS topic_label, CAST(NULL AS double) AS topic_score, 'baggage' AS category,
               CAST(1.0 AS double) AS category_score,
               CAST(array() AS array<struct<text:string,label:string,start:int,end:int>>) AS entities,
               error IS NULL AS needs_ticket, CASE WHEN error IS NULL THEN concat('BAG-', tweet_id) END AS ticket_id,
               'low' AS priority, 'reply' AS reply_text, 'no-model' AS model_version
        FROM __THIS__""")])


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _variant_topics(base_config: dict, args: argparse.Namespace) -> tuple[str, dict]:
    """A tag and a config with topics of the variant's own (created), on the benchmark's broker."""
    tag = uuid.uuid4().hex[:8]
    config = load_config(overrides=[
        f"kafka.bootstrap_servers={base_config['kafka']['bootstrap_servers']}",
        f"kafka.topics.raw=bench.raw.{tag}", f"kafka.topics.outbox=bench.outbox.{tag}", f"kafka.topics.deadletter=bench.dead.{tag}",
        f"kafka.topic_settings.raw.partitions={args.kafka_partitions}",
    ])
    kafka_io.ensure_topics(config)
    return tag, config


def _replay(name: str, config: dict, args: argparse.Namespace, texts: list[str], done: Any, collector: Any,
            result: VariantResult) -> tuple[list[bytes], list[tuple[int, int, dict[str, float]]]]:
    """The phases every variant goes through: warm-up rounds, the unmeasured paced replay, the measured
    paced replay and the backlog. ``done()`` counts the tweets the query has finished with. Fills
    ``result``'s rates and batch medians; returns the measured tweets' keys and their paced batches."""
    tweets = Tweets(texts)
    # Several rounds: Python workers are handed out from one idle pool, so a worker that ran
    # another UDF in the first batch may get the model stages in the next one and load them
    # then (seconds); after a few batches every worker has them loaded.
    for round_ in range(1, args.warmup_rounds + 1):
        log.info("[%s] warming up with %d tweets (round %d of %d)", name, args.warmup, round_, args.warmup_rounds)
        before = done()
        _produce(config, tweets, args.warmup, None)
        _wait(lambda n=before + args.warmup: done() >= n, args.timeout, "the warm-up tweets")
    if args.steady_warmup:
        log.info("[%s] JIT warm-up: replaying %.0f tweets/s for %.0fs, not measured", name, args.rate, args.steady_warmup)
        before = done()
        warm, _ = _produce(config, tweets, int(args.rate * args.steady_warmup), args.rate)
        _wait(lambda: done() >= before + len(warm), args.timeout, "the warm-up replay")
    log.info("[%s] replaying %.0f tweets/s for %.0fs", name, args.rate, args.duration)
    first_batch, before = len(collector.batches), done()  # all earlier tweets are done (waited for above)
    keys, seconds = _produce(config, tweets, int(args.rate * args.duration), args.rate)
    result.sent, result.input_rate = len(keys), len(keys) / seconds
    _wait(lambda: done() >= before + len(keys), args.timeout, "the measured tweets")
    paced = [b for b in collector.batches[first_batch:] if b[1] > 0]
    if paced:
        result.batches, result.batch_rows = len(paced), float(np.median([b[1] for b in paced]))
        result.breakdown = _medians([b[2] for b in paced])
    if args.backlog:
        log.info("[%s] draining a backlog of %d tweets", name, args.backlog)
        before, began = done(), time.monotonic()
        _produce(config, tweets, args.backlog, None)
        _wait(lambda: done() >= before + args.backlog, args.timeout, "the backlog")
        result.backlog_seconds = time.monotonic() - began
        result.sustained_rate = args.backlog / result.backlog_seconds
    return keys, paced


def _outbox_latencies(result: VariantResult, config: dict, keys: list[bytes], window: float) -> dict[bytes, float]:
    """Fill ``result``'s produce -> outbox latencies (overall and per window); returns the produce times."""
    produced, outbox = _timestamps(config, "raw"), _timestamps(config, "outbox")
    start = min((produced[k] for k in keys if k in produced), default=0.0)
    for key in keys:
        if key in outbox:
            result.outbox_latency.append(outbox[key] - produced[key])
            result.outbox_windows.setdefault(int((produced[key] - start) // window), []).append(outbox[key] - produced[key])
    return produced


def run_variant(spark: Any, base_config: dict, name: str, model: Any, args: argparse.Namespace, texts: list[str],
                workdir: str) -> VariantResult:
    from sparktweet.streaming import StreamJob, StreamOptions

    _, config = _variant_topics(base_config, args)
    output = os.path.join(workdir, name, "tweets")
    options = StreamOptions.from_config(
        config, trigger=args.trigger, max_offsets_per_trigger=args.max_offsets_per_trigger, partitions=args.partitions,
        dedup=not args.no_dedup, dedup_store="spark" if name == SPARK_DEDUP_VARIANT else args.dedup_store,
        starting_offsets="earliest",
    )
    job = StreamJob(spark, config, model, output, os.path.join(workdir, name, "checkpoint"), options)
    collector = _progress_collector(options.query_name)
    spark.streams.addListener(collector)
    runner = threading.Thread(target=job.run, kwargs={"max_seconds": args.timeout}, daemon=True)
    runner.start()
    result = VariantResult(name)
    try:
        keys, paced = _replay(name, config, args, texts, lambda: job.stats.parquet_rows, collector, result)
        ids = {b[0] for b in paced}
        result.steps = _medians([t for batch_id, _, t in list(job.recent_timings) if batch_id in ids])
        plan = job.query._jsq.explainInternal(False) if job.query is not None else ""
        if "MicroBatchScan" in plan:
            result.scans, result.reused_shuffles = plan.count("MicroBatchScan"), plan.count("ReusedExchange")
    finally:
        job.request_stop()
        runner.join(timeout=300)
        spark.streams.removeListener(collector)
    produced = _outbox_latencies(result, config, keys, args.window)
    written = _parquet_written(output)
    for key in keys:
        if key.decode() in written:
            result.parquet_latency.append(written[key.decode()] - produced[key])
        else:
            result.missing += 1
    return result


#: The model with Spark's streaming deduplication (stream.dedup.store: spark) instead of the driver's store.
SPARK_DEDUP_VARIANT = "model-spark-dedup"
#: Reference variants: the least a Spark micro-batch costs here, without the stream job.
FLOOR_VARIANTS = {
    "spark-kafka": "Kafka source -> Kafka sink, records copied as they are (no parse, model, state, cache or Parquet)",
    "spark-foreachbatch": "Kafka source -> foreachBatch -> one Kafka write of the batch (the job's sink pattern, nothing else)",
}


def run_floor_variant(spark: Any, base_config: dict, name: str, args: argparse.Namespace, texts: list[str],
                      workdir: str) -> VariantResult:
    """The same replay through a query that only copies ``tweets.raw`` to ``replies.outbox``.

    Nothing of the stream job runs: no parsing, model, duplicate state, cache or Parquet. Its
    produce -> outbox latency is the least a micro-batch takes on this machine with these settings
    (trigger, broker, Kafka source and writer), i.e. what the job's own work adds to.
    """
    tag, config = _variant_topics(base_config, args)
    bootstrap = config["kafka"]["bootstrap_servers"]
    outbox_topic = kafka_io.topic_name(config, "outbox")
    query_name = f"floor_{tag}"
    source = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", kafka_io.topic_name(config, "raw")).option("startingOffsets", "earliest")
              .option("maxOffsetsPerTrigger", str(args.max_offsets_per_trigger)).load().selectExpr("key", "value"))
    sink = {"kafka.bootstrap.servers": bootstrap, "topic": outbox_topic, "kafka.linger.ms": "5"}
    if name == "spark-kafka":
        writer = source.writeStream.format("kafka").options(**sink)
    else:
        writer = source.writeStream.foreachBatch(lambda df, _: df.write.format("kafka").options(**sink).save())
    collector = _progress_collector(query_name)
    spark.streams.addListener(collector)
    query = (writer.queryName(query_name).option("checkpointLocation", os.path.join(workdir, name, "checkpoint"))
             .trigger(processingTime=args.trigger).start())

    def copied() -> int:
        if query.exception() is not None:
            raise RuntimeError(f"[{name}] query failed: {query.exception()}")
        return sum(b[1] for b in collector.batches)

    result = VariantResult(name)
    try:
        keys, _ = _replay(name, config, args, texts, copied, collector, result)
    finally:
        query.stop()
        spark.streams.removeListener(collector)
    _outbox_latencies(result, config, keys, args.window)
    result.missing = len(keys) - len(result.outbox_latency)
    return result


def _stats(values: list[float]) -> str:
    if not values:
        return "no records"
    a = np.asarray(values)
    return (f"p50 {np.percentile(a, 50):6.3f} s  p95 {np.percentile(a, 95):6.3f} s  p99 {np.percentile(a, 99):6.3f} s  "
            f"max {a.max():6.3f} s  (n={len(a)})")


def report(results: list[VariantResult], args: argparse.Namespace) -> str:
    lines = [(f"stream latency, {args.rate:.0f} tweets/s for {args.duration:.0f}s after {args.steady_warmup:.0f}s of JIT warm-up, "
              f"trigger {args.trigger}, "
             f"maxOffsetsPerTrigger {args.max_offsets_per_trigger}, backlog {args.backlog}, "
             f"duplicate check {'off' if args.no_dedup else args.dedup_store}, "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")]
    for r in results:
        lines += [
            f"[{r.name}] sent {r.sent} tweets at {r.input_rate:.0f}/s, {r.missing} not in "
            + ("the outbox topic" if r.name in FLOOR_VARIANTS else "Parquet"),
            *([f"  ({FLOOR_VARIANTS[r.name]})"] if r.name in FLOOR_VARIANTS else []),
            f"  produce -> outbox:  {_stats(r.outbox_latency)}",
            *([] if r.name in FLOOR_VARIANTS else [f"  produce -> Parquet: {_stats(r.parquet_latency)}"]),
            f"  produce -> outbox p50 per {args.window:.0f}s of the replay: "
            + ", ".join(f"{np.percentile(v, 50):.2f}" for _, v in sorted(r.outbox_windows.items()) if len(v) >= 10),
            "  sustained rate:     " + (f"{r.sustained_rate:.0f} tweets/s ({args.backlog} tweets drained in {r.backlog_seconds:.1f}s)"
                                        if r.sustained_rate else "not measured"),
        ]
        if r.breakdown:
            lines.append(f"  per paced batch (median of {r.batches}, {r.batch_rows:.0f} rows), Spark durationMs: "
                         + ", ".join(f"{k} {v:.0f}" for k, v in r.breakdown.items()))
        if r.scans is not None:
            lines.append(f"  plan of a batch: the source scanned {r.scans} time(s), {r.reused_shuffles} shuffle(s) read twice")
        if r.steps:
            lines.append("  foreachBatch steps done at (s since the batch began, median): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in r.steps.items()))
    model_result = next((r for r in results if r.name == "model"), None)
    if model_result is not None and model_result.outbox_latency:
        p50, p99 = (float(np.percentile(model_result.outbox_latency, q)) for q in (50, 99))
        verdict = lambda ok: "PASS" if ok else "FAIL"
        lines.append(f"floors (model, at {args.rate:.0f} tweets/s): p50 {p50:.3f} s <= {FLOORS['p50']} s {verdict(p50 <= FLOORS['p50'])}, "
                     f"p99 {p99:.3f} s <= {FLOORS['p99']} s {verdict(p99 <= FLOORS['p99'])}"
                     + (f", sustained {model_result.sustained_rate:.0f} >= {FLOORS['sustained']:.0f} tweets/s "
                        f"{verdict(model_result.sustained_rate >= FLOORS['sustained'])}" if model_result.sustained_rate else ""))
    by_name = {r.name: r for r in results if r.outbox_latency}
    for a, b in [("model", "no-model"), (SPARK_DEDUP_VARIANT, "model"), ("model", "spark-foreachbatch"), ("no-model", "spark-foreachbatch"),
                 ("spark-foreachbatch", "spark-kafka")]:
        if a in by_name and b in by_name:
            ra, rb = by_name[a], by_name[b]
            ratio = (f"{a} / {b}: p50 x{np.percentile(ra.outbox_latency, 50) / np.percentile(rb.outbox_latency, 50):.1f}, "
                     f"p99 x{np.percentile(ra.outbox_latency, 99) / np.percentile(rb.outbox_latency, 99):.1f}")
            if ra.sustained_rate and rb.sustained_rate:
                ratio += f", sustained rate x{ra.sustained_rate / rb.sustained_rate:.2f}"
            lines.append(ratio)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="tweets per second during the measurement")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of paced replay")
    parser.add_argument("--warmup", type=int, default=200, help="tweets sent (and awaited) per warm-up round")
    parser.add_argument("--warmup-rounds", type=int, default=3, help="warm-up rounds before measuring")
    parser.add_argument("--steady-warmup", type=float, default=90.0,
                        help="seconds of unmeasured replay at --rate before measuring, for the JVM's JIT to compile the "
                             "per-batch code (0: measure a cold JVM)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window of the per-window p50s")
    parser.add_argument("--backlog", type=int, default=40000,
                        help="tweets for the sustained-rate measurement (0: skip); at least a few seconds' worth of the "
                             "rate to measure, or the job's fixed latency dominates")
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "default"), help="saved model folder")
    parser.add_argument("--variants", default="model,no-model",
                        help=f"comma-separated: model, no-model, {SPARK_DEDUP_VARIANT} (the model with Spark's deduplication), "
                        "and the reference queries " + ", ".join(FLOOR_VARIANTS))
    parser.add_argument("--trigger", default="100 milliseconds", help="micro-batch trigger")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=20000,
                        help="micro-batch size cap: the sustained rate cannot exceed it divided by a batch's duration")
    parser.add_argument("--partitions", type=int, default=None, help="scoring tasks per batch (default: cores)")
    parser.add_argument("--kafka-partitions", type=int, default=4, help="partitions of the benchmark's tweets.raw")
    parser.add_argument("--shuffle-partitions", type=int, default=os.cpu_count() or 2,
                        help="spark.sql.shuffle.partitions, i.e. the duplicate-id state's partitions (default: cores)")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Spark setting for the session (repeatable), e.g. spark.sql.codegen.wholeStage=false")
    parser.add_argument("--no-dedup", action="store_true", help="run without the duplicate-id state")
    parser.add_argument("--dedup-store", choices=DEDUP_STORES, default=DEDUP_STORES[0],
                        help="the duplicate check's state: the driver's SQLite file, or Spark's streaming deduplication")
    parser.add_argument("--texts", help="CSV with a text column (e.g. Tweets.csv) instead of the bundled sample")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after this many seconds")
    parser.add_argument("--workdir", help="output/checkpoint folder (default: a temp dir, removed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging of the stream job (per-batch timings)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if args.verbose:
        logging.getLogger("sparktweet.streaming").setLevel(logging.DEBUG)

    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the finally below stops the broker and removes the workdir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir or tempfile.mkdtemp(prefix="sparktweet-bench-")
    if args.bootstrap:
        config = load_config(overrides=[f"kafka.bootstrap_servers={args.bootstrap}"])
    else:
        config = load_config(overrides=[f"kafka.bootstrap_servers=127.0.0.1:{_free_port()}", f"kafka.controller_port={_free_port()}",
                                        f"kafka.data_dir={os.path.join(workdir, 'kafka')}"])
        kafka_broker.start(config)
    try:
        from sparktweet.session import build_session
        from sparktweet.training import load_model

        extra = dict(item.split("=", 1) for item in args.spark_conf)
        spark = build_session(config, app_name="sparktweet-bench", **{
            "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": str(args.shuffle_partitions), **extra})
        texts = _texts(args.texts)
        results = []
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            if variant in FLOOR_VARIANTS:
                results.append(run_floor_variant(spark, config, variant, args, texts, workdir))
                continue
            model = load_model(args.model) if variant in ("model", SPARK_DEDUP_VARIANT) else passthrough_model()
            results.append(run_variant(spark, config, variant, model, args, texts, workdir))
        print(report(results, args))
    finally:
        if not args.bootstrap:
            kafka_broker.stop(config)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

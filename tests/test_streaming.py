"""The stream job: parsing and sink formats on small frames, then reliability against the real broker.

The broker tests use their own topics (unique names per test) so they read exactly what they
sent, a tiny model trained once for the module, and one task per micro-batch
(``stream.partitions=1``) so that one set of Python workers loads the models.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict

import pytest
from chispa import assert_df_equality
from fake_x_stream import wait_for
from pyspark.ml import PipelineModel, Transformer
from pyspark.sql import Observation
from pyspark.sql import functions as F
from pyspark.sql.streaming.listener import StreamingQueryProgress

from sparktweet import kafka_broker as broker
from sparktweet.cli import SAMPLE, main
from sparktweet.config import load_config
from sparktweet.dedup import DedupStateError, FirstSeenStore
from sparktweet.demo import read_since
from sparktweet.errors import ConfigError
from sparktweet.kafka_io import KafkaError, encode_tweet, ensure_topics, producer, topic_name
from sparktweet.replay import read_dump
from sparktweet.store import TicketStore
from sparktweet.streaming import (
    DEDUP_FILE,
    PARQUET_COLUMNS,
    JsonProgressListener,
    ProgressLogger,
    StreamJob,
    StreamOptions,
    _apply_trigger,
    _offsets_total,
    accepted_records,
    batch_metrics,
    batch_summary,
    deadletter_records,
    decide_batch,
    mark_first_records,
    observe_input,
    outbox_records,
    parse_records,
    rejected_records,
    require_topics,
    run_stream,
    score_stream,
    slim_batch,
    summarise_batch,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAFKA_SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


@pytest.fixture(scope="module")
def tiny_model(spark, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream-model")
    code = main([
        "train", "--data", str(shared_data / "Tweets.csv"), "--split", str(shared_data / "split.csv"), "--out", str(out),
        "--limit", "300", "--version", "tiny-stream", "--set", "train.epochs=1", "--set", "train.lda_passes=2",
        "--set", "train.lstm_units=8", "--set", "train.embedding_dim=16",
        # The recipe's every part (two LSTMs with their own fine-tuned teachers, altered copies), cut short.
        "--set", "train.sentiment_epochs=1", "--set", "train.sentiment_ensemble=2", "--set", "train.teacher_finetune_epochs=1",
        "--set", "train.augment=2",
    ])
    assert code == 0
    return out


def _kafka_frame(spark, values, keys=None, partition=0, topic="tweets.raw", first_offset=0):
    keys = keys or [None] * len(values)
    when = dt.datetime(2026, 11, 25, 10, 0, 0)
    rows = [(k, v, topic, partition, first_offset + i, when + dt.timedelta(seconds=first_offset + i))
            for i, (k, v) in enumerate(zip(keys, values))]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def _good(n: int, base: int | None = None) -> list[dict]:
    """``n`` valid tweets with fresh ids and the bundled sample's texts."""
    base = base or 1870000000000000000 + random.randrange(10**9) * 1000
    texts = [json.loads(r.value)["text"] for r in read_dump(SAMPLE) if r.valid and json.loads(r.value)["text"].strip()]
    return [
        {"tweet_id": str(base + i), "text": texts[i % len(texts)], "author_username": f"user{i}",
         "created_at": f"2026-11-2{i % 5}T10:00:00Z", "mentions": ["united"], "source": "replay"}
        for i in range(n)
    ]


# --- parsing and sink formats (no broker) -----------------------------------------------------


def test_parse_records_gives_every_bad_value_its_reason(spark):
    values = [
        b'{"tweet_id": "1861000000000000001", "text": "@united fine", "mentions": ["united"]}',
        b'{"tweet_id": 570306133677760513, "text": "integer id is fine", "author_id": 42}',
        b'{"tweet_id": "1", "text": "truncated',
        b"\xff\xfe\x00\x01binary",
        None,
        b"[1, 2]",
        b'{"tweet_id": "2", "tweet_id": "3", "text": "dup key"}',
        b'{"tweet_id": 1.5, "text": "float id"}',
        b'{"tweet_id": "4", "text": 42}',
        b'{"tweet_id": "5", "text": "m", "mentions": "united"}',
        b'{"tweet_id": "6", "text": "c", "created_at": 1700000000}',
        b'{"tweet_id": null, "text": "null id"}',
        b'{"text": "no id"}',
        b'{"tweet_id": "7"}',
        b'{"tweet_id": "not-a-number", "text": "x"}',
        b'{"tweet_id": "8", "text": "' + b"y" * 30 + b'"}',
        b'{"tweet_id": "9", "text": "bad \xef\xbf\xbd char"}',
    ]
    parsed = parse_records(_kafka_frame(spark, values), max_text_chars=20)
    got = parsed.select("kafka_offset", "tweet_id", "error", "_stage")
    expected = spark.createDataFrame(
        [
            (0, "1861000000000000001", None, None),
            (1, "570306133677760513", None, None),
            (2, None, "value is not valid JSON", "parse"),
            (3, None, "value is not valid UTF-8", "parse"),
            (4, None, "Kafka record has no value", "parse"),
            (5, None, "value is a JSON array, expected an object", "parse"),
            (6, None, "value is JSON with duplicate keys", "parse"),
            (7, "1.5", "field 'tweet_id' must be a string of digits, found JSON decimal(2,1)", "parse"),
            (8, "4", "field 'text' must be a string, found JSON bigint", "parse"),
            (9, "5", "field 'mentions' must be an array of strings, found JSON string", "parse"),
            (10, "6", "field 'created_at' must be a string, found JSON bigint", "parse"),
            (11, None, "missing tweet_id", "parse"),
            (12, None, "missing tweet_id", "parse"),
            (13, "7", "missing text", "parse"),
            (14, "not-a-number", "invalid tweet_id: expected 1-19 digits", "parse"),
            (15, "8", "text is 30 characters long; at most 20 are accepted", "parse"),
            (16, "9", "text is not valid UTF-8", "parse"),
        ],
        "kafka_offset long, tweet_id string, error string, _stage string",
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def test_parse_records_gives_the_canonical_record_and_keeps_the_original(spark):
    value = encode_tweet({
        "tweet_id": "570306133677760513", "text": "@united bag", "author_id": "7", "author_username": "ana",
        "created_at": "2015-02-24 11:35:52 -0800", "mentions": ["united"], "source": "replay", "extra": "ignored",
    })
    row = parse_records(_kafka_frame(spark, [value], keys=[b"570306133677760513"])).first().asDict()
    assert {k: row[k] for k in ("tweet_id", "text", "author_username", "created_at", "mentions", "source", "error")} == {
        "tweet_id": "570306133677760513", "text": "@united bag", "author_username": "ana",
        "created_at": "2015-02-24T19:35:52Z", "mentions": ["united"], "source": "replay", "error": None,
    }
    assert str(row["date"]) == "2015-02-24"
    assert (row["kafka_key"], row["_value"], row["kafka_partition"], row["kafka_offset"]) == (b"570306133677760513", value, 0, 0)


@pytest.mark.parametrize("store", ["driver", "spark"])
def test_duplicates_are_flagged_across_micro_batches(spark, tmp_path, store):
    batches = [
        [b'{"tweet_id": "11", "text": "first"}', b'{"tweet_id": "12", "text": "other"}', b'{"tweet_id": "11", "text": "first"}'],
        [b'{"tweet_id": "11", "text": "changed"}', b"not json", b"not json", b'{"tweet_id": "13", "text": "new"}'],
    ]
    source = tmp_path / "source"
    source.mkdir()
    stream = (spark.readStream.schema(KAFKA_SCHEMA).option("maxFilesPerTrigger", 1).option("recursiveFileLookup", "true")
              .parquet(str(source)))
    parsed = parse_records(stream)
    # Every valid tweet needs a ticket, and tweet 13 fails scoring (_FakeStages).
    scored = score_stream(PipelineModel([_FakeStages()]), parsed)
    marked = mark_first_records(scored, ttl_s=600) if store == "spark" else scored
    first_seen = FirstSeenStore(str(tmp_path / "first-seen.sqlite"), ttl_s=600)
    outbox: list = []
    accepted: list = []
    rejected: list = []
    summaries: list = []
    running: list = []
    plans: list = []

    def collect(batch, batch_id):
        # The stream job's paths. Spark's store: the batch slimmed and cached, its counts observed on the
        # first job that reads it, the duplicates found from them, then the accepted and the rejected
        # records. The driver's store: the batch cached, the duplicates decided, then the same.
        slim = slim_batch(batch).persist()
        if store == "spark":
            observation = Observation()
            outbox.extend(r.key for r in outbox_records(accepted_records(slim.observe(observation, *batch_metrics(slim)))).collect())
            summary = batch_summary(slim, observation.get)
            assert summarise_batch(slim) == summary  # the same figures from a job of its own
        else:
            summary = decide_batch(slim, first_seen, batch_id, outbox=True)
            sent = summary.pop("outbox")  # what the driver sends: outbox_records' rows of the accepted tweets
            rows = outbox_records(accepted_records(slim, summary["duplicate_positions"])).collect()
            assert sorted(sent) == sorted((r.key.encode(), r.value.encode()) for r in rows)
            outbox.extend(key.decode() for key, _ in sent)
            assert decide_batch(slim, first_seen, batch_id) == summary  # a replay decides the same
            unchecked = decide_batch(slim, None, batch_id)  # stream.dedup.enabled: false
            assert (unchecked["duplicates"], unchecked["accepted"]) == (0, summary["accepted"] + summary["duplicates"])
        dups = summary["duplicate_positions"]
        accepted.extend(accepted_records(slim, dups).select("kafka_offset", "text", "error").collect())
        rejected.extend(rejected_records(slim, dups).select("kafka_offset", "error", "_stage").collect())
        summaries.append({k: v for k, v in summary.items() if k != "duplicate_positions"})
        slim.unpersist()
        if running:
            plans.append(running[0]._jsq.explainInternal(False))

    offset = 0
    _kafka_frame(spark, batches[0]).coalesce(1).write.parquet(str(source / "0"))
    query = marked.writeStream.foreachBatch(collect).option("checkpointLocation", str(tmp_path / "checkpoint")).start()
    running.append(query)
    try:
        query.processAllAvailable()
        offset += len(batches[0])
        _kafka_frame(spark, batches[1], first_offset=offset).coalesce(1).write.parquet(str(source / "1"))
        query.processAllAvailable()  # a second micro-batch: the state of the first one is used
    finally:
        query.stop()
    dup = "duplicate tweet_id 11: a record with this id was already accepted"
    if store == "spark":
        dup += " (or this one is older than the duplicate-check window)"
    got = spark.createDataFrame(accepted, "kafka_offset long, text string, error string").orderBy("kafka_offset")
    expected = [(0, "first", None), (1, "other", None), (6, "new", "model failed")]
    assert_df_equality(got, spark.createDataFrame(expected, "kafka_offset long, text string, error string"), ignore_nullable=True)
    assert sorted(outbox) == ["11", "12"]  # accepted, scored and in need of a ticket; not the resent 11
    expected = spark.createDataFrame(
        [(2, dup, "dedup"), (3, dup, "dedup"), (4, "value is not valid JSON", "parse"), (5, "value is not valid JSON", "parse"),
         (6, "model failed", None)],  # deadletter_records gives a null stage "score"
        "kafka_offset long, error string, _stage string",
    )
    got = spark.createDataFrame(rejected, "kafka_offset long, error string, _stage string").orderBy("kafka_offset")
    assert_df_equality(got, expected, ignore_nullable=True)
    assert [s for s in summaries if s["rows"]] == [
        {"rows": 3, "parse_errors": 0, "duplicates": 1, "errors": 0, "tickets": 2, "accepted": 2},
        {"rows": 4, "parse_errors": 2, "duplicates": 1, "errors": 3, "tickets": 0, "accepted": 1},
    ]
    plan = next(p for p in plans if "FileScan" in p)
    if store == "spark":
        # The records and the deduplication read one shuffle of the source: it is scanned (and parsed) once.
        assert plan.count("FileScan") == 1 and "ReusedExchange" in plan, plan
    else:
        assert plan.count("FileScan") == 1 and "Exchange" not in plan, plan
    first_seen.close()


class _FakeStages(Transformer):
    """A stand-in for the NLP stages: every valid tweet needs a ticket; tweet 13 fails scoring."""

    def _transform(self, df):
        ok = F.col("error").isNull() & (F.col("tweet_id") != "13")
        return df.withColumns({
            "sentiment": F.lit("negative"), "sentiment_score": F.lit(0.9), "category": F.lit("baggage"),
            "entities": F.array(F.struct(F.lit("UA").alias("text"), F.lit("AIRLINE").alias("label"), F.lit(1).alias("start"),
                                         F.lit(3).alias("end"))),
            "needs_ticket": ok, "ticket_id": F.when(ok, F.concat(F.lit("BAG-"), "tweet_id")), "priority": F.lit("high"),
            "reply_text": F.lit("Sorry about your bag."), "model_version": F.lit("fake-1"),
            "error": F.when(F.col("error").isNull() & (F.col("tweet_id") == "13"), F.lit("model failed")).otherwise(F.col("error")),
        })


def test_outbox_and_deadletter_values(spark):
    big = b'{"tweet_id": "14", "text": "' + b"z" * 5000 + b'"}'
    values = [
        encode_tweet({"tweet_id": "12", "text": "@united my bag", "author_username": "ana", "created_at": "2026-11-20T08:00:00Z",
                      "mentions": ["united"]}),
        b'{"tweet_id": "13", "text": "scoring fails"}',
        b"\xff\xfegarbage",
        big,
    ]
    parsed = parse_records(_kafka_frame(spark, values, keys=[b"12", b"13", b"\xff", None], partition=3), max_text_chars=100)
    scored = score_stream(PipelineModel([_FakeStages()]), parsed).cache()
    assert set(PARQUET_COLUMNS) <= set(scored.columns)
    outbox = [(r.key, json.loads(r.value)) for r in outbox_records(scored).collect()]
    assert outbox == [("12", {
        "tweet_id": "12", "text": "@united my bag", "author_username": "ana", "mentions": ["united"],
        "created_at": "2026-11-20T08:00:00Z", "ticket_id": "BAG-12", "reply_text": "Sorry about your bag.",
        "category": "baggage", "sentiment": "negative", "sentiment_score": 0.9, "priority": "high",
        "entities": [{"text": "UA", "label": "AIRLINE", "start": 1, "end": 3}], "model_version": "fake-1",
    })]
    dead = {json.loads(r.value)["offset"]: (r.key, json.loads(r.value)) for r in deadletter_records(scored, 1000).collect()}
    assert sorted(dead) == [1, 2, 3]
    key, score_failure = dead[1]
    assert key == "13"
    assert {k: score_failure[k] for k in ("error", "stage", "topic", "partition", "tweet_id", "model_version", "original_encoding")} == {
        "error": "model failed", "stage": "score", "topic": "tweets.raw", "partition": 3, "tweet_id": "13",
        "model_version": "fake-1", "original_encoding": "utf-8",
    }
    assert score_failure["original"] == '{"tweet_id": "13", "text": "scoring fails"}' and score_failure["time"].endswith("Z")
    key, garbage = dead[2]
    assert key is None and garbage["stage"] == "parse" and garbage["error"] == "value is not valid UTF-8"
    assert base64.b64decode(garbage["original"]) == b"\xff\xfegarbage" and garbage["original_encoding"] == "base64"
    key, long_text = dead[3]
    assert key == "14" and long_text["error"] == "text is 5000 characters long; at most 100 are accepted"
    assert long_text["original_truncated"] is True and long_text["original_bytes"] == len(big)
    assert long_text["original"] == big[:1000].decode()


def test_stream_options_from_config_and_triggers(spark):
    options = StreamOptions.from_config(load_config(overrides=["stream.max_offsets_per_trigger=0", "stream.dedup.enabled=false"]),
                                        trigger="available-now", partitions=0)
    assert (options.max_offsets_per_trigger, options.dedup, options.trigger, options.partitions) == (None, False, "available-now", 0)
    assert StreamOptions.from_config(load_config()).max_offsets_per_trigger == 20_000
    with pytest.raises(ConfigError, match="max_text_chars"):
        StreamOptions.from_config(load_config(overrides=["stream.max_text_chars=0"]))
    with pytest.raises(ConfigError, match="stream.dedup.store must be one of driver, spark, found 'redis'"):
        StreamOptions.from_config(load_config(overrides=["stream.dedup.store=redis"]))
    with pytest.raises(ConfigError, match="stream.dedup.ttl_s must be > 0"):
        StreamOptions.from_config(load_config(overrides=["stream.dedup.ttl_s=0"]))
    # The driver's duplicate check sits beside a local checkpoint; elsewhere it needs a path of its own.
    config = load_config()
    assert StreamJob(spark, config, None, "out", "file:/tmp/cp").dedup_path() == os.path.join("/tmp/cp", DEDUP_FILE)
    assert StreamJob(spark, config, None, "out", "cp").dedup_path() == os.path.join("cp", DEDUP_FILE)
    with pytest.raises(ConfigError, match="stream.dedup.path"):
        StreamJob(spark, config, None, "out", "s3a://bucket/cp").dedup_path()
    s3 = load_config(overrides=["stream.dedup.path=/var/lib/sparktweet/first-seen.sqlite"])
    assert StreamJob(spark, s3, None, "out", "s3a://bucket/cp").dedup_path() == "/var/lib/sparktweet/first-seen.sqlite"
    assert StreamJob(spark, load_config(overrides=["stream.dedup.store=spark"]), None, "out", "s3a://bucket/cp").dedup_path() is None
    assert StreamJob(spark, load_config(overrides=["stream.dedup.enabled=false"]), None, "out", "cp").dedup_path() is None
    stream = spark.readStream.format("rate").load()
    for trigger in ("available-now", "once", "0", "2 seconds"):
        _apply_trigger(stream.writeStream, trigger)


def _offsets(text: str, parsed: bool):
    return json.loads(text) if parsed else text


@pytest.mark.parametrize("parsed", [False, True], ids=["offsets-as-json-text", "offsets-as-the-jvm-json-bridge-gives"])
def test_progress_logger_reports_latency_and_lag(parsed):
    # The stock bridge gives offsets as JSON text; the JVM's progress JSON (JsonProgressListener) has them
    # as objects, which PySpark's fromJson turns into str(dict), not JSON.
    progress = StreamingQueryProgress.fromJson({
        "id": str(uuid.uuid4()), "runId": str(uuid.uuid4()), "name": "q", "timestamp": "2026-11-25T10:00:00.000Z",
        "batchId": 7, "batchDuration": 1500, "numInputRows": 300, "inputRowsPerSecond": 250.0, "processedRowsPerSecond": 200.0,
        "durationMs": {"triggerExecution": 1500}, "stateOperators": [],
        "sources": [{"description": "KafkaV2", "startOffset": _offsets('{"t":{"0":0,"1":0}}', parsed),
                     "endOffset": _offsets('{"t":{"0":100,"1":200}}', parsed),
                     "latestOffset": _offsets('{"t":{"0":150,"1":260}}', parsed), "numInputRows": 300, "inputRowsPerSecond": 250.0,
                     "processedRowsPerSecond": 200.0, "metrics": {}}],
        "sink": {"description": "ForeachBatchSink", "numOutputRows": -1},
        # The session time zone is UTC: observed timestamps come back as naive UTC datetimes.
        "observedMetrics": {"sparktweet_input": {"rows": 300, "oldest": dt.datetime(2026, 11, 25, 9, 59, 59),
                                                 "newest": dt.datetime(2026, 11, 25, 10, 0, 1)}},
    })
    assert ProgressLogger.summarise(progress) == {
        "batch": 7, "rows": 300, "seconds": 1.5, "input_rate": 250.0, "processed_rate": 200.0,
        "latency_oldest_s": 2.5, "latency_newest_s": 0.5, "lag": 110,
    }
    if parsed:
        # What the summary read: fromJson's repr of the offsets, not JSON.
        source = progress.sources[0]
        assert source.endOffset.startswith("{'t'") and _offsets_total(source.endOffset) == 300


def test_progress_logger_reads_observed_times_sent_as_json_strings():
    progress = StreamingQueryProgress.fromJson({
        "id": str(uuid.uuid4()), "runId": str(uuid.uuid4()), "name": "q", "timestamp": "2026-11-25T10:00:00.000Z",
        "batchId": 1, "batchDuration": 1000, "numInputRows": 2, "stateOperators": [], "sources": [],
        "sink": {"description": "ForeachBatchSink", "numOutputRows": -1},
        "observedMetrics": {"sparktweet_input": {"rows": 2, "oldest": "2026-11-25T09:59:58.000Z", "newest": "2026-11-25 10:00:00.250"}},
    })
    info = ProgressLogger.summarise(progress)
    assert (info["latency_oldest_s"], info["latency_newest_s"]) == (3.0, 0.75)


class _Collect(JsonProgressListener):
    def __init__(self) -> None:
        super().__init__()
        self.progress: list = []

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        self.progress.append(event.progress)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass


def test_json_progress_listener_receives_a_real_querys_progress(spark, tmp_path):
    """The JSON bridge delivers the query's events, observed metrics included, and their times parse."""
    listener = _Collect()
    spark.streams.addListener(listener)
    began = dt.datetime.now(dt.UTC)
    try:
        rows = observe_input(spark.readStream.format("rate").option("rowsPerSecond", 20).load(), "timestamp")
        query = (rows.writeStream.format("noop").queryName("json_listener").trigger(processingTime="300 milliseconds")
                 .option("checkpointLocation", str(tmp_path / "checkpoint")).start())
        try:
            assert wait_for(lambda: sum(p.numInputRows > 1 for p in listener.progress) >= 3, 90), "no progress events with rows"
        finally:
            query.stop()
    finally:
        spark.streams.removeListener(listener)
    progress = next(p for p in listener.progress if p.numInputRows)
    assert progress.name == "json_listener" and progress._jdict is not None  # built from the JVM's JSON
    assert json.loads(progress.json)["batchId"] == progress.batchId
    assert progress.observedMetrics["sparktweet_input"]["rows"] == progress.numInputRows
    info = ProgressLogger.summarise(progress)
    assert info["rows"] == progress.numInputRows
    assert 0 <= info["latency_newest_s"] <= info["latency_oldest_s"] < 60
    assert (dt.datetime.now(dt.UTC) - began).total_seconds() + 1 > info["latency_oldest_s"]
    # Millisecond times: the rate source stamps rows 50 ms apart, so a batch's oldest and newest
    # rows are a fraction of a second apart (whole seconds when the times were timestamp-typed).
    spans = [round(s["latency_oldest_s"] - s["latency_newest_s"], 3) for s in
             (ProgressLogger.summarise(p) for p in listener.progress if p.numInputRows > 1)]
    assert any(0 < span < 1 for span in spans), spans


# --- against the real broker ------------------------------------------------------------------


def _stream_config(bootstrap: str, *overrides: str) -> dict:
    tag = uuid.uuid4().hex[:8]
    config = load_config(overrides=[
        f"kafka.bootstrap_servers={bootstrap}",
        f"kafka.topics.raw=test.raw.{tag}", f"kafka.topics.outbox=test.outbox.{tag}", f"kafka.topics.deadletter=test.dead.{tag}",
        "kafka.topic_settings.raw.partitions=2", "kafka.topic_settings.outbox.partitions=2",
        "stream.partitions=1", "stream.trigger=200 milliseconds", "stream.restart_backoff_s=1",
        *overrides,
    ])
    ensure_topics(config)
    return config


def _produce(config, records: list[tuple[bytes | None, bytes | None]], **settings) -> list[tuple[int, int]]:
    """Send (key, value) pairs to tweets.raw in order; returns each one's (partition, offset)."""
    p = producer(config, **settings)
    where: list[tuple[int, int] | None] = [None] * len(records)

    def delivered(i):
        def callback(err, msg):
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())
        return callback

    for i, (key, value) in enumerate(records):
        p.produce(topic_name(config, "raw"), key=key, value=value, on_delivery=delivered(i))
        p.poll(0)
    assert p.flush(60) == 0
    return where


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _topic_values(config, logical: str) -> list:
    return read_since(config, topic_name(config, logical), {})


def _bad_records(good: list[dict]) -> list[tuple[bytes | None, bytes | None, str]]:
    """1,000 bad records: (key, value, expected reason prefix)."""
    rng = random.Random(7)
    bad: list[tuple[bytes | None, bytes | None, str]] = []
    for i in range(150):
        bad.append((None, rng.choice([b'{"tweet_id": "1", "text": "cut', b"plain text", b"{", b'{"a": }', b"nul"]) + str(i).encode(),
                    "value is not valid JSON"))
    for i in range(150):
        garbage = bytes([0xFF, 0xFE]) + rng.randbytes(40)
        bad.append((None, garbage, "value is not valid UTF-8"))
    for i in range(100):
        bad.append((None, json.dumps({"text": f"no id {i}"}).encode(), "missing tweet_id"))
    for i in range(100):
        bad.append((None, json.dumps({"tweet_id": str(1880000000000000000 + i), "text": None}).encode(), "missing text"))
    for i in range(50):
        bad.append((None, json.dumps({"tweet_id": None, "text": "null id"}).encode(), "missing tweet_id"))
    wrong = [{"text": 5}, {"text": {"a": 1}}, {"text": ["x"]}, {"text": True}, {"tweet_id": 1.5}, {"tweet_id": True},
             {"mentions": "united"}, {"mentions": [1, 2]}, {"created_at": 5}, {"lang": ["en"]}]
    for i in range(150):
        record = {"tweet_id": str(1881000000000000000 + i), "text": "wrong type", **wrong[i % len(wrong)]}
        bad.append((None, json.dumps(record).encode(), "field '"))
    for i in range(50):
        tweet_id = ["abc", "12a", "1" * 20, " "][i % 4]
        bad.append((None, json.dumps({"tweet_id": tweet_id, "text": "x"}).encode(),
                    "missing tweet_id" if tweet_id == " " else "invalid tweet_id"))
    for i in range(50):
        bad.append((None, None, "Kafka record has no value"))
    for i in range(3):
        bad.append((None, json.dumps({"tweet_id": str(1882000000000000000 + i), "text": "b" * 1_000_000}).encode(), "text is 1000000"))
    for i in range(97):
        bad.append((None, json.dumps({"tweet_id": str(1883000000000000000 + i), "text": "c" * 30_000}).encode(), "text is 30000"))
    for i in range(100):
        original = good[i % len(good)]
        text = original["text"] if i % 2 else original["text"] + " (edited)"
        bad.append((original["tweet_id"].encode(), json.dumps({**original, "text": text}).encode(), "duplicate tweet_id"))
    assert len(bad) == 1000
    return bad


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("store", ["driver", "spark"])
def test_bad_records_are_dead_lettered_and_good_ones_scored(spark, kafka_broker, tiny_model, tmp_path, store):
    config = _stream_config(kafka_broker["kafka"]["bootstrap_servers"], "stream.max_offsets_per_trigger=400", f"stream.dedup.store={store}")
    good = _good(200)
    bad = _bad_records(good)
    duplicates = bad[-100:]
    mixed = [(g["tweet_id"].encode(), encode_tweet(g), None) for g in good] + bad[:-100]
    random.Random(3).shuffle(mixed)
    mixed += duplicates  # after their originals, as a resend or an edit arrives
    where = _produce(config, [(k, v) for k, v, _ in mixed], message_max_bytes=3_000_000)
    expected_dead = {where[i]: reason for i, (_, _, reason) in enumerate(mixed) if reason}

    output = str(tmp_path / "tweets")
    job = run_stream(spark, config, None, output, str(tmp_path / "checkpoint"), model=PipelineModel.load(str(tiny_model / "pipeline")),
                     until_idle=8, max_seconds=900, handle_signals=False)

    assert job.stats.restarts == 0 and job.stats.rows == 1200, job.stats
    dead = [json.loads(m.value()) for m in _topic_values(config, "deadletter")]
    got = {(d["partition"], d["offset"]): d for d in dead}
    assert len(dead) == len(got) == 1000
    assert set(got) == set(expected_dead)
    for position, reason in expected_dead.items():
        assert got[position]["error"].startswith(reason), (reason, got[position]["error"])
        assert got[position]["stage"] == ("dedup" if reason == "duplicate tweet_id" else "parse")
    huge = [d for d in dead if d["error"].startswith("text is 1000000")]
    assert len(huge) == 3 and all(d["original_truncated"] and d["original_bytes"] > 1_000_000 for d in huge)

    scored = spark.read.parquet(output)
    assert scored.count() == 200
    assert scored.schema["kafka_timestamp"].metadata == {}  # the duplicate check's watermark stays out of the files
    assert {r.tweet_id for r in scored.select("tweet_id").collect()} == {g["tweet_id"] for g in good}
    assert scored.where(F.col("error").isNotNull()).count() == 0
    assert scored.where(F.col("sentiment").isNull() | F.col("ticket_id").isNull() & F.col("needs_ticket")).count() == 0
    needing = {r.tweet_id: r.ticket_id for r in scored.where("needs_ticket").collect()}
    outbox = {m.key().decode(): json.loads(m.value()) for m in _topic_values(config, "outbox")}
    assert {k: v["ticket_id"] for k, v in outbox.items()} == needing
    assert all(v["model_version"] == "tiny-stream" and v["reply_text"] for v in outbox.values())
    # The progress logger summarised the real Kafka source's events (offsets, lag, latency).
    last = job.listener.last
    assert last["rows"] > 0 and last["lag"] == 0, last
    assert 0 <= last["latency_newest_s"] <= last["latency_oldest_s"] < 900, last
    plan = job.query._jsq.explainInternal(False)
    if store == "spark":
        # A batch reads the Kafka source once: the duplicate check reads the records' shuffle again.
        assert plan.count("MicroBatchScan") == 1 and plan.count("ReusedExchange") == 1, plan
    else:
        # No shuffle at all: the driver's store decides, in a file beside the checkpoint.
        assert plan.count("MicroBatchScan") == 1 and "Exchange" not in plan, plan
        assert len(FirstSeenStore(str(tmp_path / "checkpoint" / DEDUP_FILE), ttl_s=1)) == 200


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_command_shows_the_flow(kafka_broker, tiny_model, tmp_path, capsys):
    config = _stream_config(kafka_broker["kafka"]["bootstrap_servers"])
    overrides = [item for key in ("bootstrap_servers", "data_dir") for item in ("--set", f"kafka.{key}={kafka_broker['kafka'][key]}")
                 if kafka_broker["kafka"].get(key)]
    for logical in ("raw", "outbox", "deadletter"):
        overrides += ["--set", f"kafka.topics.{logical}={topic_name(config, logical)}"]
    db = tmp_path / "tickets.db"
    dry_run = tmp_path / "dry_run.jsonl"
    overrides += ["--set", f"store.url=sqlite:///{db}", "--set", f"dispatch.dry_run_path={dry_run}",
                  "--set", f"dispatch.group_id=demo-{uuid.uuid4().hex[:8]}"]
    assert main(["demo", "--model", str(tiny_model), "--workdir", str(tmp_path / "demo"), "--port", "0",
                 "--serve-seconds", "0", *overrides]) == 0
    out = capsys.readouterr().out
    assert "Replayed 40 tweets from sample_tweets.jsonl" in out
    assert "Parquet: 37 rows" in out
    assert "[parse] value is not valid JSON" in out and "[parse] missing text" in out
    assert "reply: " in out and "Track it at http://127.0.0.1:8080/tickets/" in out
    assert broker.status(kafka_broker).reachable, "the demo must leave a broker it did not start running"

    # The dispatcher (dry-run) turned every outbox record into one ticket, and the web app served
    # the tracking page of the first one (the demo fetched it itself) and the dashboard's URL.
    outbox_ids = re.findall(r"^  ([A-Z]+-\d{6}-[0-9A-Z]{7})  \[", out, flags=re.MULTILINE)
    assert outbox_ids, out
    tickets = re.search(r"Dispatcher \(dry-run\): (\d+) new tickets", out)
    store = TicketStore(f"sqlite:///{db}")
    try:
        assert int(tickets.group(1)) == sum(store.counts("status").values()) > 0
        assert all(store.get(t).ticket_id == t for t in outbox_ids)
        written = [json.loads(line) for line in dry_run.read_text().splitlines()]
        assert written and all(store.get(w["ticket_id"]).reply_text == w["text"] and len(w["text"]) <= 280 for w in written)
    finally:
        store.close()
    track = re.search(r"track a ticket: (http://127\.0\.0\.1:\d+)/tickets/(\S+)  \(checked: HTTP 200, status 'open'\)", out)
    assert track and track.group(2) == outbox_ids[0], out
    assert f"agent dashboard: {track.group(1)}/dashboard" in out
    assert re.search(r"agent token for this run .*: \S{32}", out)


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_restart_during_a_run_loses_nothing(spark, tiny_model, tmp_path):
    port, controller = _free_port(), _free_port()
    config = load_config(overrides=[f"kafka.bootstrap_servers=127.0.0.1:{port}", f"kafka.controller_port={controller}",
                                    f"kafka.data_dir={tmp_path / 'kafka'}"])
    broker.start(config)
    try:
        config = _stream_config(config["kafka"]["bootstrap_servers"], f"kafka.controller_port={controller}",
                                f"kafka.data_dir={tmp_path / 'kafka'}", "stream.max_offsets_per_trigger=20")
        good = _good(80)
        options = StreamOptions.from_config(config)
        job = StreamJob(spark, config, PipelineModel.load(str(tiny_model / "pipeline")), str(tmp_path / "tweets"),
                        str(tmp_path / "checkpoint"), options)
        runner = threading.Thread(target=job.run, kwargs={"max_seconds": 900})
        runner.start()
        try:
            _produce(config, [(g["tweet_id"].encode(), encode_tweet(g)) for g in good[:40]])
            assert wait_for(lambda: job.stats.parquet_rows >= 20, timeout=600), job.stats
            broker.stop(config)
            time.sleep(3)
            broker.start(config)
            _produce(config, [(g["tweet_id"].encode(), encode_tweet(g)) for g in good[40:]])
            assert wait_for(lambda: job.stats.parquet_rows >= 80 and job.stats.batches > 0, timeout=600), job.stats
        finally:
            job.request_stop()
            runner.join(timeout=120)
        assert not runner.is_alive()
        scored = spark.read.parquet(str(tmp_path / "tweets"))
        assert {r.tweet_id for r in scored.select("tweet_id").distinct().collect()} == {g["tweet_id"] for g in good}
        outbox = defaultdict(set)
        for m in _topic_values(config, "outbox"):
            outbox[m.key().decode()].add(json.loads(m.value())["ticket_id"])
        needing = {r.tweet_id for r in scored.where("needs_ticket").collect()}
        assert set(outbox) == needing and all(len(ids) == 1 for ids in outbox.values())
    finally:
        broker.stop(config)


@pytest.mark.kafka
@pytest.mark.slow
def test_sigkill_mid_replay_then_restart_from_the_checkpoint(spark, kafka_broker, tiny_model, tmp_path):
    config = _stream_config(kafka_broker["kafka"]["bootstrap_servers"])
    good = _good(120)
    output, checkpoint = str(tmp_path / "tweets"), str(tmp_path / "checkpoint")
    sets = ["--set", f"kafka.bootstrap_servers={config['kafka']['bootstrap_servers']}", "--set", "spark.master=local[2]",
            "--set", "spark.shuffle_partitions=2", "--set", "stream.partitions=1"]
    for logical in ("raw", "outbox", "deadletter"):
        sets += ["--set", f"kafka.topics.{logical}={topic_name(config, logical)}"]
    cmd = [sys.executable, os.path.join(ROOT, "jobs", "stream.py"), "--model", str(tiny_model), "--output", output,
           "--checkpoint", checkpoint, "--trigger", "200 milliseconds", "--max-offsets-per-trigger", "15", "--until-idle", "600", *sets]
    _produce(config, [(g["tweet_id"].encode(), encode_tweet(g)) for g in good[:60]])
    with open(tmp_path / "stream.log", "wb") as log:
        # Its own process group: SIGKILL takes the driver, its JVM and its Python workers at once.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": ROOT})
    feeder = None
    try:
        assert wait_for(lambda: len(_topic_values(config, "outbox")) >= 15 or proc.poll() is not None, timeout=900)
        assert proc.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
        # The rest of the replay is under way when the job dies.
        feeder = threading.Thread(target=_produce, args=(config, [(g["tweet_id"].encode(), encode_tweet(g)) for g in good[60:]]))
        feeder.start()
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if feeder is not None:
            feeder.join()
    assert proc.returncode == -signal.SIGKILL
    before_restart = len(_topic_values(config, "outbox"))
    assert before_restart < 120, "the job was killed before it had processed everything"

    job = run_stream(spark, config, None, output, checkpoint, model=PipelineModel.load(str(tiny_model / "pipeline")),
                     until_idle=8, max_seconds=900, handle_signals=False, max_offsets_per_trigger=15)
    # Spark 4.1's Kafka source throws a NullPointerException (KafkaMicroBatchStream.metrics) when it
    # reports progress for the interrupted batch it re-ran, after that batch was committed; the
    # job's restart loop starts the query again from the checkpoint. Nothing else may fail.
    assert job.stats.restarts <= 1

    scored = spark.read.parquet(output)
    assert {r.tweet_id for r in scored.select("tweet_id").distinct().collect()} == {g["tweet_id"] for g in good}
    # At least once: a replayed batch writes the same rows again (same Kafka position).
    per_position = scored.groupBy("kafka_partition", "kafka_offset").agg(F.countDistinct("tweet_id").alias("ids"))
    assert per_position.where("ids > 1").count() == 0
    outbox = defaultdict(list)
    for m in _topic_values(config, "outbox"):
        outbox[m.key().decode()].append(json.loads(m.value())["ticket_id"])
    needing = {r.tweet_id for r in scored.where("needs_ticket").collect()}
    assert set(outbox) == needing
    assert all(len(set(ids)) == 1 for ids in outbox.values()), "a duplicate must carry the same ticket ID"


@pytest.mark.kafka
def test_a_dedup_file_of_another_checkpoint_stops_the_job_with_its_reason(spark, kafka_broker, tmp_path):
    path = tmp_path / "first-seen.sqlite"
    config = _stream_config(kafka_broker["kafka"]["bootstrap_servers"], f"stream.dedup.path={path}")
    good = _good(6)
    _produce(config, [(g["tweet_id"].encode(), encode_tweet(g)) for g in good[:3]])
    job = run_stream(spark, config, None, str(tmp_path / "out"), str(tmp_path / "ck1"), until_idle=3, max_seconds=300,
                     handle_signals=False)
    assert job.stats.parquet_rows == 3
    with FirstSeenStore(str(path), ttl_s=86_400) as store:
        assert len(store) == 3
        store.decide(7, [("1", 1 << 50, 0)])  # the first checkpoint's stream went on to batch 7
    _produce(config, [(g["tweet_id"].encode(), encode_tweet(g)) for g in good[3:]])
    began = time.monotonic()
    with pytest.raises(DedupStateError, match=r"holds decisions of batch 7, but the query is at batch 0"):
        run_stream(spark, config, None, str(tmp_path / "out"), str(tmp_path / "ck2"), until_idle=30, max_seconds=300,
                   handle_signals=False)
    assert time.monotonic() - began < 60  # stopped at once, not restarted max_restarts times
    with FirstSeenStore(str(path), ttl_s=86_400) as store:
        assert len(store) == 4  # nothing forgotten


@pytest.mark.kafka
def test_stream_refuses_missing_topics_by_name_and_kafka_topics_creates_them(kafka_broker, tmp_path, capsys):
    """Brokers do not auto-create topics: the job must say which are missing instead of waiting forever."""
    tag = uuid.uuid4().hex[:8]
    sets = [f"kafka.bootstrap_servers={kafka_broker['kafka']['bootstrap_servers']}", f"kafka.topics.raw=missing.raw.{tag}",
            f"kafka.topics.outbox=missing.outbox.{tag}", f"kafka.topics.deadletter=missing.dead.{tag}"]
    argv = [a for s in sets for a in ("--set", s)]
    config = load_config(overrides=sets)
    with pytest.raises(KafkaError, match=rf"missing\.dead\.{tag}, missing\.outbox\.{tag}, missing\.raw\.{tag} do not exist"):
        run_stream(None, config, None, str(tmp_path / "out"), str(tmp_path / "ck"), handle_signals=False)
    assert main(["stream", "--output", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "ck"), *argv]) != 0
    assert "sparktweet kafka topics" in capsys.readouterr().err

    assert main(["kafka", "topics", *argv]) == 0
    out = capsys.readouterr().out
    assert f"missing.raw.{tag}\t4 partitions" in out and f"missing.dead.{tag}\t1 partitions" in out
    require_topics(config)  # now they exist

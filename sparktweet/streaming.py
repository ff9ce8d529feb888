"""The stream job: ``tweets.raw`` -> parse and validate -> the saved PipelineModel -> three sinks.

One Structured Streaming query does everything::

    Kafka tweets.raw (key tweet_id)
      -> parse_records: the value as JSON (a VARIANT, so each field's JSON type is checked), the
         canonical record (records.to_canonical) plus the Kafka metadata and the original bytes
      -> the PipelineModel, on the streaming DataFrame (rows that failed parsing carry their
         error and a null text, so the stages skip them cheaply)
      -> foreachBatch: persist the batch once; the duplicate check (``stream.dedup``, below) names the
         duplicates; the accepted tweets are the valid records that are not duplicates
         (accepted_records); write
         (b) ``replies.outbox``: accepted tweets that need a ticket, key tweet_id, JSON value (see
             OUTBOX_FIELDS), as soon as the batch is scored and checked;
         then, at once, from the cache,
         (a) Parquet under ``output``, partitioned by ``date``: every accepted tweet, with the
             model's outputs or its ``error``, and ``kafka_partition``/``kafka_offset``/``kafka_timestamp``
         (c) ``tweets.deadletter``: records that could not be parsed (stage ``parse``), duplicates
             (stage ``dedup``) and tweets the model gave an error (stage ``score``; those are in
             Parquet too), with the original value, the reason and where the record came from
             (rejected_records).

The duplicate check has two stores (``stream.dedup.store``):

- ``driver`` (the default): the batch's first job computes it, fills the cache and collects each
  record's tweet_id, Kafka position and time, and the outbox values (decide_batch);
  sparktweet.dedup.FirstSeenStore, a SQLite file beside a local checkpoint (or at ``stream.dedup.path``),
  names the duplicates and remembers the accepted record of each id, versioned by batch so a replay
  decides the same. The driver then sends the accepted outbox records itself (an idempotent
  confluent-kafka producer kept across batches, the Java client's partitioner) and waits for the acks.
- ``spark``: Spark's streaming deduplication in the query (mark_first_records): one shuffle of the
  scored rows by tweet_id, read twice, once as the records and once by ``dropDuplicatesWithinWatermark``
  (JVM state in the checkpoint), which adds a marker row for each first record; slim_batch trims the
  batch before it is cached, and the outbox write is the first job (it computes the batch and counts it
  through observed metrics). For a checkpoint on S3 or HDFS when the driver may move (conf/emr.yaml).
  Each micro-batch then plans and generates code for the scored plan twice: on 2 cores a paced batch
  takes about twice as long as with the driver's store.

Delivery semantics: at least once. Kafka offsets are committed to the checkpoint only after
foreachBatch returns, so a crash (even SIGKILL) or a failed write replays the whole micro-batch
on restart: the same rows may be written to Parquet and to the two topics again. Replays are
identical where it matters: the key is the tweet_id and the ticket ID is derived from the tweet
id and the category, so a duplicate outbox record carries the same key and ticket ID and the
dispatcher (idempotent on tweet_id) drops it; duplicate Parquet rows share ``tweet_id``,
``kafka_partition`` and ``kafka_offset``. Either store's state is versioned with the batch, so a
replayed batch does not mistake its own records for duplicates.

Operations: a :class:`ProgressLogger` (a ``StreamingQueryListener``) logs each batch's input and
processing rate, end-to-end latency of the oldest and newest record, and the Kafka lag.
:func:`run_stream` restarts the query from its checkpoint after a failure (e.g. the broker went
away, or Spark 4.1's Kafka source failing on its first progress report after re-running an
interrupted batch) with exponential backoff, stops gracefully on SIGTERM/SIGINT (lets the running
batch finish) and can stop by itself when idle (``until_idle``) or after ``max_seconds``.

Settings (``stream:`` section, all optional): ``trigger`` ("500 milliseconds", "available-now",
"once"), ``starting_offsets`` (earliest; only for a new checkpoint), ``max_offsets_per_trigger``
(20000), ``fail_on_data_loss`` (true), ``partitions`` (scoring tasks per micro-batch; default
Spark's default parallelism, i.e. the cores; 0 keeps the source's partitions), ``max_text_chars``
(25000), ``deadletter_max_original_bytes`` (262144), ``dedup.enabled`` (true), ``dedup.store``
(driver), ``dedup.path`` (the driver's file; default ``sparktweet-dedup.sqlite`` in a local
checkpoint), ``dedup.ttl_s`` (86400), ``max_restarts`` (10 in a row), ``restart_backoff_s`` (2,
doubling up to ``restart_backoff_max_s``, 60), ``stop_timeout_s`` (60), ``outbox_timeout_s`` (120:
how long the driver waits for the broker to acknowledge a batch's outbox records before the batch
fails and is retried), ``source_options`` and ``sink_options`` (extra Kafka options of Spark's
source and sinks, e.g. ``kafka.security.protocol``; the driver's outbox producer takes librdkafka
settings from ``kafka.client`` and ``kafka.producer``). With the ``spark`` store, the dedup step's
parallelism is ``dedup.state_partitions`` (1) for a new checkpoint; an existing checkpoint keeps the
number it was created with (Spark records it). Each state partition is a task and a state store
commit per micro-batch, and one key per tweet is little work, so one partition is the cheap default;
raise it for rates a single task cannot keep up with. It is also the partitions of the shuffled
records, i.e. the tasks that fill each micro-batch's cache and write its sinks (the model's tasks
come before the shuffle).

Examples
--------
>>> from sparktweet.config import load_config
>>> from sparktweet.session import build_session
>>> cfg = load_config()
>>> spark = build_session(cfg)  # doctest: +SKIP
>>> job = run_stream(spark, cfg, "models/default", "var/stream/tweets", "var/stream/checkpoint",
...                  until_idle=20)  # doctest: +SKIP
>>> job.stats.parquet_rows, job.stats.outbox_records  # doctest: +SKIP
(35, 27)
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.ml import Transformer
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener
from pyspark.sql.streaming.listener import JStreamingQueryListener, QueryProgressEvent

from sparktweet import kafka_io
from sparktweet.config import get
from sparktweet.dedup import PARTITION_SHIFT, DedupStateError, FirstSeenStore
from sparktweet.errors import ConfigError
from sparktweet.records import CANONICAL_SCHEMA, to_canonical
from sparktweet.scoring import OUTPUT_COLUMNS, enrich

log = logging.getLogger(__name__)

#: Kafka metadata kept with every row (Parquet has the first four; ``kafka_key`` is for dead letters).
KAFKA_COLUMNS = ["kafka_partition", "kafka_offset", "kafka_timestamp", "kafka_topic", "kafka_key"]
PARQUET_COLUMNS = [*OUTPUT_COLUMNS, "kafka_partition", "kafka_offset", "kafka_timestamp"]
#: Fields of a ``replies.outbox`` value (JSON; nulls are left out).
OUTBOX_FIELDS = [
    "tweet_id", "text", "author_username", "mentions", "created_at", "ticket_id", "reply_text", "category",
    "sentiment", "sentiment_score", "priority", "entities", "model_version",
]
STAGE_PARSE, STAGE_DEDUP, STAGE_SCORE = "parse", "dedup", "score"
#: Where the duplicate check keeps its state: ``driver`` (sparktweet.dedup.FirstSeenStore, a SQLite
#: file beside a local checkpoint) or ``spark`` (Spark's streaming deduplication, state in the checkpoint).
DEDUP_STORES = ("driver", "spark")
DEDUP_FILE = "sparktweet-dedup.sqlite"
_PARSE_ERROR, _STAGE, _VALUE, _ROLE = "_parse_error", "_stage", "_value", "_role"
_DEDUP_KEY = "_dedup_key"
# JSON types (as schema_of_variant names them) accepted for each canonical field. Ids may be
# JSON integers (kafka_io.encode_tweet writes strings, other producers may not).
_INTEGER_TYPES = ("BIGINT", "INT", "SMALLINT", "TINYINT")
_ID_FIELDS = ("tweet_id", "author_id", "in_reply_to_tweet_id")
_OBSERVATION = "sparktweet_input"
_NO_DATA_BATCHES = "spark.sql.streaming.noDataMicroBatches.enabled"
_SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
_CHECKPOINT_MANAGER = "spark.sql.streaming.checkpointFileManagerClass"
_V1_SOURCES, _V1_SOURCES_DEFAULT = "spark.sql.sources.useV1SourceList", "avro,csv,json,kafka,orc,parquet,text"
_FS_CHECKPOINT_MANAGER = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"

DEFAULTS: dict[str, Any] = {
    "trigger": "500 milliseconds",
    "starting_offsets": "earliest",
    "max_offsets_per_trigger": 20_000,
    "fail_on_data_loss": True,
    "max_text_chars": 25_000,
    "deadletter_max_original_bytes": 256 * 1024,
    "partitions": None,
    "dedup": {"enabled": True, "store": "driver", "path": None, "ttl_s": 86_400, "state_partitions": 1},
    "max_restarts": 10,
    "restart_backoff_s": 2.0,
    "restart_backoff_max_s": 60.0,
    "stop_timeout_s": 60.0,
    "outbox_timeout_s": 120.0,
    "source_options": {},
    "sink_options": {},
}


def _setting(config: Mapping[str, Any], key: str) -> Any:
    default = DEFAULTS
    for part in key.split("."):
        default = default[part]
    return get(config, f"stream.{key}", default)


# --- parsing ----------------------------------------------------------------------------------


def _field_type_error(types: dict[str, Column]) -> Column:
    """The first canonical field whose JSON type is wrong, as a reason; null when all are fine."""
    out = None
    for f in CANONICAL_SCHEMA.fields:
        jtype = types[f.name]
        if isinstance(f.dataType, T.ArrayType):
            ok = jtype.isNull() | jtype.isin("VOID", "ARRAY<STRING>", "ARRAY<VOID>")
            expected = "an array of strings"
        elif f.name in _ID_FIELDS:
            ok = jtype.isNull() | jtype.isin("VOID", "STRING", *_INTEGER_TYPES) | jtype.rlike(r"^DECIMAL\(\d+,0\)$")
            expected = "a string of digits"
        else:
            ok = jtype.isNull() | jtype.isin("VOID", "STRING")
            expected = "a string"
        reason = F.concat(F.lit(f"field '{f.name}' must be {expected}, found JSON "), F.lower(F.substring(jtype, 1, 40)))
        out = F.when(~ok, reason) if out is None else out.when(~ok, reason)
    return out


def parse_records(kafka_df: DataFrame, max_text_chars: int = DEFAULTS["max_text_chars"], source: str = "kafka") -> DataFrame:
    """Kafka rows (``key, value, topic, partition, offset, timestamp``) -> canonical rows + reasons.

    Pure Column logic, so it works on a streaming DataFrame. Every input row gives one output row
    with the canonical columns, ``created_ts``, ``date``, ``error`` (the reason the record cannot
    be scored, or null), the Kafka metadata (:data:`KAFKA_COLUMNS`) and the original value bytes.

    Reasons, first match wins: null value; value not UTF-8; not JSON (or duplicate keys); JSON but
    not an object; a field of the wrong JSON type; then records.validation_error (missing or
    malformed tweet_id, missing text, replacement characters in the text); text longer than
    ``max_text_chars``.

    Examples
    --------
    >>> df = spark.createDataFrame([(b"1", b'{"tweet_id": "1", "text": 5}', "t", 0, 7, None)],
    ...     "key binary, value binary, topic string, partition int, offset long, timestamp timestamp")  # doctest: +SKIP
    >>> parse_records(df).select("tweet_id", "error").first()  # doctest: +SKIP
    Row(tweet_id='1', error="field 'text' must be a string, found JSON bigint")
    """
    meta = [
        F.col("key").alias("kafka_key"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("value").alias(_VALUE),
    ]
    meta_names = [*KAFKA_COLUMNS, _VALUE]
    # Each step is its own projection and the parsed VARIANT is referenced by name, so the value
    # is parsed once per record (the optimizer does not inline a non-cheap expression used twice).
    step1 = kafka_df.select(*meta, F.col("value").cast("string").alias("_s"))
    step2 = step1.select(
        *meta_names, "_s", F.is_valid_utf8("_s").alias("_utf8"), F.try_parse_json("_s").alias("_v")
    )
    variant = F.col("_v")
    type_cols = {f.name: f"_t_{f.name}" for f in CANONICAL_SCHEMA.fields}
    step3 = step2.select(
        *meta_names,
        "_s",
        "_utf8",
        "_v",
        F.schema_of_variant(variant).alias("_t"),
        *[F.schema_of_variant(F.variant_get(variant, f"$.{name}", "variant")).alias(col) for name, col in type_cols.items()],
    )
    top = F.col("_t")
    structural = (
        F.when(F.col(_VALUE).isNull(), F.lit("Kafka record has no value"))
        .when(~F.col("_utf8"), F.lit("value is not valid UTF-8"))
        .when(variant.isNull() & F.get_json_object("_s", "$").isNotNull(), F.lit("value is JSON with duplicate keys"))
        .when(variant.isNull(), F.lit("value is not valid JSON"))
        .when(~top.startswith("OBJECT"),
              F.concat(F.lit("value is a JSON "), F.lower(F.regexp_extract(top, r"^(\w+)", 1)), F.lit(", expected an object")))
        .otherwise(_field_type_error({name: F.col(col) for name, col in type_cols.items()}))
    )
    raw = step3.select(
        *[F.try_variant_get(variant, f"$.{f.name}", f.dataType.simpleString()).alias(f.name) for f in CANONICAL_SCHEMA.fields],
        *meta_names,
        structural.alias(_PARSE_ERROR),
    )
    canonical = to_canonical(raw, source=source, keep=[*meta_names, _PARSE_ERROR])
    length = F.length("text")
    too_long = F.when(
        length > max_text_chars,
        F.concat(F.lit("text is "), length.cast("string"), F.lit(f" characters long; at most {max_text_chars} are accepted")),
    )
    cols = [c for c in canonical.columns if c not in ("error", _PARSE_ERROR)]
    checked = canonical.select(*cols, F.coalesce(F.col(_PARSE_ERROR), F.col("error"), too_long).alias("error"))
    return checked.select(
        *cols,
        "error",
        F.col("error").alias(_PARSE_ERROR),
        F.when(F.col("error").isNotNull(), F.lit(STAGE_PARSE)).alias(_STAGE),
    )


# --- duplicates -------------------------------------------------------------------------------


def mark_first_records(scored: DataFrame, ttl_s: float) -> DataFrame:
    """Add, for each tweet_id seen for the first time, a marker row: a copy of its first record.

    ``scored`` (every record, ``_role`` "record") is unioned with marker rows (``_role`` "first")
    found by Spark's own streaming deduplication, ``dropDuplicatesWithinWatermark`` on tweet_id:
    keyed state in the JVM, kept for ``ttl_s`` of Kafka time and versioned per batch in the
    checkpoint, so a replayed batch marks the same records. A marker is a whole scored row: the
    markers are the accepted tweets (:func:`accepted_records`), and a valid record without one is a
    duplicate (:func:`rejected_records`); :func:`slim_batch` drops the records' model outputs before
    a batch is cached. (A pandas ``applyInPandasWithState`` version cost a Python
    call per tweet_id, ~15 ms per tweet per batch on a loaded laptop.)

    Both branches read one shuffle of the scored rows by the deduplication key, which Spark plans
    once and reuses (``ReusedExchange``): the source is read, parsed and scored once per batch. For
    that the deduplication runs on whole rows (it keeps only the key and an expiry time as state) and
    on every record: a record that failed parsing has a key of its own (``~`` and its Kafka
    position, which no tweet_id matches) and its marker has a null ``_role``. A narrower marker
    branch would make the optimizer prune its columns below the shuffle, and the two shuffles would
    differ. Records older than the state's window (Kafka time) get no marker.

    The shuffle has ``spark.sql.shuffle.partitions`` of the query's session (:class:`StreamJob` sets
    it to ``stream.dedup.state_partitions``); when that differs from the state's partitions recorded
    in an existing checkpoint, Spark adds a second shuffle for the state, which is correct but slower.
    """
    key = F.when(F.col(_PARSE_ERROR).isNull(), F.col("tweet_id")).otherwise(F.concat(F.lit("~"), _position().cast("string")))
    shared = (
        scored.withColumn(_DEDUP_KEY, key)
        .withWatermark("kafka_timestamp", f"{max(int(ttl_s), 1)} seconds")
        .repartition(_DEDUP_KEY)
    )
    # Every column is aliased above the shuffle, in both branches: the union's output then comes from
    # these aliases, and the optimizer's alias removal (which spares only the first branch's output)
    # treats the two copies of the shared plan alike. The cast keeps the watermark's metadata off the
    # records (and so off the Parquet schema).
    columns = [(F.col(c).cast("timestamp") if c == "kafka_timestamp" else F.col(c)).alias(c) for c in scored.columns]
    records = shared.select(*columns, F.lit("record").alias(_ROLE))
    firsts = shared.dropDuplicatesWithinWatermark([_DEDUP_KEY]).select(
        *columns, F.when(F.col(_PARSE_ERROR).isNull(), F.lit("first")).alias(_ROLE)
    )
    return records.unionByName(firsts)


def slim_batch(batch: DataFrame) -> DataFrame:
    """A micro-batch of :func:`mark_first_records` rows, trimmed before foreachBatch caches it.

    A first record (``_role`` "first") is a whole scored row: these are the accepted tweets, which
    go to Parquet and the outbox (:func:`accepted_records`). The records (``_role`` "record") keep
    only what the duplicate check and the dead letters read of them (tweet_id, error, the Kafka
    metadata and the original value); the markers of records that failed parsing are dropped.
    Without ``_role`` the batch is returned as it is.
    """
    if _ROLE not in batch.columns:
        return batch
    kept = {_ROLE, *KAFKA_COLUMNS, _VALUE, "tweet_id", "error", _PARSE_ERROR, _STAGE}
    first = F.col(_ROLE) == "first"
    return batch.where(F.col(_ROLE).isNotNull()).select(
        *[F.col(c) if c in kept else F.when(first, F.col(c)).alias(c) for c in batch.columns]
    )


def _position() -> Column:
    """A record's Kafka position in the topic as one long (partition in the top bits; sparktweet.dedup.position)."""
    return F.shiftleft(F.col("kafka_partition").cast("long"), PARTITION_SHIFT) + F.col("kafka_offset")


def _duplicate_reason(late: bool) -> Column:
    why = ": a record with this id was already accepted"
    if late:
        why += " (or this one is older than the duplicate-check window)"
    return F.concat(F.lit("duplicate tweet_id "), F.col("tweet_id"), F.lit(why))


def _is_duplicate(duplicates: list[int]) -> Column:
    return F.col(_PARSE_ERROR).isNull() & (_position().isin(duplicates) if duplicates else F.lit(False))


def _is_accepted(batch: DataFrame, duplicates: list[int] = ()) -> Column:
    if _ROLE in batch.columns:
        return F.col(_ROLE) == "first"
    return F.col(_PARSE_ERROR).isNull() & ~_is_duplicate(list(duplicates))


def accepted_records(batch: DataFrame, duplicates: list[int] = ()) -> DataFrame:
    """The tweets of a micro-batch that were parsed and are not duplicates: the first record of each
    new tweet_id (with the model's outputs, or its ``error`` when scoring failed). These go to
    Parquet, and those that need a ticket to the outbox.

    A batch with ``_role`` (:func:`mark_first_records`) accepts its first-record markers; a batch without
    it, its valid records that are not at the Kafka positions ``duplicates`` (:func:`decide_batch`)."""
    accepted = batch.where(_is_accepted(batch, duplicates))
    return accepted.drop(_ROLE) if _ROLE in batch.columns else accepted


def rejected_records(batch: DataFrame, duplicates: list[int]) -> DataFrame:
    """The records of a micro-batch that get a dead letter: those that failed parsing (stage ``parse``),
    the ``duplicates`` (Kafka positions, :func:`_position`; ``error`` "duplicate tweet_id ...", stage
    ``dedup``) and accepted tweets that the model gave an error (stage ``score``).

    With the driver's store (:func:`decide_batch`) a duplicate is a valid record of a tweet_id whose
    accepted record is another one, in this batch or an earlier one. With Spark's deduplication
    (``_role``), a valid record without a first-record marker is a duplicate: an earlier record with
    its tweet_id was accepted, or its Kafka timestamp is older than the state's window (the newest
    timestamp seen minus ``dedup.ttl_s``), which only happens to a partition lagging the others by more
    than the window; the reason then says both. :func:`batch_summary` finds them.
    """
    columns = [c for c in batch.columns if c != _ROLE]
    dup = _is_duplicate(duplicates)
    reason = _duplicate_reason(late=_ROLE in batch.columns)
    own = (F.col(_ROLE) == "record") if _ROLE in batch.columns else F.lit(True)
    records = batch.where(own & (F.col(_PARSE_ERROR).isNotNull() | dup)).select(
        *[c for c in columns if c not in ("error", _PARSE_ERROR, _STAGE)],
        F.when(dup, reason).otherwise(F.col("error")).alias("error"),
        F.when(dup, reason).otherwise(F.col(_PARSE_ERROR)).alias(_PARSE_ERROR),
        F.when(dup, F.lit(STAGE_DEDUP)).otherwise(F.col(_STAGE)).alias(_STAGE),
    ).select(*columns)
    scored = accepted_records(batch, duplicates).where(F.col("error").isNotNull()).select(*columns)
    return records.unionByName(scored)


def _wants_ticket() -> Column:
    return F.col("error").isNull() & F.coalesce(F.col("needs_ticket"), F.lit(False)) & F.col("ticket_id").isNotNull()


def batch_metrics(batch: DataFrame) -> list[Column]:
    """The counts :func:`batch_summary` needs, as aggregates for ``DataFrame.observe`` on ``batch``
    (observed metrics are summed from the tasks' accumulators of whatever job reads ``batch``: no
    job or aggregation stage of their own)."""
    record = (F.col(_ROLE) == "record") if _ROLE in batch.columns else F.lit(True)
    accepted = _is_accepted(batch)
    return [
        F.count(F.when(record, 1)).alias("rows"),
        F.count(F.when(record, F.col(_PARSE_ERROR))).alias("parse_errors"),
        F.count(F.when(record & F.col(_PARSE_ERROR).isNull(), 1)).alias("valid"),
        F.count(F.when(accepted, 1)).alias("accepted"),
        F.count(F.when(accepted & F.col("error").isNotNull(), 1)).alias("score_errors"),
        F.count(F.when(accepted & _wants_ticket(), 1)).alias("tickets"),
    ]


def batch_summary(batch: DataFrame, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A micro-batch's counts from its observed :func:`batch_metrics`, and its duplicates.

    Returns ``rows``, ``parse_errors``, ``duplicates``, ``errors`` (parse and score errors of the
    records that are not duplicates; the dead letters are these and the duplicates), ``tickets``
    (outbox records), ``accepted`` (Parquet rows) and ``duplicate_positions`` (Kafka positions, see
    :func:`rejected_records`). Each marker is a valid record of the same batch, so there are
    duplicates only when the valid records outnumber the markers; then (rarely) one more job
    compares their positions on the driver (a few thousand longs at most).
    """
    out = {k: int(metrics[k]) for k in ("rows", "parse_errors", "tickets", "accepted")}
    out["errors"] = out["parse_errors"] + int(metrics["score_errors"])
    out["duplicates"], out["duplicate_positions"] = 0, []
    if _ROLE in batch.columns and int(metrics["valid"]) != out["accepted"]:
        valid = (F.col(_ROLE) == "record") & F.col(_PARSE_ERROR).isNull()
        pos = batch.agg(
            F.collect_list(F.when(valid, _position())).alias("valid"),
            F.collect_list(F.when(F.col(_ROLE) == "first", _position())).alias("firsts"),
        ).first()
        firsts = set(pos["firsts"])
        dups = sorted(p for p in pos["valid"] if p not in firsts)
        out.update(duplicates=len(dups), duplicate_positions=dups)
    return out


def decide_batch(batch: DataFrame, store: FirstSeenStore | None, batch_id: int, outbox: bool = False) -> dict[str, Any]:
    """The duplicate check on the driver, and the counts of :func:`batch_summary`, for a scored batch
    without ``_role``.

    One job collects a few small columns of every record (tweet_id when valid, Kafka position and time,
    whether it failed and whether it wants a ticket; for a persisted batch, the job fills the cache);
    ``store`` (:class:`~sparktweet.dedup.FirstSeenStore`) names the duplicates and remembers the accepted
    records as batch ``batch_id``. ``store=None`` accepts every valid record (``stream.dedup.enabled: false``).
    With ``outbox``, the same job collects the outbox value of each record that wants a ticket, and the
    result has ``outbox``: the (key, value) pairs of the accepted ones (:func:`outbox_records`' rows).
    """
    columns = [
        F.when(F.col(_PARSE_ERROR).isNull(), F.col("tweet_id")).alias("id"),
        _position().alias("pos"),
        F.coalesce(F.unix_millis(F.col("kafka_timestamp")), F.lit(0)).alias("ms"),
        F.col("error").isNotNull().alias("failed"),
        F.coalesce(_wants_ticket(), F.lit(False)).alias("ticket"),
    ]
    if outbox:
        columns.append(F.when(F.col(_PARSE_ERROR).isNull() & _wants_ticket(), _outbox_value()).alias("value"))
    table = batch.select(*columns).toArrow()
    ids, positions, times, failed, ticket = (table.column(c).to_pylist() for c in ("id", "pos", "ms", "failed", "ticket"))
    valid = [(i, p, ms) for i, p, ms in zip(ids, positions, times, strict=True) if i is not None]
    duplicates = store.decide(batch_id, valid) if store is not None else []
    dups = set(duplicates)
    accepted = [n for n, (i, p) in enumerate(zip(ids, positions, strict=True)) if i is not None and p not in dups]
    parse_errors = len(ids) - len(valid)
    score_errors = sum(1 for n in accepted if failed[n])
    tickets = [n for n in accepted if ticket[n]]
    out: dict[str, Any] = {
        "rows": len(ids), "parse_errors": parse_errors, "tickets": len(tickets),
        "accepted": len(accepted), "errors": parse_errors + score_errors,
        "duplicates": len(duplicates), "duplicate_positions": duplicates,
    }
    if outbox:
        values = table.column("value").to_pylist()
        out["outbox"] = [(ids[n].encode(), values[n].encode()) for n in tickets]
    return out


def summarise_batch(batch: DataFrame) -> dict[str, Any]:
    """:func:`batch_summary` of ``batch`` from a job of its own (a ``noop`` write; for a persisted batch,
    it fills the cache). The stream job observes the metrics on its outbox write instead."""
    observation = Observation()
    batch.observe(observation, *batch_metrics(batch)).write.format("noop").mode("overwrite").save()
    return batch_summary(batch, observation.get)


# --- scoring and sinks ------------------------------------------------------------------------

_NULL_OUTPUTS: dict[str, str] = {
    "tokens": "array<string>", "sentiment": "string", "sentiment_score": "double", "topic_label": "string",
    "topic_score": "double", "category": "string", "category_score": "double",
    "entities": "array<struct<text:string,label:string,start:int,end:int>>", "needs_ticket": "boolean",
    "ticket_id": "string", "priority": "string", "reply_text": "string", "model_version": "string",
}


def score_stream(model: Transformer | None, parsed: DataFrame) -> DataFrame:
    """Apply ``model`` to the rows without an error; keep the output columns and the metadata.

    Rows that already carry an error get a null text first, so no stage spends time on them (the
    stages keep the first error and give them null outputs). ``model=None`` adds the output columns
    as typed nulls (used to measure the job without its NLP stages).
    """
    keep = [*KAFKA_COLUMNS, _VALUE, _PARSE_ERROR, _STAGE]
    original_text = "_original_text"
    prepared = parsed.withColumn(original_text, F.col("text")).withColumn(
        "text", F.when(F.col("error").isNull(), F.col("text"))
    )
    if model is None:
        scored = prepared.withColumns(
            {c: F.lit(None).cast(t) for c, t in _NULL_OUTPUTS.items() if c not in prepared.columns}
        ).select(*OUTPUT_COLUMNS, *keep, original_text)
    else:
        scored = enrich(model, prepared, keep=[*keep, original_text])
    return scored.withColumn("text", F.col(original_text)).drop(original_text)


def outbox_records(scored: DataFrame) -> DataFrame:
    """``key``/``value`` rows for ``replies.outbox``: scored tweets that need a ticket."""
    return scored.where(F.col(_PARSE_ERROR).isNull() & _wants_ticket()).select(F.col("tweet_id").alias("key"), _outbox_value().alias("value"))


def _outbox_value() -> Column:
    return F.to_json(F.struct(*[F.col(c) for c in OUTBOX_FIELDS]))


def deadletter_records(scored: DataFrame, max_original_bytes: int = DEFAULTS["deadletter_max_original_bytes"]) -> DataFrame:
    """``key``/``value`` rows for ``tweets.deadletter``: every row with an error.

    The value is JSON: ``original`` (the Kafka value as text when it is UTF-8, else base64, cut
    to ``max_original_bytes``; the full record stays in the source topic at ``topic``/``partition``/
    ``offset``), ``original_encoding``, ``original_bytes``, ``original_truncated``, ``error``,
    ``stage`` (parse, dedup, score), ``time`` (UTC), ``topic``, ``partition``, ``offset``, ``key``,
    ``tweet_id`` and, for stage score, ``model_version``. The key is the tweet_id when it is
    valid, else the original key.
    """
    value = F.col(_VALUE)
    head = F.substring(value, 1, max_original_bytes)
    utf8 = F.is_valid_utf8(value.cast("string"))
    stage = F.coalesce(F.col(_STAGE), F.lit(STAGE_SCORE))
    valid_id = F.col("tweet_id").rlike(r"^[0-9]{1,19}$")
    key_text = F.when(F.is_valid_utf8(F.col("kafka_key").cast("string")), F.col("kafka_key").cast("string"))
    body = F.struct(
        # make_valid_utf8: the cut may split a multi-byte character.
        F.when(utf8, F.make_valid_utf8(head.cast("string"))).otherwise(F.base64(head)).alias("original"),
        F.when(value.isNotNull(), F.when(utf8, F.lit("utf-8")).otherwise(F.lit("base64"))).alias("original_encoding"),
        F.octet_length(value).alias("original_bytes"),
        (F.coalesce(F.octet_length(value), F.lit(0)) > max_original_bytes).alias("original_truncated"),
        F.col("error"),
        stage.alias("stage"),
        F.date_format(F.current_timestamp(), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("time"),
        F.col("kafka_topic").alias("topic"),
        F.col("kafka_partition").alias("partition"),
        F.col("kafka_offset").alias("offset"),
        key_text.alias("key"),
        F.when(valid_id, F.col("tweet_id")).alias("tweet_id"),
        F.when(stage == STAGE_SCORE, F.col("model_version")).alias("model_version"),
    )
    return scored.where(F.col("error").isNotNull()).select(
        F.coalesce(F.when(valid_id, F.col("tweet_id")), key_text).alias("key"), F.to_json(body).alias("value")
    )


# --- the job ----------------------------------------------------------------------------------


@dataclass
class StreamStats:
    """Running totals of a stream job (all micro-batches of all restarts)."""

    batches: int = 0
    rows: int = 0
    parquet_rows: int = 0
    outbox_records: int = 0
    deadletter_records: int = 0
    parse_errors: int = 0
    duplicates: int = 0
    score_errors: int = 0
    restarts: int = 0
    last_batch_id: int | None = None
    last_batch_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StreamOptions:
    """How a stream job reads, triggers and writes; :meth:`from_config` reads the ``stream:`` section."""

    trigger: str = DEFAULTS["trigger"]
    starting_offsets: str = DEFAULTS["starting_offsets"]
    max_offsets_per_trigger: int | None = DEFAULTS["max_offsets_per_trigger"]
    fail_on_data_loss: bool = DEFAULTS["fail_on_data_loss"]
    max_text_chars: int = DEFAULTS["max_text_chars"]
    deadletter_max_original_bytes: int = DEFAULTS["deadletter_max_original_bytes"]
    partitions: int | None = DEFAULTS["partitions"]
    dedup: bool = True
    dedup_store: str = DEFAULTS["dedup"]["store"]
    dedup_path: str | None = DEFAULTS["dedup"]["path"]
    dedup_ttl_s: float = 86_400
    state_partitions: int | None = DEFAULTS["dedup"]["state_partitions"]
    max_restarts: int = DEFAULTS["max_restarts"]
    restart_backoff_s: float = DEFAULTS["restart_backoff_s"]
    restart_backoff_max_s: float = DEFAULTS["restart_backoff_max_s"]
    stop_timeout_s: float = DEFAULTS["stop_timeout_s"]
    outbox_timeout_s: float = DEFAULTS["outbox_timeout_s"]
    source_options: dict[str, str] = field(default_factory=dict)
    sink_options: dict[str, str] = field(default_factory=dict)
    query_name: str = "sparktweet-stream"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> StreamOptions:
        values = {
            "trigger": str(_setting(config, "trigger")),
            "starting_offsets": str(_setting(config, "starting_offsets")),
            "max_offsets_per_trigger": _setting(config, "max_offsets_per_trigger"),
            "fail_on_data_loss": bool(_setting(config, "fail_on_data_loss")),
            "max_text_chars": int(_setting(config, "max_text_chars")),
            "deadletter_max_original_bytes": int(_setting(config, "deadletter_max_original_bytes")),
            "partitions": _setting(config, "partitions"),
            "dedup": bool(_setting(config, "dedup.enabled")),
            "dedup_store": str(_setting(config, "dedup.store")).strip().lower(),
            "dedup_path": _setting(config, "dedup.path"),
            "dedup_ttl_s": float(_setting(config, "dedup.ttl_s")),
            "state_partitions": _setting(config, "dedup.state_partitions"),
            "max_restarts": int(_setting(config, "max_restarts")),
            "restart_backoff_s": float(_setting(config, "restart_backoff_s")),
            "restart_backoff_max_s": float(_setting(config, "restart_backoff_max_s")),
            "stop_timeout_s": float(_setting(config, "stop_timeout_s")),
            "outbox_timeout_s": float(_setting(config, "outbox_timeout_s")),
            "source_options": {str(k): str(v) for k, v in (_setting(config, "source_options") or {}).items()},
            "sink_options": {str(k): str(v) for k, v in (_setting(config, "sink_options") or {}).items()},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("partitions", "state_partitions"):
            if values[key] is not None:
                values[key] = int(values[key])
        mopt = values["max_offsets_per_trigger"]
        values["max_offsets_per_trigger"] = int(mopt) if mopt not in (None, "", 0) else None
        if values["max_text_chars"] < 1:
            raise ConfigError(f"stream.max_text_chars must be >= 1, found {values['max_text_chars']}.")
        if values["dedup_store"] not in DEDUP_STORES:
            raise ConfigError(f"stream.dedup.store must be one of {', '.join(DEDUP_STORES)}, found {values['dedup_store']!r}.")
        if values["dedup_ttl_s"] <= 0:
            raise ConfigError(f"stream.dedup.ttl_s must be > 0, found {values['dedup_ttl_s']}.")
        return cls(**values)


def _local_path(path: str) -> bool:
    """True for a path on the local file system (no scheme, or ``file:``)."""
    scheme = path.split(":", 1)[0].lower() if ":" in path.split("/", 1)[0] else ""
    return scheme in ("", "file")


def _apply_trigger(writer: Any, trigger: str) -> Any:
    spec = trigger.strip().lower()
    if spec in ("available-now", "availablenow", "available_now"):
        return writer.trigger(availableNow=True)
    if spec == "once":
        return writer.trigger(once=True)
    if not spec or spec in ("0", "asap", "continuous-asap"):
        return writer.trigger(processingTime="0 seconds")
    return writer.trigger(processingTime=trigger)


def _parse_iso(ts: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(ts)


def _offsets_total(offsets: Any) -> int | None:
    """Records up to a Kafka source's offsets (topic -> partition -> offset); None for other sources.

    The offsets come as JSON text (PySpark's stock listener bridge), as Python's repr of the parsed
    JSON (``SourceProgress.fromJson``, i.e. events from :class:`JsonProgressListener`), or parsed.
    """
    if not offsets:
        return None
    if isinstance(offsets, str):
        try:
            data = json.loads(offsets)
        except ValueError:
            # Python's repr of the parsed offsets: fromJson stores str(dict).
            try:
                data = ast.literal_eval(offsets)
            except (ValueError, SyntaxError):
                return None
    else:
        data = offsets
    if not isinstance(data, dict):
        return None
    return sum(int(o) for parts in data.values() if isinstance(parts, dict) for o in parts.values())


def _run_concurrently(tasks: Mapping[str, Any], began: float) -> dict[str, float]:
    """Run the sink writes of one batch at once (each is a small Spark job reading the cached
    batch; in sequence their fixed costs add up to most of a small batch's latency). Threads
    inherit the stream thread's local properties, so stopping the query cancels their jobs too; a
    single write runs in the calling thread. Raises the first error after all have finished. Returns
    each task's end time since ``began``."""
    from pyspark import InheritableThread

    done: dict[str, float] = {}
    errors: list[BaseException] = []
    if len(tasks) == 1:
        # The usual batch (Parquet only, no dead letters): no thread to start and join.
        (name, task), = tasks.items()
        task()
        done[name] = round(time.monotonic() - began, 2)
        return done

    def run(name: str, task: Any) -> None:
        try:
            task()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the foreachBatch thread
            errors.append(exc)
        finally:
            done[name] = round(time.monotonic() - began, 2)

    threads = [InheritableThread(target=run, args=(name, task), name=f"sparktweet-{name}") for name, task in tasks.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return done


class JsonProgressListener(StreamingQueryListener):
    """A StreamingQueryListener whose progress events cross from the JVM as one JSON string.

    PySpark's stock bridge builds each ``QueryProgressEvent`` field by field over Py4J
    (``StreamingQueryProgress.fromJObject``): a hundred or more round trips, and a pickled row per
    observed metric. On the 2-core machine that took 0.6 s per event (0.9 s at worst), in the
    driver's Python process, while the next micro-batch was being planned there. This bridge asks
    the JVM for ``progress.json()`` once and builds the event with PySpark's own
    ``QueryProgressEvent.fromJson``. The event is the same class with the same fields, with two
    differences: observed metrics arrive as JSON values (a timestamp is a string,
    see :func:`_observed_time`), and ``event.progress.json`` is the string the JVM produced.
    PySpark versions without ``fromJson`` get the stock bridge.
    """

    @property
    def _jlistener(self) -> Any:
        from pyspark import SparkContext

        if getattr(self, "_jlistenerobj", None) is None:
            bridge = _JsonBridge if hasattr(QueryProgressEvent, "fromJson") else JStreamingQueryListener
            self._jlistenerobj = SparkContext._jvm.PythonStreamingQueryListenerWrapper(bridge(self))  # type: ignore[union-attr]
        return self._jlistenerobj


class _JsonBridge(JStreamingQueryListener):
    """The Py4J callback object of :class:`JsonProgressListener`."""

    def onQueryProgress(self, jevent: Any) -> None:
        self.pylistener.onQueryProgress(QueryProgressEvent.fromJson({"progress": json.loads(jevent.progress().json())}))


def observe_input(records: DataFrame, timestamp: str = "kafka_timestamp") -> DataFrame:
    """``records`` with the observed metrics :class:`ProgressLogger` reads: rows, oldest and newest time.

    The times are epoch milliseconds: a timestamp-typed metric reaches a listener through the JVM's
    progress JSON cut to whole seconds ("2026-11-26 18:13:50"), which made the logged latencies
    whole-second steps.
    """
    return records.observe(
        _OBSERVATION,
        F.count(F.lit(1)).alias("rows"),
        F.min(F.unix_millis(timestamp)).alias("oldest"),
        F.max(F.unix_millis(timestamp)).alias("newest"),
    )


def _observed_time(value: Any) -> _dt.datetime | None:
    """A time of an observed metric as an aware UTC datetime: epoch milliseconds (what
    :func:`observe_input` observes), a datetime, or the JSON string of one."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return _dt.datetime.fromtimestamp(value / 1000, tz=_dt.UTC)
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value.replace(" ", "T", 1))
    if value.tzinfo is None:  # session time zone is UTC (session.build_session)
        value = value.replace(tzinfo=_dt.UTC)
    return value


class ProgressLogger(JsonProgressListener):
    """Logs each micro-batch of one query: rows, input and processing rate, latency, Kafka lag.

    Latency is measured from the Kafka timestamp of the oldest and newest record of the batch to
    the end of the batch (observed metrics of the query); lag is the number of records in
    ``tweets.raw`` after the batch's end offsets when the batch started.
    """

    def __init__(self, query_name: str) -> None:
        super().__init__()
        self.query_name = query_name
        self.last: dict[str, Any] = {}
        self._failed = False

    def onQueryStarted(self, event: Any) -> None:
        if event.name == self.query_name:
            log.info("stream %s started (id %s, run %s)", event.name, event.id, event.runId)

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        if p.name != self.query_name:
            return
        try:
            info = self.summarise(p)
        except Exception:  # a logging hook must never fail the query
            # Said once at warning level: a logger that silently stops logging hides the lag.
            log.log(logging.DEBUG if self._failed else logging.WARNING, "could not summarise stream progress", exc_info=True)
            self._failed = True
            return
        self.last = info
        if info["rows"] or info["lag"]:
            log.info(
                "batch %(batch)d: %(rows)d rows in %(seconds).2fs (input %(input_rate).0f/s, processed %(processed_rate).0f/s), "
                "latency oldest %(latency_oldest_s)s s newest %(latency_newest_s)s s, lag %(lag)s records",
                info,
            )

    @staticmethod
    def summarise(p: Any) -> dict[str, Any]:
        """The numbers logged for one progress event."""
        end = _parse_iso(p.timestamp) + _dt.timedelta(milliseconds=p.batchDuration)
        latency_oldest = latency_newest = None
        observed = (p.observedMetrics or {}).get(_OBSERVATION)
        if observed is not None and observed["oldest"] is not None:
            oldest, newest = _observed_time(observed["oldest"]), _observed_time(observed["newest"])
            latency_oldest = round((end - oldest).total_seconds(), 3)
            latency_newest = round((end - newest).total_seconds(), 3)
        lag = None
        if p.sources:
            latest, done = _offsets_total(p.sources[0].latestOffset), _offsets_total(p.sources[0].endOffset)
            if latest is not None and done is not None:
                lag = max(0, latest - done)
        return {
            "batch": p.batchId,
            "rows": p.numInputRows,
            "seconds": p.batchDuration / 1000,
            "input_rate": p.inputRowsPerSecond or 0.0,
            "processed_rate": p.processedRowsPerSecond or 0.0,
            "latency_oldest_s": latency_oldest,
            "latency_newest_s": latency_newest,
            "lag": lag,
        }

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if event.exception:
            log.warning("stream query %s terminated with an error: %s", event.id, event.exception.splitlines()[0])


class StreamJob:
    """One stream job: builds and (re)starts the query, owns its stats, stops it gracefully.

    Use :func:`run_stream` for the blocking job; :meth:`start` gives a running query to embed.
    """

    def __init__(
        self,
        spark: SparkSession,
        config: Mapping[str, Any],
        model: Transformer | None,
        output: str,
        checkpoint: str,
        options: StreamOptions | None = None,
    ) -> None:
        self.spark, self.config, self.model = spark, config, model
        self.output, self.checkpoint = output, checkpoint
        self.options = options or StreamOptions.from_config(config)
        self.stats = StreamStats()
        self.query: StreamingQuery | None = None
        self.listener = ProgressLogger(self.options.query_name)
        self._listening = False
        self._stop = threading.Event()
        self._busy = threading.Event()
        self._last_data = time.monotonic()
        self._bootstrap = kafka_io.bootstrap_servers(config)
        self._topics = {name: kafka_io.topic_name(config, name) for name in ("raw", "outbox", "deadletter")}
        self._store: FirstSeenStore | None = None
        self._producer: Any = None
        self._fatal: BaseException | None = None
        #: (batch_id, rows, {step: seconds since the batch began}) of the last batches with data.
        self.recent_timings: deque[tuple[int, int, dict[str, float]]] = deque(maxlen=200)

    # -- building ----------------------------------------------------------------------------

    def source(self) -> DataFrame:
        """The Kafka source on ``tweets.raw``."""
        o = self.options
        reader = (
            self.spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", self._bootstrap)
            .option("subscribe", self._topics["raw"])
            .option("startingOffsets", o.starting_offsets)
            .option("failOnDataLoss", str(o.fail_on_data_loss).lower())
        )
        if o.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(o.max_offsets_per_trigger))
        for key, value in o.source_options.items():
            reader = reader.option(key, value)
        return reader.load()

    def pipeline(self, kafka_df: DataFrame) -> DataFrame:
        """Source rows -> parsed (observed) -> scored (+ first-record markers): what foreachBatch receives."""
        partitions = self.options.partitions
        if partitions is None:
            partitions = self.spark.sparkContext.defaultParallelism
        if partitions:
            # The fused pipeline is one pandas UDF, i.e. one Python worker per running task, each
            # holding every model: more tasks than cores only means more workers to start and keep
            # warm, and smaller Arrow batches.
            kafka_df = kafka_df.coalesce(partitions)
        parsed = parse_records(kafka_df, self.options.max_text_chars)
        observed = observe_input(parsed)
        scored = score_stream(self.model, observed)
        if self.options.dedup and self.options.dedup_store == "spark":
            scored = mark_first_records(scored, self.options.dedup_ttl_s)
        return scored

    def dedup_path(self) -> str | None:
        """The driver's duplicate-check file: ``stream.dedup.path``, else beside a local checkpoint."""
        o = self.options
        if not o.dedup or o.dedup_store != "driver":
            return None
        if o.dedup_path:
            return str(o.dedup_path)
        if not _local_path(self.checkpoint):
            raise ConfigError(
                f"stream.dedup.store 'driver' keeps its state in a local file, and the checkpoint {self.checkpoint} is not "
                "local: set stream.dedup.path to a file on a disk that outlives the driver, or stream.dedup.store=spark "
                "(Spark's deduplication, state in the checkpoint)."
            )
        local = self.checkpoint.split(":", 1)[1] if self.checkpoint.lower().startswith("file:") else self.checkpoint
        return os.path.join(local, DEDUP_FILE)

    def _kafka_write(self, df: DataFrame, topic: str) -> None:
        writer = (
            df.write.format("kafka").mode("append")
            .option("kafka.bootstrap.servers", self._bootstrap)
            .option("topic", topic)
            .option("kafka.acks", "all")
            .option("kafka.enable.idempotence", "true")
            .option("kafka.compression.type", "lz4")
            .option("kafka.linger.ms", "5")
            # Dead letters carry up to deadletter_max_original_bytes of the original plus JSON escaping.
            .option("kafka.max.request.size", str(max(4 * self.options.deadletter_max_original_bytes, 1 << 20) + 65536))
        )
        for key, value in self.options.sink_options.items():
            writer = writer.option(key, value)
        writer.save()

    def process_batch(self, batch: DataFrame, batch_id: int) -> None:
        """foreachBatch: persist the batch; one job computes it and counts it (the driver's store: collects
        and checks it, then the driver sends the outbox; Spark's: writes the outbox); then Parquet and the
        dead letters at once from the cache."""
        self._busy.set()
        began = time.monotonic()
        timings: dict[str, float] = {}
        raw = slim_batch(batch).persist()
        timings["persist"] = time.monotonic() - began
        try:
            if _ROLE in raw.columns:
                # Spark's deduplication: the first job is the outbox write. It computes the batch (Kafka
                # read, model, duplicate state), fills the cache and counts it (observed metrics), so a
                # reply's record is on its way as soon as the batch is scored. Its rows are the accepted
                # tweets (the first records), so duplicates never reach it, and they need no count first.
                observation = Observation()
                observed = raw.observe(observation, *batch_metrics(raw))
                self._kafka_write(outbox_records(accepted_records(observed)), self._topics["outbox"])
                timings["outbox"] = time.monotonic() - began
                counts = batch_summary(raw, observation.get)
            else:
                # The driver's duplicate check: the first job computes the batch, fills the cache and
                # collects what the check and the counts need, and the outbox values; the driver sends
                # the accepted ones at once (no Spark job of their own).
                try:
                    counts = decide_batch(raw, self._store, batch_id, outbox=True)
                except DedupStateError as exc:
                    # Restarting cannot help: stop, and run() raises it.
                    self._fatal = exc
                    self._stop.set()
                    raise
                timings["decided"] = time.monotonic() - began
                if counts["outbox"]:
                    kafka_io.send_records(self._outbox_producer(), self._topics["outbox"], counts["outbox"],
                                          flush_timeout=self.options.outbox_timeout_s)
                timings["outbox"] = time.monotonic() - began
            rows = counts["rows"]
            if rows == 0:
                return
            parse_errors, errors, tickets = counts["parse_errors"], counts["errors"], counts["tickets"]
            duplicates, accepted = counts["duplicates"], counts["accepted"]
            writes: dict[str, Any] = {}
            if accepted:
                writes["parquet"] = lambda: (
                    accepted_records(raw, counts["duplicate_positions"]).select(*PARQUET_COLUMNS)
                    .write.mode("append").partitionBy("date")
                    # Each task moves its files into place when it commits (no second rename pass at job
                    # commit) and no _SUCCESS marker: a micro-batch is an append, its commit is the checkpoint's.
                    .option("mapreduce.fileoutputcommitter.algorithm.version", "2")
                    .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
                    .parquet(self.output)
                )
            if errors or duplicates:
                writes["deadletter"] = lambda: self._kafka_write(
                    deadletter_records(rejected_records(raw, counts["duplicate_positions"]), self.options.deadletter_max_original_bytes),
                    self._topics["deadletter"],
                )
            timings.update(_run_concurrently(writes, began))
            s = self.stats
            s.batches += 1
            s.rows += rows
            s.parquet_rows += accepted
            s.outbox_records += tickets
            s.deadletter_records += errors + duplicates
            s.parse_errors += parse_errors
            s.duplicates += duplicates
            s.score_errors += errors - parse_errors
            s.last_batch_id = batch_id
            s.last_batch_seconds = time.monotonic() - began
            timings["total"] = s.last_batch_seconds
            self._last_data = time.monotonic()
        finally:
            raw.unpersist()
            self._busy.clear()
        timings["unpersisted"] = time.monotonic() - began
        self.recent_timings.append((batch_id, rows, timings))
        log.debug("batch %d: %s; seconds since start when done: %s", batch_id,
                  {k: v for k, v in counts.items() if k not in ("duplicate_positions", "outbox")},
                  {k: round(v, 2) for k, v in timings.items()})

    def start(self) -> StreamingQuery:
        """Start (or restart from the checkpoint) the query; returns the running StreamingQuery."""
        path = self.dedup_path()
        if path is not None and self._store is None:
            self._store = FirstSeenStore(path, self.options.dedup_ttl_s)
        scored = self.pipeline(self.source())
        writer = (
            scored.writeStream.queryName(self.options.query_name)
            .option("checkpointLocation", self.checkpoint)
            .outputMode("append")
            .foreachBatch(self.process_batch)
        )
        writer = _apply_trigger(writer, self.options.trigger)
        if not self._listening:
            self.spark.streams.addListener(self.listener)
            self._listening = True
        # Processing-time state timeouts make Spark run a "no-data" micro-batch at every trigger,
        # which would push empty partitions through the whole model; expired dedup state is just
        # as well dropped at the next batch that has data. The query keeps the value it starts with.
        # The query's session is a clone taken by start(), so settings made only around it stick to the
        # query. spark.sql.shuffle.partitions is the dedup state's partitions for a new checkpoint.
        settings = {_NO_DATA_BATCHES: "false"}
        if self.options.state_partitions:
            settings[_SHUFFLE_PARTITIONS] = str(self.options.state_partitions)
        conf = self.spark.conf
        if _local_path(self.checkpoint) and conf.get(_CHECKPOINT_MANAGER, None) is None:
            # Spark's default manager writes through Hadoop's FileContext, which on the local file system
            # (without Hadoop's native library) starts helper processes (chmod, stat) for its creates and
            # renames: the offset log, the commit log and the state store's delta file cost 40-120 ms each
            # per micro-batch. Through the FileSystem-based manager they cost about 10 ms each (measured by
            # benchmarks/stream_latency.py); a local rename is atomic, which is what the checkpoint needs.
            settings[_CHECKPOINT_MANAGER] = _FS_CHECKPOINT_MANAGER
        # Kafka batch writes through DataSource V2: process_batch counts a batch with metrics observed on
        # its outbox write, and only a V2 write reports them (the V1 path, Spark's default for "kafka",
        # runs the query inside a command, whose metrics never reach the Observation).
        v1 = [name for name in str(conf.get(_V1_SOURCES, _V1_SOURCES_DEFAULT)).split(",") if name.strip() and name.strip() != "kafka"]
        settings[_V1_SOURCES] = ",".join(v1)
        previous = {key: conf.get(key, None) for key in settings}
        for key, value in settings.items():
            conf.set(key, value)
        try:
            self.query = writer.start()
        finally:
            for key, value in previous.items():
                if value is None:
                    conf.unset(key)
                else:
                    conf.set(key, value)
        self._last_data = time.monotonic()
        log.info(
            "stream job reading %s on %s -> %s, %s, %s (checkpoint %s, trigger %s)",
            self._topics["raw"], self._bootstrap, self.output, self._topics["outbox"], self._topics["deadletter"],
            self.checkpoint, self.options.trigger,
        )
        return self.query

    # -- running -----------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        """Ask the job to stop after the running batch (safe from signal handlers and threads)."""
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: let a running batch finish (up to ``timeout`` s), then stop the query."""
        self._stop.set()
        query = self.query
        if query is not None and query.isActive:
            deadline = time.monotonic() + (self.options.stop_timeout_s if timeout is None else timeout)
            while (self._busy.is_set() or query.status["isTriggerActive"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            query.stop()
            log.info("stream query stopped")
        self._close_store()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._producer is not None:
            self._producer.flush(self.options.outbox_timeout_s)
            self._producer = None

    def _outbox_producer(self) -> Any:
        """The driver's idempotent producer for ``replies.outbox`` (librdkafka settings from ``kafka:``), kept
        across micro-batches; the same partitioner as Spark's Kafka sink, so a tweet_id's records share a partition."""
        if self._producer is None:
            self._producer = kafka_io.producer(self.config, linger_ms=0)
        return self._producer

    def _idle_for(self, query: StreamingQuery) -> float:
        status = query.status
        if self._busy.is_set() or status["isTriggerActive"] or status["isDataAvailable"]:
            return 0.0
        if status["message"] == "Initializing sources":
            return 0.0
        return time.monotonic() - self._last_data

    def run(self, until_idle: float | None = None, max_seconds: float | None = None, poll_s: float = 0.25) -> StreamStats:
        """Run until stopped (SIGTERM, :meth:`request_stop`), idle for ``until_idle`` s, or ``max_seconds``.

        A query that fails is restarted from its checkpoint with exponential backoff, at most
        ``max_restarts`` times in a row (a batch that completes resets the count).
        """
        began = time.monotonic()
        failures = 0
        backoff = self.options.restart_backoff_s
        try:
            while not self._stop.is_set():
                query = self.start()
                batches_at_start = self.stats.batches
                while query.isActive and not self._stop.is_set():
                    if max_seconds is not None and time.monotonic() - began >= max_seconds:
                        log.info("stream job ran for %.0fs (max_seconds); stopping", max_seconds)
                        self._stop.set()
                        break
                    if until_idle is not None and self._idle_for(query) >= until_idle:
                        log.info("no new tweets for %.0fs (until_idle); stopping", until_idle)
                        self._stop.set()
                        break
                    time.sleep(poll_s)
                if self._stop.is_set():
                    break
                error = query.exception()
                if error is None:
                    break  # availableNow / once triggers end by themselves
                failures = 0 if self.stats.batches > batches_at_start else failures + 1
                if failures == 0:
                    backoff = self.options.restart_backoff_s
                if failures > self.options.max_restarts:
                    raise error
                self.stats.restarts += 1
                log.warning(
                    "stream query failed (%s); restarting from the checkpoint in %.0fs", str(error).splitlines()[0][:300], backoff
                )
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.options.restart_backoff_max_s)
        finally:
            self.stop()
            self._remove_listener()
        if self._fatal is not None:
            raise self._fatal
        log.info("stream job done: %s", self.stats.as_dict())
        return self.stats

    def _remove_listener(self) -> None:
        if self._listening:
            self.spark.streams.removeListener(self.listener)
            self._listening = False


def start_stream(
    spark: SparkSession,
    config: Mapping[str, Any],
    model_path: str | None,
    output: str,
    checkpoint: str,
    model: Transformer | None = None,
    **options: Any,
) -> StreamJob:
    """Start the stream job without blocking; ``job.query`` is the running StreamingQuery.

    ``model`` (a loaded PipelineModel) wins over ``model_path``; with neither, the output columns
    are nulls (the job without its NLP stages, for benchmarks). ``options`` override
    :class:`StreamOptions` fields (``trigger``, ``starting_offsets``, ``max_offsets_per_trigger``...).
    """
    if model is None and model_path is not None:
        from sparktweet.training import load_model

        model = load_model(model_path)
    job = StreamJob(spark, config, model, output, checkpoint, StreamOptions.from_config(config, **options))
    job.start()
    return job


def require_topics(config: Mapping[str, Any], timeout: float = 30.0) -> None:
    """Fail at once, naming them, when the source or sink topics do not exist: brokers usually do
    not auto-create topics, and Spark's Kafka writer would otherwise wait for them forever."""
    wanted = {kafka_io.topic_name(config, name) for name in ("raw", "outbox", "deadletter")}
    try:
        existing = set(kafka_io.list_topics(config, timeout=timeout))
    except Exception as exc:  # librdkafka raises KafkaException; say what we tried
        raise kafka_io.KafkaError(
            f"Cannot list the topics of {get(config, 'kafka.bootstrap_servers')}: {exc}"
        ) from exc
    missing = sorted(wanted - existing)
    if missing:
        raise kafka_io.KafkaError(
            f"Kafka topics {', '.join(missing)} do not exist on {get(config, 'kafka.bootstrap_servers')}. "
            "Create them with 'sparktweet kafka topics' (same --conf/--set) or your cluster's tooling."
        )


def run_stream(
    spark: SparkSession,
    config: Mapping[str, Any],
    model_path: str | None,
    output: str,
    checkpoint: str,
    model: Transformer | None = None,
    until_idle: float | None = None,
    max_seconds: float | None = None,
    stop_event: threading.Event | None = None,
    handle_signals: bool = True,
    **options: Any,
) -> StreamJob:
    """Run the stream job until stopped; returns the finished :class:`StreamJob` (query, stats).

    Parameters
    ----------
    spark
        A session with the spark-sql-kafka jars (``session.build_session`` adds ``jars/``).
    config
        The sparktweet config: ``kafka:`` (brokers, topics) and ``stream:`` sections.
    model_path
        Saved model folder (``models/default`` or its ``pipeline``); ``model`` may pass a loaded one.
    output, checkpoint
        Parquet folder (partitioned by date) and the query's checkpoint folder (local or Hadoop URI).
    until_idle
        Stop once no new record arrived for this many seconds (demos, tests, backfills).
    max_seconds
        Stop after this many seconds.
    stop_event
        Set it from another thread to stop the job gracefully.
    handle_signals
        Install SIGTERM/SIGINT handlers that stop gracefully (only from the main thread).
    options
        :class:`StreamOptions` overrides: ``trigger``, ``starting_offsets``, ``max_offsets_per_trigger``,
        ``dedup``, ``max_restarts``...
    """
    if model is None and model_path is not None:
        from sparktweet.training import load_model

        model = load_model(model_path)
    require_topics(config)
    job = StreamJob(spark, config, model, output, checkpoint, StreamOptions.from_config(config, **options))
    previous: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, job.request_stop)
    watcher = None
    if stop_event is not None:
        watcher = threading.Thread(target=lambda: (stop_event.wait(), job.request_stop()), daemon=True)
        watcher.start()
    try:
        job.run(until_idle=until_idle, max_seconds=max_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return job

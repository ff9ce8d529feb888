"""Replay a tweet dump (CSV, JSON Lines, Parquet) into ``tweets.raw``: demos, benchmarks, backfills.

No pyspark here: a replay is a light process (pandas / pyarrow / plain file reads and the
confluent-kafka producer), so it can feed a stream job on the same small machine.

Each input row becomes one canonical JSON record (DESIGN.md) keyed by ``tweet_id``. Tweets.csv
columns are mapped (``name`` -> ``author_username``, ``tweet_created`` -> ``created_at``) and
``mentions`` is taken from the text when the dump has none. Rows that are not valid tweet records
(a JSON line that does not parse, a row without ``tweet_id`` or ``text``) are sent **as they are**:
deciding what is bad is the stream job's work (it dead-letters them with the reason), and a replay
never stops on them.

Pacing is a token bucket (:class:`TokenBucket`): ``rate`` tweets per second with a small burst,
or as fast as the producer goes when ``rate`` is ``None``. A run ends with a delivery report
(:class:`ReplaySummary`): records read, sent, acknowledged by the broker, failed (with reasons),
and per-partition counts.

Examples
--------
>>> from sparktweet.config import load_config
>>> summary = replay(load_config(), "sparktweet/data/sample_tweets.jsonl", rate=50)  # doctest: +SKIP
>>> print(format_summary(summary))  # doctest: +SKIP
replayed 40 records to tweets.raw in 0.9s (46 records/s): 40 delivered, 0 failed, 5 not valid tweet records
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sparktweet import kafka_io
from sparktweet.errors import InputError

log = logging.getLogger(__name__)

#: Tweets.csv (Kaggle / CrowdFlower) column names that map onto the canonical record.
CSV_ALIASES = {"name": "author_username", "tweet_created": "created_at"}
_MENTION_RE = re.compile(r"(?<![\w@])@(\w{1,15})")
_CHUNK_ROWS = 5000


@dataclass(frozen=True)
class DumpRecord:
    """One row of a dump, ready to produce: Kafka key and value, and whether it is a valid tweet record."""

    key: bytes | None
    value: bytes
    valid: bool


@dataclass
class ReplaySummary:
    """The delivery report of one replay."""

    path: str
    topic: str
    read: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    invalid: int = 0
    seconds: float = 0.0
    stopped: bool = False
    partitions: dict[int, int] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)

    @property
    def records_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class TokenBucket:
    """Paces calls to ``rate`` per second on average, allowing bursts of ``burst`` calls.

    ``rate`` of ``None`` (or ``0``) means no limit. The bucket starts full.

    Examples
    --------
    >>> bucket = TokenBucket(rate=1000, burst=10)
    >>> start = time.monotonic()
    >>> for _ in range(110):
    ...     bucket.acquire()
    >>> 0.08 <= time.monotonic() - start < 0.5
    True
    """

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and (not math.isfinite(rate) or rate < 0):
            raise InputError(f"The replay rate must be a positive number of tweets per second, found {rate!r}.")
        self.rate = rate or None
        # A twentieth of a second's worth: smooth enough for latency benchmarks, large enough that
        # the sleeps do not dominate at thousands of tweets per second.
        self.burst = float(burst) if burst else max(1.0, (self.rate or 0) / 20)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, n: float = 1.0) -> None:
        """Block until ``n`` tokens are available, then take them."""
        if self.rate is None:
            return
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n:
                self._tokens -= n
                return
            self._sleep((n - self._tokens) / self.rate)


def detect_format(path: str) -> str:
    """``csv``, ``json`` or ``parquet`` from the extension (a folder is read as a Parquet dataset)."""
    lower = path.lower().rstrip("/")
    for ext, fmt in ((".csv", "csv"), (".jsonl", "json"), (".ndjson", "json"), (".json", "json"), (".parquet", "parquet")):
        if lower.endswith(ext):
            return fmt
    if os.path.isdir(path):
        return "parquet"
    raise InputError(f"Cannot tell the format of {path!r}: use a .csv, .jsonl/.json or .parquet path, or pass --format.")


def _clean(value: Any) -> Any:
    # pandas / pyarrow give NaN, numpy scalars and arrays; JSON wants plain Python values.
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def canonical_record(row: Mapping[str, Any], source: str | None = "replay") -> dict[str, Any]:
    """A dump row as a canonical tweet record: aliases mapped, empty optional fields dropped.

    Only the canonical fields are kept (labels and Tweets.csv extras are not part of the Kafka
    record). ``mentions`` comes from the text when the row has none; ``source`` is set when given.

    Examples
    --------
    >>> canonical_record({"tweet_id": "5", "text": "@united @Delta hi", "name": "jo", "airline": "United"})
    {'tweet_id': '5', 'text': '@united @Delta hi', 'author_username': 'jo', 'mentions': ['united', 'Delta'], 'source': 'replay'}
    """
    record: dict[str, Any] = {}
    for key, value in row.items():
        name = CSV_ALIASES.get(key, key)
        if name in kafka_io.TWEET_FIELDS and (name not in record or record[name] is None):
            record[name] = _clean(value)
    for name in list(record):
        value = record[name]
        # An empty cell is "no value" for every field but the text (an empty tweet is a tweet).
        if name != "text" and (value is None or value == ""):
            del record[name]
    if "mentions" not in record and isinstance(record.get("text"), str):
        found = _MENTION_RE.findall(record["text"])
        if found:
            record["mentions"] = found
    if source is not None:
        record["source"] = source
    return {k: record[k] for k in kafka_io.TWEET_FIELDS if k in record}


def _encode(record: Mapping[str, Any]) -> DumpRecord:
    try:
        return DumpRecord(kafka_io.tweet_key(record), kafka_io.encode_tweet(record), True)
    except InputError:
        pass
    # Not a valid tweet record: sent as it is, so the stream job dead-letters it with the reason.
    key = record.get("tweet_id")
    key_bytes = str(key).encode("utf-8") if key not in (None, "") else None
    value = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    return DumpRecord(key_bytes, value, False)


def _iter_jsonl(path: str, source: str | None) -> Iterator[DumpRecord]:
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield DumpRecord(None, line, False)
                continue
            if not isinstance(parsed, dict):
                yield DumpRecord(None, line, False)
                continue
            yield _encode(canonical_record(parsed, source))


def _iter_csv(path: str, source: str | None) -> Iterator[DumpRecord]:
    import pandas as pd

    # Strings only (ids above 2^53 must not become floats); invalid UTF-8 becomes U+FFFD, which
    # the stream job reports as "text is not valid UTF-8" rather than the replay failing.
    reader = pd.read_csv(
        path, dtype=str, keep_default_na=False, encoding_errors="replace", chunksize=_CHUNK_ROWS, on_bad_lines="warn"
    )
    for chunk in reader:
        for row in chunk.to_dict(orient="records"):
            yield _encode(canonical_record(row, source))


def _iter_parquet(path: str, source: str | None) -> Iterator[DumpRecord]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    wanted = [c for c in dataset.schema.names if CSV_ALIASES.get(c, c) in kafka_io.TWEET_FIELDS]
    for batch in dataset.to_batches(columns=wanted, batch_size=_CHUNK_ROWS):
        for row in batch.to_pylist():
            yield _encode(canonical_record(row, source))


def read_dump(path: str, fmt: str | None = None, source: str | None = "replay") -> Iterator[DumpRecord]:
    """Yield the rows of a dump as :class:`DumpRecord` (key, value, valid), lazily, in file order.

    Examples
    --------
    >>> first = next(read_dump("sparktweet/data/sample_tweets.jsonl"))  # doctest: +SKIP
    >>> first.key, first.valid  # doctest: +SKIP
    (b'1861000000000000000', True)
    """
    fmt = fmt or detect_format(path)
    if not os.path.exists(path):
        raise InputError(f"Dump {path} does not exist.")
    readers = {"csv": _iter_csv, "json": _iter_jsonl, "parquet": _iter_parquet}
    if fmt not in readers:
        raise InputError(f"Unknown dump format {fmt!r}; expected csv, json or parquet.")
    return readers[fmt](path, source)


def _count_rows(path: str, fmt: str) -> int | None:
    # Only where it is cheap: Parquet footers. CSV/JSONL totals would need a second full read.
    if fmt != "parquet":
        return None
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet", partitioning="hive").count_rows()


def replay(
    config: Mapping[str, Any],
    path: str,
    rate: float | None = None,
    limit: int | None = None,
    fmt: str | None = None,
    topic: str | None = None,
    progress: bool = False,
    producer: Any = None,
    source: str | None = "replay",
    stop: threading.Event | None = None,
    flush_timeout: float = 60.0,
) -> ReplaySummary:
    """Send the rows of ``path`` to ``topic`` (default ``tweets.raw``) at ``rate`` tweets/s.

    Parameters
    ----------
    config
        The sparktweet config (``kafka:`` section for the broker and producer settings).
    path
        CSV, JSON Lines or Parquet dump; ``fmt`` overrides the format taken from the extension.
    rate
        Tweets per second (token bucket); ``None`` sends as fast as the producer accepts them.
    limit
        Send at most this many records.
    progress
        Show a tqdm progress bar on stderr.
    producer
        A confluent-kafka producer to use (default: :func:`sparktweet.kafka_io.producer`).
    source
        The ``source`` written into each record (``None`` keeps the dump's own).
    stop
        When set (e.g. by a SIGTERM handler) the replay stops sending, flushes and reports.

    Returns
    -------
    ReplaySummary
        Counts of read, sent, delivered and failed records; a replay does not raise for bad rows
        or failed deliveries, it reports them.
    """
    from tqdm import tqdm

    if limit is not None and limit < 0:
        raise InputError(f"--limit must be >= 0, found {limit}.")
    fmt = fmt or detect_format(path)
    topic = topic or kafka_io.topic_name(config, "raw")
    summary = ReplaySummary(path=path, topic=topic)
    producer = producer or kafka_io.producer(config)
    bucket = TokenBucket(rate)
    partitions: Counter = Counter()
    lock = threading.Lock()

    def on_delivery(err: Any, msg: Any) -> None:
        with lock:
            if err is not None:
                summary.failed += 1
                summary.errors[err.str()] += 1
            else:
                summary.delivered += 1
                partitions[msg.partition()] += 1

    counted = _count_rows(path, fmt)
    total = counted if limit is None else (limit if counted is None else min(limit, counted))
    bar = tqdm(total=total, unit="tweet", disable=not progress, mininterval=0.5, desc=f"replay -> {topic}")
    start = time.monotonic()
    try:
        for record in read_dump(path, fmt, source):
            if limit is not None and summary.read >= limit:
                break
            if stop is not None and stop.is_set():
                summary.stopped = True
                break
            summary.read += 1
            summary.invalid += not record.valid
            bucket.acquire()
            while True:
                try:
                    producer.produce(topic, key=record.key, value=record.value, on_delivery=on_delivery)
                    summary.sent += 1
                    break
                except BufferError:
                    # Local queue full: serve delivery reports to make room, then retry.
                    producer.poll(0.1)
                except Exception as exc:  # noqa: BLE001 - e.g. a record above message.max.bytes
                    with lock:
                        summary.failed += 1
                        summary.errors[_produce_error(exc)] += 1
                    break
            producer.poll(0)
            bar.update(1)
        remaining = producer.flush(flush_timeout)
        if remaining:
            with lock:
                summary.failed += remaining
                summary.errors[f"not delivered within {flush_timeout:.0f}s (broker unreachable?)"] += remaining
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
    summary.partitions = dict(sorted(partitions.items()))
    log.info("%s", format_summary(summary))
    return summary


def _produce_error(exc: Exception) -> str:
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaException) and exc.args:
        return str(exc.args[0].str())
    return f"{type(exc).__name__}: {exc}"


def format_summary(summary: ReplaySummary) -> str:
    """The delivery report as a few readable lines."""
    lines = [
        f"replayed {summary.sent} records to {summary.topic} in {summary.seconds:.1f}s "
        f"({summary.records_per_second:.0f} records/s): {summary.delivered} delivered, {summary.failed} failed, "
        f"{summary.invalid} not valid tweet records (sent as they are)" + (" [stopped early]" if summary.stopped else "")
    ]
    if summary.partitions:
        lines.append("  partitions: " + ", ".join(f"{p}: {n}" for p, n in summary.partitions.items()))
    for reason, n in summary.errors.most_common(5):
        lines.append(f"  failed ({n}): {reason}")
    return "\n".join(lines)

"""Replay: dump readers, the token bucket, and replays into the session's real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparktweet.cli import SAMPLE, main
from sparktweet.errors import InputError
from sparktweet.kafka_io import consumer, decode_tweet, producer
from sparktweet.replay import TokenBucket, canonical_record, detect_format, read_dump, replay


def _consume(config, topic: str, count: int, timeout: float = 60.0) -> list:
    """The first ``count`` messages of ``topic`` for a fresh consumer group (from the earliest offset)."""
    found = []
    c = consumer(config, group_id=f"test-replay-{uuid.uuid4().hex}")
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                found.append(msg)
    finally:
        c.close()
    return found


@pytest.fixture
def topic(kafka_broker):
    """A fresh single-partition topic per test, so a test reads exactly what it sent, in order."""
    from sparktweet.kafka_io import TopicSpec, ensure_topics

    name = f"test.replay.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_broker, [TopicSpec(name, 1)])
    return name


# --- pure parts -------------------------------------------------------------------------------


def test_token_bucket_paces_to_the_rate_after_the_burst():
    bucket = TokenBucket(rate=500, burst=5)
    start = time.monotonic()
    for _ in range(105):
        bucket.acquire()
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 1.5, elapsed  # 100 tokens beyond the burst at 500/s = 0.2 s


def test_token_bucket_without_rate_never_waits_and_rejects_bad_rates():
    bucket = TokenBucket(rate=None)
    start = time.monotonic()
    for _ in range(10_000):
        bucket.acquire()
    assert time.monotonic() - start < 0.5
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(InputError, match="positive number"):
            TokenBucket(rate=bad)


def test_canonical_record_maps_tweets_csv_columns_and_keeps_only_canonical_fields():
    row = {
        "tweet_id": "570306133677760513", "airline_sentiment": "neutral", "name": "cairdin",
        "text": "@VirginAmerica What @dhepburn said.", "tweet_created": "2015-02-24 11:35:52 -0800",
        "tweet_location": "", "airline": "Virgin America",
    }
    assert canonical_record(row) == {
        "tweet_id": "570306133677760513",
        "text": "@VirginAmerica What @dhepburn said.",
        "author_username": "cairdin",
        "created_at": "2015-02-24 11:35:52 -0800",
        "mentions": ["VirginAmerica", "dhepburn"],
        "source": "replay",
    }
    # An explicit mentions list and source are kept when asked to.
    own = canonical_record({"tweet_id": "1", "text": "hi @a", "mentions": [], "source": "x-stream"}, source=None)
    assert own == {"tweet_id": "1", "text": "hi @a", "mentions": [], "source": "x-stream"}


def test_jsonl_dump_sends_bad_lines_as_they_are(tmp_path):
    path = tmp_path / "dump.jsonl"
    lines = [
        b'{"tweet_id": 570306133677760513, "text": "@united hi"}',
        b'{"tweet_id": "2", "text": "truncated',
        b"",
        b'{"tweet_id": "3"}',
        b"[1, 2]",
        b'{"tweet_id": "4", "text": "caf\xc3\xa9 @delta"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = list(read_dump(str(path)))
    assert [r.valid for r in records] == [True, False, False, False, True]
    assert records[0].key == b"570306133677760513"
    assert json.loads(records[0].value)["tweet_id"] == "570306133677760513"  # an int id becomes a string
    assert records[1] == type(records[1])(None, lines[1], False)  # not JSON: the line, byte for byte
    assert records[2].key == b"3" and json.loads(records[2].value) == {"tweet_id": "3", "source": "replay"}
    assert records[3].value == b"[1, 2]"
    assert decode_tweet(records[4].value)["mentions"] == ["delta"]


def test_csv_dump_with_invalid_utf8_and_empty_cells(tmp_path):
    path = tmp_path / "tweets.csv"
    path.write_bytes(
        b"tweet_id,name,text,tweet_created\n"
        b'1,ann,"@united my bag\nnever came",2015-02-24 11:35:52 -0800\n'
        b"2,bob,bad \xff byte,\n"
        b",carl,no id,\n"
    )
    records = list(read_dump(str(path)))
    assert [r.valid for r in records] == [True, True, False]
    first = decode_tweet(records[0].value)
    assert first["text"] == "@united my bag\nnever came" and first["author_username"] == "ann"
    second = decode_tweet(records[1].value)
    assert "\ufffd" in second["text"] and "created_at" not in second  # the stream job reports the bad byte
    assert records[2].key is None and json.loads(records[2].value)["text"] == "no id"


def test_parquet_dump_folder_is_read_with_hive_partitions(tmp_path):
    folder = tmp_path / "scored" / "date=2015-02-24"
    folder.mkdir(parents=True)
    table = pa.table({"tweet_id": ["7", "8"], "text": ["@jetblue ok", "thanks"], "sentiment": ["neutral", "positive"]})
    pq.write_table(table, folder / "part-0.parquet")
    assert detect_format(str(tmp_path / "scored")) == "parquet"
    records = [decode_tweet(r.value) for r in read_dump(str(tmp_path / "scored"))]
    assert records == [
        {"tweet_id": "7", "text": "@jetblue ok", "mentions": ["jetblue"], "source": "replay"},
        {"tweet_id": "8", "text": "thanks", "source": "replay"},
    ]


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="Cannot tell the format"):
        detect_format(str(tmp_path / "tweets.txt"))
    with pytest.raises(InputError, match="does not exist"):
        read_dump(str(tmp_path / "missing.jsonl"))


# --- against the broker -----------------------------------------------------------------------


@pytest.mark.kafka
def test_replay_sample_keeps_bad_rows_and_reports_delivery(kafka_broker, topic):
    summary = replay(kafka_broker, SAMPLE, topic=topic)
    with open(SAMPLE, encoding="utf-8") as fh:
        n_lines = sum(1 for line in fh if line.strip())
    assert (summary.read, summary.sent, summary.delivered, summary.failed) == (n_lines, n_lines, n_lines, 0)
    assert summary.invalid == 2 and summary.partitions == {0: n_lines}
    messages = _consume(kafka_broker, topic, n_lines)
    assert len(messages) == n_lines
    sent = list(read_dump(SAMPLE))
    assert [(m.key(), m.value()) for m in messages] == [(r.key, r.value) for r in sent]
    truncated = [m for m in messages if m.key() is None]
    assert truncated and truncated[0].value().startswith(b'{"tweet_id": "1861000000000001003", "text": "truncated')


@pytest.mark.kafka
def test_replay_paces_limits_and_stops(kafka_broker, topic, shared_data):
    start = time.monotonic()
    summary = replay(kafka_broker, str(shared_data / "Tweets.csv"), rate=200, limit=60, topic=topic)
    elapsed = time.monotonic() - start
    assert (summary.sent, summary.delivered, summary.invalid) == (60, 60, 0)
    assert elapsed >= 0.25, elapsed  # 60 records at 200/s after a 10-record burst
    first = decode_tweet(_consume(kafka_broker, topic, 1)[0].value())
    assert first["tweet_id"] == "570306133677760513" and first["created_at"] == "2015-02-24 11:35:52 -0800"

    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    stopped = replay(kafka_broker, SAMPLE, rate=20, topic=topic, stop=stop)  # 40 records: 2 s
    assert stopped.stopped and stopped.sent < 40 and stopped.delivered == stopped.sent


@pytest.mark.kafka
def test_replay_counts_a_record_the_producer_refuses_and_goes_on(kafka_broker, topic, tmp_path):
    path = tmp_path / "big.jsonl"
    big = json.dumps({"tweet_id": "10", "text": "x" * 50_000})
    path.write_text("\n".join([json.dumps({"tweet_id": "9", "text": "a"}), big, json.dumps({"tweet_id": "11", "text": "b"})]) + "\n")
    small = producer(kafka_broker, message_max_bytes=20_000)
    summary = replay(kafka_broker, str(path), topic=topic, producer=small)
    assert (summary.sent, summary.delivered, summary.failed) == (2, 2, 1)
    assert any("too large" in reason.lower() for reason in summary.errors), summary.errors


@pytest.mark.kafka
def test_cli_replay_prints_the_delivery_report(kafka_broker, topic, capsys):
    code = main(["replay", SAMPLE, "--limit", "5", "--topic", topic, "--no-progress",
                 "--set", f"kafka.bootstrap_servers={kafka_broker['kafka']['bootstrap_servers']}"])
    assert code == 0
    assert f"replayed 5 records to {topic}" in capsys.readouterr().out

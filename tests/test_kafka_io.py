"""confluent-kafka helpers against the session's real broker, and Spark reading Kafka with jars/."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from chispa import assert_df_equality

from sparktweet.config import load_config
from sparktweet.errors import ConfigError, InputError
from sparktweet.kafka_io import (
    TopicSpec,
    admin,
    consumer,
    consumer_config,
    decode_tweet,
    encode_tweet,
    ensure_topics,
    list_topics,
    producer,
    producer_config,
    send_tweets,
    topic_name,
    topic_specs,
    tweet_key,
)


def _tweets(n: int, prefix: str | None = None) -> list[dict]:
    base = prefix or uuid.uuid4().hex[:8]
    return [
        {
            "tweet_id": f"{base}{i:04d}",
            "text": f"@united my bag {i} never arrived in Denver ✈",
            "author_id": "42",
            "author_username": "jnardino",
            "created_at": "2015-02-24T11:35:52-08:00",
            "mentions": ["united"],
            "source": "replay",
        }
        for i in range(n)
    ]


def _consume(
    config, topic: str, ids: set[str], group_id: str, timeout: float = 30.0, expect: int | None = None
) -> list:
    """Messages of ``topic`` whose key is one of ``ids``, from the earliest offset; commits them.

    Stops once every key was seen (and, with ``expect``, that many messages arrived), or at
    ``timeout``.
    """
    found = []
    c = consumer(config, group_id=group_id)

    def done() -> bool:
        return len({m.key() for m in found}) >= len(ids) and len(found) >= (expect or 0)

    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key().decode() in ids:
                found.append(msg)
                c.commit(message=msg, asynchronous=False)
    finally:
        c.close()
    return found


# --- records --------------------------------------------------------------------------------


def test_encode_decode_round_trip_keeps_ids_as_strings_and_unicode():
    record = {
        "tweet_id": 570306133677760513,  # above 2**53: a float would have lost digits
        "text": "@united where is my bag? 😡",
        "in_reply_to_tweet_id": 570306133677760000,
        "created_at": dt.datetime(2015, 2, 24, 11, 35, 52, tzinfo=dt.UTC),
        "mentions": ["united"],
    }
    value = encode_tweet(record)
    assert "😡".encode() in value, "JSON must be UTF-8, not \\u escapes"
    assert decode_tweet(value) == {
        "tweet_id": "570306133677760513",
        "text": "@united where is my bag? 😡",
        "in_reply_to_tweet_id": "570306133677760000",
        "created_at": "2015-02-24T11:35:52+00:00",
        "mentions": ["united"],
    }
    assert tweet_key(record) == b"570306133677760513"
    assert decode_tweet(b'{"tweet_id": "1", "text": "hi", "in_reply_to_tweet_id": ""}')["in_reply_to_tweet_id"] is None


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"text": "no id"}', "no 'tweet_id'"),
        (b'{"tweet_id": 5.703061336777605e17, "text": "float id"}', "must be a string"),
        (b'{"tweet_id": "1"}', "needs a string 'text'"),
        (None, "no value"),
    ],
)
def test_decode_rejects_bad_records_with_a_reason(value, reason):
    with pytest.raises(InputError, match=reason):
        decode_tweet(value)


def test_client_configs_are_idempotent_and_manually_committed():
    config = load_config(overrides=["kafka.bootstrap_servers=127.0.0.1:19092", "kafka.producer.linger.ms=5"])
    p = producer_config(config, batch_num_messages=100)
    assert p["bootstrap.servers"] == "127.0.0.1:19092"
    assert (p["enable.idempotence"], p["acks"], p["partitioner"]) == (True, "all", "murmur2_random")
    assert (p["linger.ms"], p["batch.num.messages"], p["compression.type"]) == (5, 100, "lz4")

    callback = lambda err: None
    c = consumer_config(config, "dispatcher", error_cb=callback)
    assert (c["group.id"], c["enable.auto.commit"], c["auto.offset.reset"]) == ("dispatcher", False, "earliest")
    assert c["error_cb"] is callback, "confluent-kafka's own keys keep their underscores"
    with pytest.raises(ConfigError, match="group_id"):
        consumer_config(config, "")


def test_topic_specs_follow_the_config():
    config = load_config(overrides=["kafka.topics.raw=acme.raw", "kafka.topic_settings.raw.partitions=8"])
    specs = {s.name: s for s in topic_specs(config)}
    assert set(specs) == {"acme.raw", "replies.outbox", "tweets.deadletter"}
    assert specs["acme.raw"].partitions == 8
    assert specs["tweets.deadletter"] == TopicSpec(
        "tweets.deadletter", 1, {"cleanup.policy": "delete", "retention.ms": "2592000000"}
    )
    assert topic_name(config, "raw") == "acme.raw"
    with pytest.raises(ConfigError, match="kafka.topics has no entry 'inbox'"):
        topic_name(config, "inbox")
    with pytest.raises(ConfigError, match="unknown keys"):
        topic_specs(load_config(overrides=["kafka.topic_settings.raw.partitons=2"]))


# --- against the real broker ------------------------------------------------------------------


@pytest.mark.kafka
def test_project_topics_exist_with_partitions_and_retention(kafka_broker):
    from confluent_kafka.admin import ConfigResource, ResourceType

    topics = list_topics(kafka_broker)
    assert {n: topics[n] for n in ("tweets.raw", "replies.outbox", "tweets.deadletter")} == {
        "tweets.raw": 4,
        "replies.outbox": 4,
        "tweets.deadletter": 1,
    }
    client = admin(kafka_broker)  # must outlive the future, or librdkafka cancels the request
    futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, "tweets.deadletter")])
    entries = next(iter(futures.values())).result()
    assert entries["retention.ms"].value == "2592000000"


@pytest.mark.kafka
def test_ensure_topics_is_idempotent_and_grows_partitions(kafka_broker):
    name = f"test.grow.{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka_broker, [TopicSpec(name, 1, {"retention.ms": "60000"})]) == {name: 1}
    assert ensure_topics(kafka_broker, [TopicSpec(name, 1, {"retention.ms": "60000"})]) == {name: 1}
    assert ensure_topics(kafka_broker, [TopicSpec(name, 3, {"retention.ms": "120000"})]) == {name: 3}
    assert list_topics(kafka_broker)[name] == 3


@pytest.mark.kafka
def test_produce_consume_round_trip_keyed_by_tweet_id(kafka_broker):
    topic = topic_name(kafka_broker, "raw")
    records = _tweets(6)
    # A second version of the first tweet must land in the same partition as the first.
    again = {**records[0], "text": "@united found it, thanks"}
    assert send_tweets(producer(kafka_broker), topic, [*records, again]) == 7

    group = f"test-{uuid.uuid4().hex}"
    ids = {r["tweet_id"] for r in records}
    # Both versions of the first tweet must arrive: stopping at the sixth distinct key could
    # leave the second version, later in the same partition, unread.
    messages = _consume(kafka_broker, topic, ids, group, expect=7)
    by_id: dict[str, list] = {}
    for msg in messages:
        by_id.setdefault(msg.key().decode(), []).append(msg)
    assert set(by_id) == ids
    assert [decode_tweet(m.value()) for m in by_id[records[0]["tweet_id"]]] == [records[0], again]
    assert len({m.partition() for m in by_id[records[0]["tweet_id"]]}) == 1
    assert {rid: decode_tweet(ms[0].value()) for rid, ms in by_id.items()} == {r["tweet_id"]: r for r in records}

    # Manual commits were made: the same group starts after them and sees none of these again.
    assert _consume(kafka_broker, topic, ids, group, timeout=3.0) == []


@pytest.mark.kafka
def test_send_tweets_rejects_a_bad_record_before_producing_it(kafka_broker):
    with pytest.raises(InputError, match="tweet_id"):
        send_tweets(producer(kafka_broker), topic_name(kafka_broker, "raw"), [{"text": "no id"}])


@pytest.mark.kafka
def test_spark_reads_kafka_with_the_copied_jars_and_partitions_like_python(spark, kafka_broker):
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, StringType, StructField, StructType

    topic = f"test.spark.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_broker, [TopicSpec(topic, 3)])
    records = _tweets(4)
    send_tweets(producer(kafka_broker), topic, records)
    bootstrap = kafka_broker["kafka"]["bootstrap_servers"]

    def read():
        return (
            spark.read.format("kafka")
            .option("kafka.bootstrap.servers", bootstrap)
            .option("subscribe", topic)
            .option("startingOffsets", "earliest")
            .load()
        )

    schema = StructType(
        [
            StructField("tweet_id", StringType()),
            StructField("text", StringType()),
            StructField("mentions", ArrayType(StringType())),
        ]
    )
    actual = (
        read()
        .select(F.col("key").cast("string").alias("key"), F.from_json(F.col("value").cast("string"), schema).alias("t"))
        .select("key", "t.tweet_id", "t.text", "t.mentions")
    )
    expected = spark.createDataFrame(
        [(r["tweet_id"], r["tweet_id"], r["text"], r["mentions"]) for r in records],
        "key string, tweet_id string, text string, mentions array<string>",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)

    # Spark's sink (Java client, murmur2) must put a key where the Python producer put it.
    expected.select("key", F.col("text").alias("value")).write.format("kafka").option(
        "kafka.bootstrap.servers", bootstrap
    ).option("topic", topic).save()
    partitions = (
        read()
        .groupBy(F.col("key").cast("string").alias("key"))
        .agg(F.countDistinct("partition").alias("n"), F.count("*").alias("rows"))
    )
    assert sorted(tuple(r) for r in partitions.collect()) == sorted((r["tweet_id"], 1, 2) for r in records)

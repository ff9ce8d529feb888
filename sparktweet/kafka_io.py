"""Small confluent-kafka helpers shared by ingest, replay and the reply dispatcher (no pyspark).

Clients are built from the ``kafka:`` config section: ``bootstrap_servers``, then the
``client`` settings (all clients), then ``producer`` / ``consumer`` settings, then keyword
overrides. Keys are librdkafka property names; Python keywords may use ``_`` for ``.``
(``linger_ms=5``) and nested mappings are flattened, so ``--set kafka.producer.linger.ms=5``
works as well.

Producers are idempotent with ``acks=all``: a retried send never duplicates a record within a
producer session. Consumers never auto-commit: the caller commits after it has acted on a record,
so a crash replays instead of losing (every consumer is idempotent on ``tweet_id``).

Examples
--------
>>> from sparktweet.config import load_config
>>> cfg = load_config()
>>> producer_config(cfg)["enable.idempotence"]
True
>>> decode_tweet(encode_tweet({"tweet_id": 570306133677760513, "text": "@united hi"}))
{'tweet_id': '570306133677760513', 'text': '@united hi'}
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sparktweet.config import get
from sparktweet.errors import ConfigError, InputError, SparkTweetError

log = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: Fields of the canonical tweet record (DESIGN.md); other fields are passed through untouched.
TWEET_FIELDS = (
    "tweet_id",
    "text",
    "author_id",
    "author_username",
    "created_at",
    "in_reply_to_tweet_id",
    "lang",
    "mentions",
    "source",
)
_DEFAULT_TOPICS = {"raw": "tweets.raw", "outbox": "replies.outbox", "deadletter": "tweets.deadletter"}
# confluent-kafka's own (non-librdkafka) settings contain underscores and must keep them.
_PYTHON_KEYS = {"error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_delivery", "on_commit", "logger"}


class KafkaError(SparkTweetError):
    """A Kafka admin call, produce or delivery failed."""


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is created: name, partition count and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def _flatten(settings: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _librdkafka_keys(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {(k if k in _PYTHON_KEYS else k.replace("_", ".")): v for k, v in overrides.items()}


def bootstrap_servers(config: Mapping[str, Any]) -> str:
    """The broker list from ``kafka.bootstrap_servers`` (default ``127.0.0.1:9092``)."""
    return str(get(config, "kafka.bootstrap_servers", DEFAULT_BOOTSTRAP))


def topic_name(config: Mapping[str, Any], logical: str) -> str:
    """The real topic name for a logical one (``raw``, ``outbox``, ``deadletter``)."""
    names = {**_DEFAULT_TOPICS, **(get(config, "kafka.topics", {}) or {})}
    if logical not in names:
        raise ConfigError(f"kafka.topics has no entry {logical!r}; expected one of {sorted(names)}.")
    return str(names[logical])


def topic_specs(config: Mapping[str, Any]) -> list[TopicSpec]:
    """The project's topics with partitions and retention from ``kafka.topic_settings``."""
    names = {**_DEFAULT_TOPICS, **(get(config, "kafka.topics", {}) or {})}
    settings = get(config, "kafka.topic_settings", {}) or {}
    specs = []
    for logical, name in names.items():
        entry = dict(settings.get(logical) or {})
        partitions = int(entry.pop("partitions", 1))
        if partitions < 1:
            raise ConfigError(f"kafka.topic_settings.{logical}.partitions must be >= 1, found {partitions}.")
        configs = {"cleanup.policy": "delete"}
        if "retention_ms" in entry:
            configs["retention.ms"] = str(int(entry.pop("retention_ms")))
        if "retention_bytes" in entry:
            configs["retention.bytes"] = str(int(entry.pop("retention_bytes")))
        configs.update({k: str(v) for k, v in _flatten(entry.pop("configs", {})).items()})
        if entry:
            raise ConfigError(
                f"kafka.topic_settings.{logical} has unknown keys {sorted(entry)}; "
                "expected partitions, retention_ms, retention_bytes, configs."
            )
        specs.append(TopicSpec(str(name), partitions, configs))
    return specs


def _base_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap_servers(config), **_flatten(get(config, "kafka.client", {}))}


def producer_config(config: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """librdkafka settings of :func:`producer`: idempotent, ``acks=all``, batched and compressed."""
    return {
        **_base_config(config),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        # The Java client's partitioner (Spark's Kafka sink uses it): a tweet_id key lands in the
        # same partition whether Python or Spark wrote it. librdkafka's default hashes with CRC32.
        "partitioner": "murmur2_random",
        **_flatten(get(config, "kafka.producer", {})),
        **_librdkafka_keys(overrides),
    }


def consumer_config(config: Mapping[str, Any], group_id: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings of :func:`consumer`: manual commits, start at the earliest offset."""
    if not group_id:
        raise ConfigError("A Kafka consumer needs a non-empty group_id.")
    return {
        **_base_config(config),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **_flatten(get(config, "kafka.consumer", {})),
        **_librdkafka_keys(overrides),
    }


def producer(config: Mapping[str, Any], **overrides: Any):
    """An idempotent ``confluent_kafka.Producer`` for the configured brokers.

    Examples
    --------
    >>> p = producer(cfg, linger_ms=5)  # doctest: +SKIP
    >>> send_tweets(p, topic_name(cfg, "raw"), [{"tweet_id": "1", "text": "hi"}])  # doctest: +SKIP
    1
    """
    from confluent_kafka import Producer

    return Producer(producer_config(config, **overrides))


def consumer(config: Mapping[str, Any], group_id: str, **overrides: Any):
    """A ``confluent_kafka.Consumer`` in ``group_id`` that never commits on its own.

    Call ``consumer.commit(message=msg, asynchronous=False)`` once the record has been handled.
    """
    from confluent_kafka import Consumer

    return Consumer(consumer_config(config, group_id, **overrides))


def admin(config: Mapping[str, Any], **overrides: Any):
    """A ``confluent_kafka.admin.AdminClient`` for the configured brokers."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({**_base_config(config), **_librdkafka_keys(overrides)})


def list_topics(config: Mapping[str, Any], timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count of every topic on the broker (internal ones excluded)."""
    metadata = admin(config).list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if not name.startswith("__")}


def ensure_topics(
    config: Mapping[str, Any], specs: Iterable[TopicSpec] | None = None, timeout: float = 30.0
) -> dict[str, int]:
    """Create the project's topics (or ``specs``) if missing; idempotent.

    Existing topics get the configured topic configs (retention) applied, and more partitions
    when the config asks for more; Kafka cannot shrink a topic, so fewer is only logged.
    Returns topic name -> partition count.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        ResourceType,
    )

    specs = list(topic_specs(config) if specs is None else specs)
    client = admin(config)
    existing = {name: len(t.partitions) for name, t in client.list_topics(timeout=timeout).topics.items()}

    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = client.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.configs) for s in missing],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                log.info("created Kafka topic %s", name)
            except KafkaException as exc:
                # A concurrent ensure_topics may have won the race; that is success.
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise KafkaError(f"Could not create Kafka topic {name}: {exc.args[0].str()}") from exc

    present = [s for s in specs if s.name in existing]
    grow = [s for s in present if s.partitions > existing[s.name]]
    for s in present:
        if s.partitions < existing[s.name]:
            log.warning(
                "topic %s has %d partitions, config asks for %d; Kafka cannot remove partitions",
                s.name,
                existing[s.name],
                s.partitions,
            )
    if grow:
        for name, fut in client.create_partitions(
            [NewPartitions(s.name, s.partitions) for s in grow], request_timeout=timeout
        ).items():
            try:
                fut.result()
            except KafkaException as exc:
                raise KafkaError(f"Could not add partitions to Kafka topic {name}: {exc.args[0].str()}") from exc
    altered = [s for s in present if s.configs]
    if altered:
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                s.name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in s.configs.items()
                ],
            )
            for s in altered
        ]
        for resource, fut in client.incremental_alter_configs(resources, request_timeout=timeout).items():
            try:
                fut.result()
            except KafkaException as exc:
                raise KafkaError(f"Could not set configs of Kafka topic {resource.name}: {exc.args[0].str()}") from exc

    topics = {name: n for name, n in client.list_topics(timeout=timeout).topics.items()}
    return {s.name: len(topics[s.name].partitions) for s in specs if s.name in topics}


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _normalise_id(record: Mapping[str, Any], key: str, required: bool) -> Any:
    value = record.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise InputError(f"Tweet record has no {key!r}; expected a string id, found {sorted(record)}.")
        return None
    # bool is an int subclass; float ids have already lost digits above 2**53.
    if isinstance(value, (bool, float)):
        raise InputError(f"Tweet record {key!r} must be a string (X ids exceed 2^53), found {value!r}.")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not value:
        raise InputError(f"Tweet record {key!r} must be a non-empty string, found {value!r}.")
    return value


def _check_tweet(record: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise InputError(f"A tweet record must be a JSON object, found {type(record).__name__}.")
    out = dict(record)
    out["tweet_id"] = _normalise_id(record, "tweet_id", required=True)
    if "in_reply_to_tweet_id" in out:
        out["in_reply_to_tweet_id"] = _normalise_id(record, "in_reply_to_tweet_id", required=False)
    if not isinstance(out.get("text"), str):
        raise InputError(f"Tweet {out['tweet_id']} needs a string 'text', found {out.get('text')!r}.")
    return out


def encode_tweet(record: Mapping[str, Any]) -> bytes:
    """Serialise a canonical tweet record to compact UTF-8 JSON (the Kafka value).

    ``tweet_id`` and ``in_reply_to_tweet_id`` are written as strings; datetimes as ISO-8601.
    Raises :class:`~sparktweet.errors.InputError` when ``tweet_id`` or ``text`` is missing.
    """
    checked = _check_tweet(record)
    return json.dumps(checked, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode("utf-8")


def tweet_key(record: Mapping[str, Any]) -> bytes:
    """The Kafka key of a tweet record: its ``tweet_id`` as UTF-8 bytes."""
    return _normalise_id(record, "tweet_id", required=True).encode("utf-8")


def decode_tweet(value: bytes | str) -> dict[str, Any]:
    """Parse a Kafka value back into a tweet record; :class:`InputError` says why it is bad."""
    if value is None:
        raise InputError("Kafka record has no value; expected a JSON tweet record.")
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"Kafka value is not UTF-8 JSON: {exc}") from exc
    return _check_tweet(record)


def send_tweets(producer: Any, topic: str, records: Iterable[Mapping[str, Any]], flush_timeout: float = 30.0) -> int:
    """Produce tweet records keyed by ``tweet_id``, wait for delivery, return how many were sent.

    Raises :class:`KafkaError` if any record was not acknowledged by the broker.
    """
    checked = (_check_tweet(record) for record in records)
    return send_records(producer, topic, ((tweet_key(c), encode_tweet(c)) for c in checked), flush_timeout)


def send_records(producer: Any, topic: str, records: Iterable[tuple[bytes | None, bytes]], flush_timeout: float = 30.0) -> int:
    """Produce (key, value) pairs to ``topic``, wait for delivery, return how many were sent.

    Raises :class:`KafkaError` if any record was not acknowledged by the broker within ``flush_timeout``.
    """
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r}: {err.str()}")

    sent = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                producer.poll(0.5)
        producer.poll(0)
        sent += 1
    remaining = producer.flush(flush_timeout)
    if remaining:
        raise KafkaError(f"{remaining} of {sent} records to {topic} were not delivered within {flush_timeout}s.")
    if failures:
        raise KafkaError(f"{len(failures)} of {sent} records to {topic} failed: {'; '.join(failures[:5])}")
    return sent

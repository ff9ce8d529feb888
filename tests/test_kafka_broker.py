"""The local Kafka broker: a real KRaft JVM started, restarted and stopped by sparktweet.kafka_broker."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from pathlib import Path

import pytest

from sparktweet import kafka_broker as broker
from sparktweet.config import PROJECT_ROOT, load_config
from sparktweet.errors import ConfigError
from sparktweet.kafka_io import consumer, decode_tweet, producer, send_tweets

pytestmark = pytest.mark.kafka

EXPECTED_TOPICS = {"tweets.raw": 4, "replies.outbox": 4, "tweets.deadletter": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _overrides(data_dir: Path, port: int, controller_port: int, **extra: str) -> list[str]:
    items = {
        "kafka.bootstrap_servers": f"127.0.0.1:{port}",
        "kafka.controller_port": str(controller_port),
        "kafka.data_dir": str(data_dir),
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture
def own_broker(tmp_path):
    """Overrides for a broker of this test only (free ports, tmp data dir), stopped afterwards."""
    port = _free_port()
    controller_port = _free_port()
    while controller_port == port:
        controller_port = _free_port()
    overrides = _overrides(tmp_path / "kafka", port, controller_port)
    yield overrides
    broker.stop(load_config(overrides=overrides))


def _consume(config, topic: str, ids: set[str], timeout: float = 30.0) -> dict[str, tuple[int, dict]]:
    """tweet_id -> (partition, record) for the wanted ids, read from the start of ``topic``."""
    found: dict[str, tuple[int, dict]] = {}
    c = consumer(config, group_id=f"test-{uuid.uuid4().hex}")
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while ids - found.keys() and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            record = decode_tweet(msg.value())
            assert msg.key().decode() == record["tweet_id"]
            if record["tweet_id"] in ids:
                found[record["tweet_id"]] = (msg.partition(), record)
    finally:
        c.close()
    return found


def test_start_status_stop_and_restart_keeps_data(own_broker):
    config = load_config(overrides=own_broker)
    settings = broker.settings(config)

    before = broker.status(config)
    assert (before.running, before.reachable, before.pid) == (False, False, None)
    assert broker.main(["status", *[a for o in own_broker for a in ("--set", o)]]) == 3

    began = time.monotonic()
    started = broker.start(config)
    start_seconds = time.monotonic() - began
    assert started.running and started.reachable and started.pid
    assert started.topics == EXPECTED_TOPICS
    assert settings.pid_file.read_text().strip() == str(started.pid)
    assert "process.roles=broker,controller" in settings.properties_file.read_text()
    assert settings.server_log.exists(), "log4j2 should write the broker log under data_dir/logs"
    assert start_seconds < settings.start_timeout

    assert broker.start(config).pid == started.pid, "start on a running broker must be a no-op"
    assert broker.main(["status", *[a for o in own_broker for a in ("--set", o)]]) == 0

    records = [
        {"tweet_id": str(570306133677760513 + i), "text": f"@united bag {i} never arrived", "source": "replay"}
        for i in range(3)
    ]
    assert send_tweets(producer(config), "tweets.raw", records) == 3

    restarted = broker.restart(config)
    assert restarted.running and restarted.pid != started.pid
    assert restarted.topics == EXPECTED_TOPICS
    found = _consume(config, "tweets.raw", {r["tweet_id"] for r in records})
    assert [found[r["tweet_id"]][1] for r in records] == records, "records must survive a restart"

    assert broker.stop(config) is True
    after = broker.status(config)
    assert (after.running, after.reachable) == (False, False)
    assert not settings.pid_file.exists()
    assert broker.stop(config) is False


def test_broker_that_dies_at_start_fails_with_its_log_tail(own_broker):
    # StorageTool accepts any authorizer name; the broker loads the class at start and exits.
    config = load_config(overrides=[*own_broker, "kafka.server_properties={authorizer.class.name: no.such.Authorizer}"])
    with pytest.raises(broker.KafkaBrokerError) as info:
        broker.start(config)
    message = str(info.value)
    assert "exited" in message
    assert "no.such.Authorizer" in message, "the error must carry the broker's log tail"
    assert not broker.status(config).running
    assert not broker.settings(config).pid_file.exists()


def test_start_refuses_a_port_that_is_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = load_config(overrides=_overrides(tmp_path, port, _free_port()))
        with pytest.raises(broker.KafkaBrokerError, match=f"127.0.0.1:{port} is already in use"):
            broker.start(config)


def test_start_without_broker_jars_says_how_to_fetch_them(tmp_path):
    config = load_config(overrides=[*_overrides(tmp_path, _free_port(), _free_port()), f"kafka.libs_dir={tmp_path}"])
    with pytest.raises(broker.KafkaBrokerError, match="scripts/fetch_jars.sh"):
        broker.start(config)


def test_random_cluster_ids_never_start_with_a_dash():
    # One plain base64url id in 64 starts with "-", which the storage tool reads as an option
    # (a CI run failed on it); 3,000 draws would hit that about 47 times without the redraw.
    ids = [broker._random_cluster_id() for _ in range(3000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 and len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_configured_cluster_id_starting_with_a_dash_is_refused_clearly(tmp_path):
    config = load_config(overrides=[*_overrides(tmp_path, _free_port(), _free_port()), "kafka.cluster_id=-abcdefghijklmnopqrstu"])
    with pytest.raises(broker.KafkaBrokerError, match="starts with '-'"):
        broker.start(config)
    assert broker.status(config).running is False


def test_settings_defaults_and_validation():
    s = broker.settings(load_config())
    assert (s.host, s.port, s.controller_port) == ("127.0.0.1", 9092, 9093)
    assert s.data_dir == PROJECT_ROOT / "var" / "kafka"
    assert s.libs_dir == PROJECT_ROOT / "var" / "kafka" / "libs"
    assert s.auto_create_topics is False

    custom = broker.settings(
        load_config(overrides=["kafka.bootstrap_servers=localhost:19092", "kafka.server_properties.log.retention.ms=5"])
    )
    assert (custom.host, custom.port, custom.controller_port) == ("localhost", 19092, 19093)
    assert custom.server_properties == {"log.retention.ms": "5"}

    with pytest.raises(ConfigError, match="host:port"):
        broker.settings(load_config(overrides=["kafka.bootstrap_servers=localhost"]))
    with pytest.raises(ConfigError, match="must differ"):
        broker.settings(load_config(overrides=["kafka.bootstrap_servers=127.0.0.1:9092", "kafka.controller_port=9092"]))

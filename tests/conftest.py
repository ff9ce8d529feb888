from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SPARKTWEET_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    from sparktweet.session import build_session

    session = build_session(
        {"spark": {"master": "local[2]", "shuffle_partitions": 2, "arrow_batch_size": 512}},
        app_name="sparktweet-tests",
        **{"spark.ui.enabled": "false", "spark.default.parallelism": "2"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared dataset folder; CI has it beside the clone, so its absence is a failure."""
    if not (SHARED_DATA / "Tweets.csv").exists():
        pytest.fail(f"Tweets.csv not found under {SHARED_DATA}; set SPARKTWEET_SHARED_DATA to the shared/data folder.")
    return SHARED_DATA


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real single-node Kafka broker for the session; yields a sparktweet config pointing at it.

    The broker gets free ports and a data dir under pytest's tmp, so parallel sessions on one
    machine do not collide, and it is stopped at the end. ``SPARKTWEET_TEST_KAFKA=host:port``
    reuses an already running broker instead (not stopped). A broker that cannot start fails
    the tests that need it, with its log tail.
    """
    from sparktweet import kafka_broker as broker
    from sparktweet.config import load_config
    from sparktweet.kafka_io import ensure_topics

    config = load_config()
    external = os.environ.get("SPARKTWEET_TEST_KAFKA")
    if external:
        config["kafka"]["bootstrap_servers"] = external
        ensure_topics(config)
        yield config
        return
    port = _free_port()
    controller_port = _free_port()
    while controller_port == port:
        controller_port = _free_port()
    config["kafka"].update(
        bootstrap_servers=f"127.0.0.1:{port}",
        controller_port=controller_port,
        data_dir=str(tmp_path_factory.mktemp("kafka")),
    )
    try:
        broker.start(config)
    except Exception as exc:  # noqa: BLE001 - any failure to start is a test failure, with logs
        # KafkaBrokerError already carries the log tail; anything else gets it here.
        tail = "" if isinstance(exc, broker.KafkaBrokerError) else "\n" + broker.log_tail(config)
        broker.stop(config)
        pytest.fail(f"Kafka broker did not start: {exc}{tail}", pytrace=False)
    try:
        yield config
    finally:
        broker.stop(config)

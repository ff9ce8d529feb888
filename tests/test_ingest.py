"""Ingest: rules, payload mapping, and tweepy's real HTTP code against a local fake X stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import tweepy
from fake_x_stream import FakeXStream, tweet_payload, wait_for

from sparktweet.config import load_config
from sparktweet.errors import ConfigError, InputError
from sparktweet.ingest import Ingestor, build_rules, sync_rules, tweet_record
from sparktweet.kafka_io import consumer, decode_tweet, topic_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "test-bearer-token"


def _collect(config, topic: str, keys: set[bytes], timeout: float = 30.0) -> dict[bytes, bytes]:
    """Key -> value of the messages of ``topic`` whose key is in ``keys``."""
    found: dict[bytes, bytes] = {}
    c = consumer(config, group_id=f"test-ingest-{uuid.uuid4().hex}")
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(found) < len(keys) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() in keys:
                found[msg.key()] = msg.value()
    finally:
        c.close()
    return found


def _config(kafka_broker, fake: FakeXStream, *overrides: str) -> dict:
    return load_config(overrides=[
        f"kafka.bootstrap_servers={kafka_broker['kafka']['bootstrap_servers']}",
        f"x.api_base={fake.url}",
        "brand.handles=[united, delta]",
        *overrides,
    ])


# --- pure parts -------------------------------------------------------------------------------


def test_rules_pack_handles_and_keywords_under_the_length_limit():
    handles_only = build_rules(load_config(overrides=["brand.handles=[united, '@Delta', jetblue]", "ingest.max_rule_length=40"]))
    assert [r.value for r in handles_only] == ["(@united OR @Delta) -is:retweet", "(@jetblue) -is:retweet"]
    config = load_config(overrides=[
        "brand.handles=[united, Delta]", "ingest.keywords=[lost bag, refund, delayed flight]", "ingest.max_rule_length=70",
        "ingest.rules=['from:someone']",
    ])
    rules = build_rules(config)
    assert [r.value for r in rules] == [
        "(@united OR @Delta) -is:retweet",
        '("lost bag" OR refund) (united OR Delta) -is:retweet',
        '("delayed flight") (united OR Delta) -is:retweet',
        "from:someone",
    ]
    assert [r.tag for r in rules] == [f"sparktweet:{i}" for i in range(1, 5)]
    assert all(len(r.value) <= 70 for r in rules)


def test_rules_need_handles_and_fitting_terms():
    with pytest.raises(ConfigError, match="brand.handles"):
        build_rules(load_config(overrides=["brand.handles=[]"]))
    with pytest.raises(ConfigError, match="longer than ingest.max_rule_length"):
        build_rules(load_config(overrides=["brand.handles=[averyveryverylonghandle]", "ingest.max_rule_length=20"]))


def test_tweet_record_maps_a_stream_payload():
    payload = tweet_payload("1861000000000000123", "@united @delta my bag", username="ana", author_id="77",
                            referenced_tweets=[{"type": "quoted", "id": "5"}, {"type": "replied_to", "id": "1861000000000000001"}],
                            note_tweet={"text": "@united @delta my bag (the long version)"})
    assert tweet_record(payload) == {
        "tweet_id": "1861000000000000123",
        "text": "@united @delta my bag (the long version)",
        "author_id": "77",
        "author_username": "ana",
        "created_at": "2026-11-25T10:00:00.000Z",
        "lang": "en",
        "in_reply_to_tweet_id": "1861000000000000001",
        "mentions": ["united", "delta"],
        "source": "x-stream",
    }
    with pytest.raises(InputError, match="no tweet 'data'"):
        tweet_record({"errors": [{"title": "operational-disconnect"}]})
    with pytest.raises(InputError, match="tweet_id"):
        tweet_record({"data": {"text": "no id"}})


def test_missing_bearer_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="X_BEARER_TOKEN"):
        Ingestor(load_config(), producer=object())


# --- tweepy against the fake X API ------------------------------------------------------------


def test_sync_rules_adds_missing_deletes_stale_and_keeps_foreign_rules():
    existing = [
        {"id": "1", "value": "from:partner", "tag": "other-tool"},
        {"id": "2", "value": "(@oldhandle) -is:retweet", "tag": "sparktweet:1"},
        {"id": "3", "value": "(@united OR @delta) -is:retweet", "tag": "sparktweet:1"},
    ]
    with FakeXStream(bearer_token=TOKEN, rules=existing) as fake:
        config = load_config(overrides=[f"x.api_base={fake.url}", "brand.handles=[united, delta]", "ingest.keywords=[refund]"])
        ingestor = Ingestor(config, producer=object(), bearer_token=TOKEN)
        assert sync_rules(ingestor.stream, build_rules(config)) == (1, 1)
        assert sorted(r["value"] for r in fake.rules) == [
            "(@united OR @delta) -is:retweet", "(refund) (united OR delta) -is:retweet", "from:partner",
        ]
        assert sync_rules(ingestor.stream, build_rules(config)) == (0, 0)  # idempotent


def test_wrong_token_is_refused_by_the_api():
    with FakeXStream(bearer_token=TOKEN) as fake:
        config = load_config(overrides=[f"x.api_base={fake.url}"])
        ingestor = Ingestor(config, producer=object(), bearer_token="wrong")
        with pytest.raises(tweepy.Unauthorized):
            sync_rules(ingestor.stream, build_rules(config))
        assert fake.unauthorised == 1


@pytest.mark.kafka
def test_stream_survives_errors_and_drops_and_keeps_every_tweet(kafka_broker):
    base = 1862000000000000000 + int(uuid.uuid4().int % 10**12) * 1000
    ids = [str(base + i) for i in range(4)]
    marker = uuid.uuid4().hex
    script = [
        503,  # refused: tweepy backs off (5 s) and reconnects
        [
            tweet_payload(ids[0], "@united where is my bag?"),
            tweet_payload(ids[1], "@delta thanks!", username="bo"),
            f"not json {marker}".encode(),
            {"errors": [{"title": "operational-disconnect", "detail": marker}]},
            {"data": {"text": f"no id {marker}"}},
            "drop",  # the connection breaks mid-stream: tweepy reconnects at once
        ],
        [tweet_payload(ids[2], "@united flight UA 12 delayed"), tweet_payload(ids[3], "@delta seat 4A broken"), "hold"],
    ]
    with FakeXStream(bearer_token=TOKEN, connections=script) as fake:
        config = _config(kafka_broker, fake)
        ingestor = Ingestor(config, bearer_token=TOKEN)
        runner = threading.Thread(target=ingestor.run)
        runner.start()
        try:
            assert wait_for(lambda: ingestor.stats.produced == 4, timeout=60), ingestor.stats
        finally:
            began = time.monotonic()
            ingestor.stop()
            runner.join(timeout=30)
        assert not runner.is_alive() and time.monotonic() - began < 5, "stop must not wait for a keep-alive"
        assert fake.stream_connects == 3 and ingestor.stats.connects == 2
        assert ingestor.stats.stream_errors >= 2  # the 503 and the drop
        assert [r["value"] for r in fake.rules] == ["(@united OR @delta) -is:retweet"]
    stats = ingestor.stats
    assert (stats.received, stats.produced, stats.deadlettered, stats.delivered, stats.delivery_failures) == (7, 4, 2, 6, 0)

    raw = _collect(config, topic_name(config, "raw"), {i.encode() for i in ids})
    records = {k.decode(): decode_tweet(v) for k, v in raw.items()}
    assert set(records) == set(ids)
    assert records[ids[1]] == {
        "tweet_id": ids[1], "text": "@delta thanks!", "author_id": "42", "author_username": "bo",
        "created_at": "2026-11-25T10:00:00.000Z", "lang": "en", "mentions": ["delta"], "source": "x-stream",
    }
    dead = {}
    c = consumer(config, group_id=f"test-ingest-{uuid.uuid4().hex}")
    try:
        c.subscribe([topic_name(config, "deadletter")])
        deadline = time.monotonic() + 30
        while len(dead) < 2 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error() and marker.encode() in msg.value():
                value = json.loads(msg.value())
                dead[value["original"]] = value
    finally:
        c.close()
    assert set(dead) == {f"not json {marker}", json.dumps({"data": {"text": f"no id {marker}"}})}
    assert dead[f"not json {marker}"]["error"].startswith("stream payload is not UTF-8 JSON")
    assert "tweet_id" in dead[json.dumps({"data": {"text": f"no id {marker}"}})]["error"]
    assert all(v["stage"] == "ingest" and v["original_encoding"] == "utf-8" for v in dead.values())


@pytest.mark.kafka
def test_sigterm_stops_the_ingest_job_gracefully(kafka_broker):
    base = 1863000000000000000 + int(uuid.uuid4().int % 10**12) * 1000
    ids = [str(base + i) for i in range(3)]
    script = [[*(tweet_payload(i, f"@united tweet {i}") for i in ids), "hold"]]
    with FakeXStream(bearer_token=TOKEN, connections=script, keepalive_s=30) as fake:
        config = _config(kafka_broker, fake)
        env = {**os.environ, "X_BEARER_TOKEN": TOKEN, "PYTHONPATH": ROOT}
        cmd = [sys.executable, os.path.join(ROOT, "jobs", "ingest.py"),
               "--set", f"kafka.bootstrap_servers={config['kafka']['bootstrap_servers']}",
               "--set", f"x.api_base={fake.url}", "--set", "brand.handles=[united]"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            raw = _collect(config, topic_name(config, "raw"), {i.encode() for i in ids}, timeout=60)
            assert set(raw) == {i.encode() for i in ids}
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        # keepalive_s=30: returning at once proves the blocked read was shut down, not waited out.
        assert proc.returncode == 0, err[-2000:]
        assert time.monotonic() - began < 10
        assert "ingest: connects 1, received 3, produced 3, delivered 3, delivery_failures 0" in out

"""Reply dispatcher: outbox validation, modes, exactly-once posting under faults, pacing, Kafka.

tweepy's real HTTP code runs against tests/fake_x.py (a local server); nothing else is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from fake_x import FakeX

from sparktweet.dispatcher import (
    Dispatcher,
    DispatchSettings,
    OutboxError,
    safe_reply_text,
    validate_outbox_record,
)
from sparktweet.store import TicketStore
from sparktweet.ticket_ids import make_ticket_id
from sparktweet.xapi import XClient

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0
CREDS = {"X_CONSUMER_KEY": "ck", "X_CONSUMER_SECRET": "cs", "X_ACCESS_TOKEN": "at", "X_ACCESS_TOKEN_SECRET": "ats"}


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def outbox(i: int, *, mention: str = "united", **extra) -> dict:
    tweet_id = str(570306133677760000 + i)
    record = {
        "tweet_id": tweet_id,
        "text": f"@{mention} my bag {i} never arrived in Denver",
        "author_username": f"user{i}",
        "mentions": [mention],
        "created_at": "2015-02-24T10:00:00Z",
        "ticket_id": make_ticket_id(tweet_id, "BAG", "2015-02-24T10:00:00Z"),
        "reply_text": f"Sorry about your bag, user{i}. Ticket {make_ticket_id(tweet_id, 'BAG', '2015-02-24')}.",
        "category": "baggage",
        "sentiment": "negative",
        "sentiment_score": 0.9,
        "priority": "high",
        "entities": [{"text": "Denver", "label": "CITY", "start": 30, "end": 36}],
        "model_version": "test",
    }
    record.update(extra)
    return record


def encode(record: dict) -> bytes:
    return json.dumps(record).encode()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = TicketStore(f"sqlite:///{tmp_path / 'tickets.db'}", clock=clock)
    yield s
    s.close()


# Pacing tests inject no faults: a real timeout there would only mean a loaded CI machine.
LOADED_MACHINE_TIMEOUT = 10.0


def x_client(fake: FakeX, timeout: float = 0.25) -> XClient:
    return XClient.from_env(timeout=timeout, api_base=fake.url, env=CREDS)


def settings(mode: str = "live", **kw) -> DispatchSettings:
    return DispatchSettings(mode=mode, accounts=("united",), backoff_base_s=1.0, backoff_max_s=60.0, **kw)


def drive(dispatcher: Dispatcher, clock: FakeClock, max_steps: int = 20_000) -> int:
    """Call drain until the queue is empty, advancing the fake clock by each returned wait."""
    for step in range(max_steps):
        wait = dispatcher.drain()
        if wait is None:
            return step
        clock.advance(max(wait, 0.001))
    raise AssertionError("the queue never emptied")


# -- outbox records ---------------------------------------------------------------------------


def test_valid_record_is_normalised():
    r = validate_outbox_record(encode(outbox(1, ticket_id=outbox(1)["ticket_id"].lower())))
    assert r.ticket_id == outbox(1)["ticket_id"]
    assert r.entities == ({"text": "Denver", "label": "CITY", "start": 30, "end": 36},)


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON object"),
        (b"null", "JSON object"),
        (encode({**outbox(1), "tweet_id": 5.7e17}), "decimal string"),
        (encode({**outbox(1), "tweet_id": "12a"}), "decimal string"),
        (encode({**outbox(1), "text": None}), "'text' must be a string"),
        (encode({**outbox(1), "ticket_id": None}), "'ticket_id' must be a string"),
        (encode({**outbox(1), "ticket_id": outbox(1)["ticket_id"][:-1] + "Z"}), "check character"),
        (encode({**outbox(1), "ticket_id": outbox(2)["ticket_id"]}), "not derived from this tweet id"),
        (encode({**outbox(1), "sentiment": "angry"}), "'sentiment'"),
        (encode({**outbox(1), "sentiment_score": 3}), "'sentiment_score'"),
        (encode({**outbox(1), "priority": "urgent"}), "'priority'"),
        (encode({**outbox(1), "mentions": "united"}), "'mentions'"),
        (encode({**outbox(1), "entities": [{"text": "x"}]}), "each entity"),
        (encode({**outbox(1), "reply_text": 5}), "'reply_text'"),
    ],
)
def test_bad_records_are_refused_with_a_reason(value, reason):
    with pytest.raises(OutboxError, match=reason):
        validate_outbox_record(value)


def test_reply_text_never_mentions_anyone_but_the_author():
    text = safe_reply_text("Hi @User1, see @delta\u202e and\n\n@united\x00!", "user1")
    assert text == "Hi @User1, see \uff20delta and \uff20united!"


def test_bad_records_go_to_deadletter_and_never_crash(store):
    dead = []
    d = Dispatcher(store, settings("dry-run"), deadletter=lambda v, k, why: dead.append((v, k, why)))
    assert d.handle(b"not json", b"k1") == "deadletter"
    assert d.handle(None, b"k2") == "deadletter"
    first = outbox(1)
    assert d.handle(encode(first)) == "created"
    # Same ticket ID as tweet 1 but a different tweet: refused by the store's unique key.
    clash = {**outbox(2), "ticket_id": first["ticket_id"]}
    assert d.handle(encode(clash)) == "deadletter"
    assert [k for _, k, _ in dead] == [b"k1", b"k2", None]
    assert "not UTF-8 JSON" in dead[0][2] and "not derived" in dead[2][2]
    assert store.counters()["outbox_deadletter"] == 3


# -- modes ------------------------------------------------------------------------------------


def test_dry_run_writes_what_it_would_post_once_and_calls_nothing(store, tmp_path):
    path = tmp_path / "dry.jsonl"
    d = Dispatcher(store, settings("dry-run", dry_run_path=path))
    records = [outbox(1), outbox(2), outbox(3, mention="delta"), outbox(1), outbox(2)]
    assert [d.handle(encode(r)) for r in records] == ["created", "created", "created", "duplicate", "duplicate"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["in_reply_to_tweet_id"] for line in lines] == [outbox(1)["tweet_id"], outbox(2)["tweet_id"]]
    assert d.drain() is None
    third = store.get_by_tweet(outbox(3)["tweet_id"])
    assert third.reply_state == "skipped" and "does not mention" in third.reply_note
    assert store.queue_size() == 0


def test_approve_mode_posts_only_approved_replies(store, clock):
    with FakeX(clock=clock) as fake:
        d = Dispatcher(store, settings("approve"), x=x_client(fake))
        for i in range(3):
            d.handle(encode(outbox(i)))
        assert d.drain() is None and fake.posts == []
        store.approve_reply(outbox(1)["ticket_id"], actor="alice")
        drive(d, clock)
        assert [p["in_reply_to"] for p in fake.posts] == [outbox(1)["tweet_id"]]
        ticket = store.get(outbox(1)["ticket_id"])
        assert (ticket.reply_state, ticket.reply_tweet_id) == ("posted", fake.posts[0]["id"])
        assert store.get(outbox(0)["ticket_id"]).reply_state == "pending"


def test_live_mode_replies_only_to_tweets_that_mention_the_account(store, clock):
    with FakeX(clock=clock) as fake:
        d = Dispatcher(store, settings("live"), x=x_client(fake))
        d.handle(encode(outbox(1)))
        d.handle(encode(outbox(2, mention="delta")))
        d.handle(encode(outbox(3, reply_text="x" * 281)))
        d.handle(encode(outbox(4, reply_text="Thanks @delta for nothing, @user4")))
        drive(d, clock)
        posted = {p["in_reply_to"]: p["text"] for p in fake.posts}
        assert set(posted) == {outbox(1)["tweet_id"], outbox(4)["tweet_id"]}
        assert posted[outbox(4)["tweet_id"]] == "Thanks \uff20delta for nothing, @user4"
        assert "280" in store.get_by_tweet(outbox(3)["tweet_id"]).reply_note
        assert fake.unauthenticated == 0


def test_rate_limit_reset_header_is_honoured(store, clock):
    with FakeX(clock=clock, fault_rate=1.0, fault_kinds=("429",)) as fake:
        d = Dispatcher(store, settings("live"), x=x_client(fake))
        d.handle(encode(outbox(1)))
        wait = d.drain()
        # The fake sends x-rate-limit-reset = now + 5; the retry waits for it (+1 s margin).
        assert wait == pytest.approx(6, abs=1)
        fake.fault_rate = 0.0
        assert d.drain() == pytest.approx(wait, abs=0.01)  # not due yet: nothing sent
        assert fake.requests["POST tweets"] == 1
        clock.advance(wait)
        assert d.drain() is None
        assert len(fake.posts) == 1 and store.counters()["rate_limit_waits"] >= 1


# -- exactly once under faults ------------------------------------------------------------------


def test_thirty_percent_faults_still_post_every_reply_exactly_once(store, clock):
    n = 80
    with FakeX(clock=clock, fault_rate=0.3, delay_s=0.5, seed=11) as fake:
        d = Dispatcher(store, settings("live"), x=x_client(fake, timeout=0.2), rng=__import__("random").Random(3))
        # Duplicates in the outbox: every record twice, interleaved.
        for i in list(range(n)) + list(range(0, n, 2)) + list(range(1, n, 2)):
            d.handle(encode(outbox(i)))
        drive(d, clock)
        per_tweet = fake.replies_per_tweet()
        figures = {
            "tweets": n,
            "outbox_records": 2 * n,
            "posted": len(fake.posts),
            "max_per_tweet": max(per_tweet.values()),
            "faults": dict(fake.faults),
            "post_requests": fake.requests["POST tweets"],
            "retries": d.stats.get("retries", 0),
            "recovered_by_lookup": d.stats.get("replies_recovered", 0),
        }
        print("exactly-once figures:", json.dumps(figures))
        assert sorted(per_tweet) == sorted(outbox(i)["tweet_id"] for i in range(n))
        assert set(per_tweet.values()) == {1}
        assert fake.faults["timeout_after"] > 0 and fake.faults["429"] > 0 and fake.faults["500"] > 0
        assert d.stats["replies_recovered"] > 0  # posts X made while the client timed out
        tickets = store.list_tickets(limit=1000)
        assert {t.reply_state for t in tickets} == {"posted"}
        assert {t.reply_tweet_id for t in tickets} == {p["id"] for p in fake.posts}


def test_pacing_holds_100_per_15_minutes(store, clock):
    n = 250
    with FakeX(clock=clock) as fake:
        d = Dispatcher(store, settings("live"), x=x_client(fake, timeout=LOADED_MACHINE_TIMEOUT))
        for i in range(n):
            d.handle(encode(outbox(i)))
        drive(d, clock)
        times = sorted(p["at"] for p in fake.posts)
    assert len(times) == n and fake.budget_refusals == 0
    worst = max(sum(1 for u in times if t - 900 < u <= t) for t in times)
    assert worst == 100
    # 250 posts need three windows: the last 50 cannot go out before 2 x 15 min.
    assert 1800 <= times[-1] - times[0] < 1800 + 60
    assert store.counters()["rate_limit_waits"] == 2


def test_pacing_holds_the_daily_app_budget(store, clock):
    with FakeX(clock=clock, per_window=1000) as fake:
        d = Dispatcher(store, settings("live", per_window=1000, per_day=30), x=x_client(fake, timeout=LOADED_MACHINE_TIMEOUT))
        for i in range(40):
            d.handle(encode(outbox(i)))
        drive(d, clock)
        times = sorted(p["at"] for p in fake.posts)
    assert len(times) == 40
    assert times[29] - times[0] < 60 and times[30] - times[0] >= 86_400


def test_queue_survives_a_restart(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 't.db'}"
    with FakeX(clock=clock) as fake:
        first = Dispatcher(TicketStore(url, clock=clock), settings("live"), x=x_client(fake))
        for i in range(5):
            first.handle(encode(outbox(i)))
        assert first.drain(max_posts=2) == 0.0
        # A new process: new store object, new dispatcher, the same database.
        second = Dispatcher(TicketStore(url, clock=clock), settings("live"), x=x_client(fake))
        for i in range(5):
            assert second.handle(encode(outbox(i))) == "duplicate"
        drive(second, clock)
        assert sorted(fake.replies_per_tweet().values()) == [1] * 5


# -- real Kafka ---------------------------------------------------------------------------------


def _topic_config(kafka_broker: dict) -> dict:
    from copy import deepcopy

    from sparktweet.kafka_io import ensure_topics

    config = deepcopy(kafka_broker)
    suffix = uuid.uuid4().hex[:8]
    config["kafka"]["topics"] = {
        "raw": f"raw.{suffix}",
        "outbox": f"outbox.{suffix}",
        "deadletter": f"dead.{suffix}",
    }
    config["kafka"]["topic_settings"] = {
        "raw": {"partitions": 1},
        "outbox": {"partitions": 2},
        "deadletter": {"partitions": 1},
    }
    config["dispatch"] = {"group_id": f"dispatch-{suffix}", "accounts": ["united"], "poll_s": 0.2, "batch_size": 5}
    ensure_topics(config)
    return config


def _produce(config: dict, values: list[tuple[bytes, bytes | None]]) -> None:
    from sparktweet.kafka_io import producer, topic_name

    p = producer(config)
    for key, value in values:
        p.produce(topic_name(config, "outbox"), key=key, value=value)
    assert p.flush(30) == 0


def _read_all(config: dict, logical: str, expected: int, timeout: float = 30) -> list:
    from sparktweet.kafka_io import consumer, topic_name

    c = consumer(config, f"reader-{uuid.uuid4().hex[:6]}")
    c.subscribe([topic_name(config, logical)])
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(m for m in c.consume(10, timeout=0.5) if not m.error())
    c.close()
    return out


def _committed_lag(config: dict) -> int:
    from confluent_kafka import TopicPartition

    from sparktweet.kafka_io import consumer, topic_name

    c = consumer(config, config["dispatch"]["group_id"])
    topic = topic_name(config, "outbox")
    parts = [TopicPartition(topic, p) for p in range(2)]
    lag = 0
    for tp in c.committed(parts, timeout=10):
        _, high = c.get_watermark_offsets(tp, timeout=10)
        lag += high - max(tp.offset, 0)
    c.close()
    return lag


def _outbox_values(n: int) -> list[tuple[bytes, bytes | None]]:
    good = [(outbox(i)["tweet_id"].encode(), encode(outbox(i))) for i in range(n)]
    bad = [
        (b"bad-1", b"{not json"),
        (b"bad-2", encode({**outbox(900), "ticket_id": outbox(900)["ticket_id"][:-1] + "Z"})),
        (b"bad-3", None),
    ]
    # Every good record twice (Spark's at-least-once writes), bad ones in between.
    return good[: n // 2] + bad[:2] + good + bad[2:] + good[n // 2 :]


@pytest.mark.kafka
def test_kafka_outbox_to_posts_with_duplicates_and_deadletters(kafka_broker, tmp_path):
    from sparktweet.dispatcher import run

    config = _topic_config(kafka_broker)
    n = 20
    _produce(config, _outbox_values(n))
    store = TicketStore(f"sqlite:///{tmp_path / 't.db'}")
    with FakeX() as fake:
        stats = run(config, "live", store=store, x=x_client(fake), exit_when_idle_s=1.5)
    assert sorted(fake.replies_per_tweet().values()) == [1] * n
    assert stats["tickets_created"] == n and stats["outbox_duplicates"] == n and stats["outbox_deadletter"] == 3
    dead = [json.loads(m.value()) for m in _read_all(config, "deadletter", 3)]
    assert sorted(m["stage"] for m in dead) == ["dispatch"] * 3
    assert any("check character" in m["error"] for m in dead) and any(m["original"] == "{not json" for m in dead)
    assert _committed_lag(config) == 0
    assert store.counters()["outbox_lag"] == 0


@pytest.mark.kafka
def test_dispatcher_killed_mid_batch_and_restarted_posts_each_reply_once(kafka_broker, tmp_path):
    """A real dispatcher process is SIGKILLed by the fake X right after X accepted a post and
    before the response reached it; the restarted process, with 30% injected faults, finishes."""
    config = _topic_config(kafka_broker)
    n = 40
    _produce(config, _outbox_values(n))
    proc_holder: dict[str, subprocess.Popen] = {}

    def kill_on_post(count: int) -> None:
        if count == 7 and "first" in proc_holder:
            os.kill(proc_holder["first"].pid, signal.SIGKILL)

    env = {
        **os.environ,
        **CREDS,
        "SPARKTWEET_DB_URL": f"sqlite:///{tmp_path / 't.db'}",
        "PYTHONPATH": str(ROOT),
    }
    with FakeX(fault_rate=0.0, on_post=kill_on_post, delay_s=0.6, seed=5, reset_in_s=1) as fake:
        overrides = [
            f"kafka.bootstrap_servers={config['kafka']['bootstrap_servers']}",
            *(f"kafka.topics.{k}={v}" for k, v in config["kafka"]["topics"].items()),
            f"dispatch.group_id={config['dispatch']['group_id']}",
            "dispatch.accounts=[united]",
            "dispatch.batch_size=5",
            "dispatch.poll_s=0.2",
            "dispatch.backoff_base_s=0.05",
            "dispatch.backoff_max_s=0.5",
            "dispatch.x_timeout_s=0.3",
            f"x.api_base={fake.url}",
        ]
        cmd = [sys.executable, str(ROOT / "jobs" / "dispatch.py"), "--mode", "live", "--exit-when-idle", "2"]
        for item in overrides:
            cmd += ["--set", item]
        log1 = (tmp_path / "run1.log").open("w")
        proc_holder["first"] = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT)
        code = proc_holder["first"].wait(timeout=120)
        log1.close()
        assert code == -signal.SIGKILL, (tmp_path / "run1.log").read_text()[-2000:]
        posts_before_restart = len(fake.posts)
        uncommitted = _committed_lag(config)
        fake.fault_rate = 0.3
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        per_tweet = fake.replies_per_tweet()
        figures = {
            "tweets": n,
            "outbox_records": 2 * n + 3,
            "posts_before_kill": posts_before_restart,
            "uncommitted_records_at_kill": uncommitted,
            "posted": len(fake.posts),
            "max_per_tweet": max(per_tweet.values()),
            "faults_after_restart": dict(fake.faults),
        }
        print("kill/restart figures:", json.dumps(figures))
    assert posts_before_restart == 7 and uncommitted > 0
    assert sorted(per_tweet) == sorted(outbox(i)["tweet_id"] for i in range(n))
    assert set(per_tweet.values()) == {1}
    assert _committed_lag(config) == 0
    store = TicketStore(env["SPARKTWEET_DB_URL"])
    assert {t.reply_state for t in store.list_tickets(limit=1000)} == {"posted"}
    assert store.counters().get("replies_recovered", 0) >= 1  # the post the kill interrupted


def test_dispatcher_imports_no_pyspark_or_tensorflow():
    code = (
        "import sys, runpy; sys.path.insert(0, 'jobs');"
        "import sparktweet.dispatcher, sparktweet.xapi, sparktweet.store, dispatch;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyspark', 'tensorflow', 'keras', 'py4j')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

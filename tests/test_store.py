"""Ticket store on SQLite and on a real PostgreSQL server (started from scripts/pg_tmp.sh)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from sparktweet.errors import TicketIdError
from sparktweet.store import (
    DB_URL_ENV,
    InvalidTransition,
    TicketConflict,
    TicketNotFound,
    TicketStore,
    default_url,
    url_from_config,
)
from sparktweet.ticket_ids import make_ticket_id

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def record(tweet_id: str, category_prefix: str = "BAG", **extra) -> dict:
    base = {
        "tweet_id": tweet_id,
        "ticket_id": make_ticket_id(tweet_id, category_prefix, "2015-02-24T10:00:00Z"),
        "text": "@united my bag never arrived in Denver",
        "author_username": "jane",
        "mentions": ["united"],
        "created_at": "2015-02-24T10:00:00Z",
        "category": "baggage",
        "sentiment": "negative",
        "sentiment_score": 0.93,
        "priority": "high",
        "entities": [{"text": "Denver", "label": "CITY", "start": 32, "end": 38}],
        "reply_text": "Sorry about your bag. Track it here: BAG-...",
        "model_version": "test-1",
    }
    base.update(extra)
    return base


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster (scripts/pg_tmp.sh); yields an admin URL.

    ``SPARKTWEET_TEST_PG_URL`` reuses a running server instead. A server that cannot start fails
    the PostgreSQL tests: CI installs it with scripts/install_postgres.sh.
    """
    external = os.environ.get("SPARKTWEET_TEST_PG_URL")
    if external:
        yield external
        return
    # Not pytest's tmp_path: its parents are private to root, and the server runs as `postgres`.
    base = tempfile.mkdtemp(prefix="sparktweet-pg-")
    os.chmod(base, 0o755)
    script = str(ROOT / "scripts" / "pg_tmp.sh")
    proc = subprocess.run([script, "start", f"{base}/pg", str(_free_port())], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start (run scripts/install_postgres.sh): {proc.stderr}", pytrace=False)
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop", f"{base}/pg"], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_pg_url(postgres_server):
    """A new empty database on the server per test, so tests never see each other's rows."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tickets.db'}"
    return request.getfixturevalue("fresh_pg_url")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(db_url, clock):
    s = TicketStore(db_url, clock=clock)
    yield s
    s.close()


def test_backend_is_the_one_requested(store, db_url):
    assert store.engine.dialect.name == db_url.split(":")[0].split("+")[0]
    assert store.ping()


def test_upsert_creates_once_and_a_replay_changes_nothing(store, clock):
    ticket, created = store.upsert_ticket(record("570306133677760513"))
    assert created
    assert (ticket.status, ticket.reply_state, ticket.priority) == ("open", "pending", "high")
    assert ticket.entities == [{"text": "Denver", "label": "CITY", "start": 32, "end": 38}]
    assert ticket.created_at == dt.datetime.fromtimestamp(T0, tz=dt.UTC)
    clock.advance(60)
    again, created = store.upsert_ticket(record("570306133677760513", reply_text="different", priority="low"))
    assert not created
    assert (again.ticket_id, again.reply_text, again.priority) == (ticket.ticket_id, ticket.reply_text, "high")
    assert len(store.list_tickets()) == 1


def test_ticket_id_shared_by_two_tweets_is_refused(store):
    first = record("570306133677760513")
    store.upsert_ticket(first)
    with pytest.raises(TicketConflict, match="already belongs to tweet 570306133677760513"):
        store.upsert_ticket({**record("570306133677760514"), "ticket_id": first["ticket_id"]})


def test_malformed_ticket_id_is_refused(store):
    bad = record("570306133677760513")
    bad["ticket_id"] = bad["ticket_id"][:-1] + ("0" if bad["ticket_id"][-1] != "0" else "1")
    with pytest.raises(TicketIdError, match="check character"):
        store.upsert_ticket(bad)


def test_status_walks_forward_with_history(store, clock):
    ticket, _ = store.upsert_ticket(record("570306133677760513"))
    for status in ("in_progress", "resolved", "closed"):
        clock.advance(10)
        assert store.set_status(ticket.ticket_id.lower(), status, actor="alice").status == status
    got = store.get(ticket.ticket_id)
    steps = [(e.from_status, e.to_status, e.actor) for e in got.history if e.kind == "status"]
    assert steps == [
        (None, "open", "dispatcher"),
        ("open", "in_progress", "alice"),
        ("in_progress", "resolved", "alice"),
        ("resolved", "closed", "alice"),
    ]
    assert got.updated_at - got.created_at == dt.timedelta(seconds=30)
    with pytest.raises(InvalidTransition, match="closed is final"):
        store.set_status(ticket.ticket_id, "open", actor="alice")


@pytest.mark.parametrize(
    "path, target",
    [((), "resolved"), ((), "closed"), (("in_progress",), "open"), ((), "bogus")],
)
def test_invalid_transitions_are_refused(store, path, target):
    ticket, _ = store.upsert_ticket(record("570306133677760513"))
    for status in path:
        store.set_status(ticket.ticket_id, status, actor="a")
    with pytest.raises(InvalidTransition):
        store.set_status(ticket.ticket_id, target, actor="a")
    assert store.get(ticket.ticket_id).status == (path[-1] if path else "open")


def test_resolved_ticket_can_be_reopened(store):
    ticket, _ = store.upsert_ticket(record("570306133677760513"))
    for status in ("in_progress", "resolved", "in_progress"):
        store.set_status(ticket.ticket_id, status, actor="a")
    assert store.get(ticket.ticket_id).status == "in_progress"


def test_unknown_ticket(store):
    with pytest.raises(TicketNotFound):
        store.get(make_ticket_id("1", "BAG", "2015-02-24"))


def test_approve_queue_and_post_exactly_once(store, clock):
    ticket, _ = store.upsert_ticket(record("570306133677760513"))
    assert store.queue_size() == 0
    assert not store.enqueue(ticket.tweet_id)  # pending replies wait for approval
    store.approve_reply(ticket.ticket_id, actor="alice")
    assert store.queue_size() == 1
    assert not store.enqueue(ticket.tweet_id)  # already queued
    with pytest.raises(InvalidTransition):
        store.approve_reply(ticket.ticket_id, actor="alice")
    [(entry, queued_ticket)] = store.due()
    assert queued_ticket.ticket_id == ticket.ticket_id and entry.attempts == 0
    store.mark_in_flight(ticket.tweet_id)
    clock.advance(5)
    store.record_posted(ticket.tweet_id, "999")
    store.record_posted(ticket.tweet_id, "1000")  # a second record changes nothing
    got = store.get(ticket.ticket_id)
    assert (got.reply_state, got.reply_tweet_id) == ("posted", "999")
    assert store.queue_size() == 0 and store.posted_count() == 1
    assert store.posts_since(dt.datetime.fromtimestamp(T0, tz=dt.UTC)) == [dt.datetime.fromtimestamp(T0 + 5, tz=dt.UTC)]
    assert not store.enqueue(ticket.tweet_id)


def test_live_upsert_enqueues_in_the_same_transaction(store):
    store.upsert_ticket(record("570306133677760513"), reply_state="approved", enqueue=True)
    store.upsert_ticket(record("570306133677760513"), reply_state="approved", enqueue=True)
    assert store.queue_size() == 1


def test_defer_hides_an_entry_until_its_time(store, clock):
    ticket, _ = store.upsert_ticket(record("570306133677760513"), reply_state="approved", enqueue=True)
    store.mark_in_flight(ticket.tweet_id)
    until = store.now() + dt.timedelta(seconds=30)
    store.defer(ticket.tweet_id, until, "HTTP 503", clear_in_flight=True)
    assert store.due() == [] and store.next_due_at() == until
    clock.advance(30)
    [(entry, _)] = store.due()
    assert (entry.attempts, entry.in_flight_at, entry.last_error) == (1, None, "HTTP 503")


def test_skip_reply_removes_it_from_the_queue(store):
    ticket, _ = store.upsert_ticket(record("570306133677760513"), reply_state="approved", enqueue=True)
    got = store.skip_reply(ticket.ticket_id, actor="alice", reason="customer already helped by phone")
    assert (got.reply_state, got.reply_note) == ("skipped", "customer already helped by phone")
    assert store.queue_size() == 0
    with pytest.raises(InvalidTransition):
        store.approve_reply(ticket.ticket_id, actor="alice")


def test_counts_filters_and_time_series(store, clock):
    rows = [
        ("570306133677760501", "BAG", "baggage", "negative", "high"),
        ("570306133677760502", "BAG", "baggage", "neutral", "low"),
        ("570306133677760503", "SEAT", "seating", "negative", "medium"),
    ]
    for tweet_id, prefix, category, sentiment, priority in rows:
        store.upsert_ticket(record(tweet_id, prefix, category=category, sentiment=sentiment, priority=priority))
        clock.advance(3600)
    assert store.counts("category") == {"baggage": 2, "seating": 1}
    assert store.counts("sentiment") == {"negative": 2, "neutral": 1}
    assert store.counts("priority", status="open") == {"high": 1, "low": 1, "medium": 1}
    ordered = [t.priority for t in store.list_tickets(status="open")]
    assert ordered == ["high", "medium", "low"]
    assert [t.tweet_id for t in store.list_tickets(category="baggage", sentiment="neutral")] == ["570306133677760502"]
    series = store.time_series(bucket_s=3600)
    assert [n for _, n in series] == [1, 1, 1]
    assert series[1][0] - series[0][0] == dt.timedelta(hours=1)


def test_counters_and_gauges(store):
    store.incr("retries")
    store.incr("retries", 2)
    store.set_gauge("outbox_lag", 7)
    store.set_gauge("outbox_lag", 3)
    assert store.counters() == {"retries": 3.0, "outbox_lag": 3.0}


def test_concurrent_upserts_of_one_tweet_make_one_ticket(db_url, clock):
    stores = [TicketStore(db_url, clock=clock) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def worker(s: TicketStore) -> None:
        barrier.wait()
        results.append(s.upsert_ticket(record("570306133677760513"))[1])

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(stores[0].list_tickets()) == 1
    for s in stores:
        s.close()


def test_migrations_match_the_models_and_reopen_is_idempotent(store, db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sparktweet.store import Base

    TicketStore(db_url).close()  # a second open upgrades nothing and fails nothing
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == "0001"
        diffs = [
            d
            for d in compare_metadata(context, Base.metadata)
            # The ORM declares unique/index per column; the migration names its constraints.
            if not (
                isinstance(d, tuple) and d[0] in ("add_index", "remove_index", "add_constraint", "remove_constraint")
            )
        ]
    assert diffs == []


def test_aware_datetimes_survive_the_round_trip(store):
    ticket, _ = store.upsert_ticket(record("570306133677760513"))
    got = store.get(ticket.ticket_id)
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == dt.timedelta(0)


def test_public_view_holds_only_the_public_tweet_and_status(store):
    ticket, _ = store.upsert_ticket(record("570306133677760513"))
    public = store.get(ticket.ticket_id).public_dict()
    assert set(public) == {"ticket_id", "status", "category", "tweet", "created_at", "updated_at", "replied", "history"}
    assert "reply_text" not in str(public) and "sentiment" not in str(public) and "priority" not in str(public)


def test_default_url_is_sqlite_under_var(monkeypatch):
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    assert default_url() == f"sqlite:///{ROOT / 'var' / 'tickets.db'}"
    assert url_from_config({"store": {"url": "sqlite:///x.db"}}) == "sqlite:///x.db"
    monkeypatch.setenv(DB_URL_ENV, "postgresql+psycopg://u@h/db")
    assert url_from_config({"store": {"url": "sqlite:///x.db"}}) == "postgresql+psycopg://u@h/db"

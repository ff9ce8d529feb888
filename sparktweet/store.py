"""Ticket store: one ticket per tweet, status history, reply state and the persistent posting queue.

SQLAlchemy 2 over SQLite by default (``var/tickets.db`` under the project root) or any URL, e.g.
PostgreSQL with ``postgresql+psycopg://user@host/db``. The schema is owned by Alembic
(``sparktweet/migrations``) and upgraded to head when a store opens, so the dispatcher and the
web app never run on an old schema. No pyspark, no TensorFlow.

Tables
------
``tickets``
    One row per tweet: ``tweet_id`` and ``ticket_id`` are both unique, so a replayed outbox record
    can never make a second ticket and two tweets can never share an ID.
``ticket_history``
    Every status and reply-state change, with actor and time.
``reply_queue``
    Replies waiting to be posted (approved, not yet posted). Entries survive restarts; an entry
    whose ``in_flight_at`` is set was being posted when the dispatcher stopped, so the dispatcher
    must look on X before posting it again.
``post_log``
    One row per reply posted, the source of truth for pacing (posts per 15 min and per day).
``counters``
    Named counters and gauges (retries, rate-limit waits, outbox lag) shared with ``/metrics``.

Examples
--------
>>> store = TicketStore("sqlite://")
>>> record = {"tweet_id": "570306133677760513", "ticket_id": "BAG-150224-0JK4HW2", "text": "@united bag?",
...           "category": "baggage", "reply_text": "Sorry!"}
>>> ticket, created = store.upsert_ticket(record)
>>> ticket.status, created
('open', True)
>>> store.set_status("BAG-150224-0JK4HW2", "in_progress", actor="agent").status
'in_progress'
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    case,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.types import TypeDecorator

from sparktweet.config import PROJECT_ROOT, get
from sparktweet.errors import SparkTweetError
from sparktweet.ticket_ids import validate_ticket_id

log = logging.getLogger(__name__)

STATUSES = ("open", "in_progress", "resolved", "closed")
#: Allowed status changes. Forward one step at a time; a resolved ticket may be reopened
#: (back to in_progress) when the customer writes again, a closed one is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"in_progress"}),
    "in_progress": frozenset({"resolved"}),
    "resolved": frozenset({"closed", "in_progress"}),
    "closed": frozenset(),
}
REPLY_STATES = ("pending", "approved", "posted", "skipped")
DEFAULT_DB = PROJECT_ROOT / "var" / "tickets.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Environment variable holding the database URL (it may carry a password, so not in conf/).
DB_URL_ENV = "SPARKTWEET_DB_URL"


class StoreError(SparkTweetError):
    """A ticket store operation was refused (unknown ticket, invalid transition, conflict)."""


class TicketNotFound(StoreError):
    """No ticket has the requested ticket ID or tweet id."""


class InvalidTransition(StoreError):
    """A status change that the ticket workflow does not allow."""


class TicketConflict(StoreError):
    """A ticket ID is already used by another tweet."""


def default_url() -> str:
    """The SQLite URL of ``var/tickets.db`` under the project root."""
    return f"sqlite:///{DEFAULT_DB}"


def url_from_config(config: Mapping[str, Any] | None) -> str:
    """``$SPARKTWEET_DB_URL``, else ``store.url`` from the config, else :func:`default_url`."""
    return os.environ.get(DB_URL_ENV) or get(config or {}, "store.url") or default_url()


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: _dt.datetime | None, dialect: Any) -> _dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ticket store; use an aware UTC datetime")
        return value.astimezone(_dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: _dt.datetime | None, dialect: Any) -> _dt.datetime | None:
        return None if value is None else value.replace(tzinfo=_dt.UTC)


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    tweet_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    author_username: Mapped[str | None] = mapped_column(String(64))
    tweet_text: Mapped[str | None] = mapped_column(Text)
    tweet_created_at: Mapped[str | None] = mapped_column(String(40))
    mentions: Mapped[list | None] = mapped_column(JSON)
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    sentiment: Mapped[str | None] = mapped_column(String(16), index=True)
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[str | None] = mapped_column(String(16), index=True)
    entities: Mapped[list | None] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open", index=True)
    reply_text: Mapped[str | None] = mapped_column(Text)
    reply_state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending", index=True)
    reply_note: Mapped[str | None] = mapped_column(Text)
    reply_tweet_id: Mapped[str | None] = mapped_column(String(32))
    replied_at: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    updated_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    history: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id", cascade="all, delete-orphan", lazy="selectin"
    )

    def public_dict(self) -> dict[str, Any]:
        """What the public tracking page may show: the public tweet, status and history, nothing internal."""
        return {
            "ticket_id": self.ticket_id,
            "status": self.status,
            "category": self.category,
            "tweet": {"tweet_id": self.tweet_id, "author_username": self.author_username, "text": self.tweet_text},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "replied": self.reply_tweet_id is not None,
            "history": [{"status": e.to_status, "at": e.at.isoformat()} for e in self.history if e.kind == "status"],
        }

    def agent_dict(self) -> dict[str, Any]:
        """Everything an agent sees on the dashboard."""
        return {
            **{c: getattr(self, c) for c in _AGENT_COLUMNS},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "replied_at": self.replied_at.isoformat() if self.replied_at else None,
            "next_statuses": sorted(TRANSITIONS[self.status]),
        }


_AGENT_COLUMNS = (
    "ticket_id", "tweet_id", "author_username", "tweet_text", "tweet_created_at", "mentions", "category",
    "sentiment", "sentiment_score", "priority", "entities", "model_version", "status", "reply_text",
    "reply_state", "reply_note", "reply_tweet_id",
)  # fmt: skip


class TicketEvent(Base):
    __tablename__ = "ticket_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_pk: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "status" or "reply"
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[_dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    ticket: Mapped[Ticket] = relationship(back_populates="history")


class QueueEntry(Base):
    __tablename__ = "reply_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tweet_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    ticket_pk: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    available_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    in_flight_at: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime, nullable=False)


class PostLog(Base):
    __tablename__ = "post_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tweet_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    reply_tweet_id: Mapped[str] = mapped_column(String(32), nullable=False)
    posted_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web app read while the dispatcher writes; busy_timeout waits for the
    # writer's lock instead of failing at once.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL and a busy timeout, their folder is created."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        from sqlalchemy.pool import StaticPool

        memory = not path or path == ":memory:"
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            **({"poolclass": StaticPool} if memory else {}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_schema(engine: Engine) -> None:
    """Apply every Alembic migration up to head on ``engine`` (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _epoch_to_dt(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)


class TicketStore:
    """Tickets, their history, reply state and the posting queue in one SQL database.

    Parameters
    ----------
    url
        SQLAlchemy URL; None means :func:`default_url` (SQLite under ``var/``).
    clock
        Seconds since the epoch, ``time.time`` by default; tests inject a fake clock so that
        timestamps and pacing windows need no sleeping.
    migrate
        Upgrade the schema to the newest Alembic revision on open (default True).
    """

    def __init__(self, url: str | None = None, *, clock: Callable[[], float] = time.time, migrate: bool = True) -> None:
        self.url = url or default_url()
        self.clock = clock
        self.engine = make_engine(self.url)
        if migrate:
            upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, **kwargs: Any) -> TicketStore:
        """A store for :func:`url_from_config` (environment, then ``store.url``, then SQLite)."""
        return cls(url_from_config(config), **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def now(self) -> _dt.datetime:
        return _epoch_to_dt(self.clock())

    def session(self) -> Session:
        return self._sessions()

    # -- tickets -----------------------------------------------------------------------------

    def upsert_ticket(
        self, record: Mapping[str, Any], reply_state: str = "pending", note: str | None = None, enqueue: bool = False
    ) -> tuple[Ticket, bool]:
        """Create the ticket of an outbox record once; a record for a known tweet changes nothing.

        Returns ``(ticket, created)``. ``enqueue`` puts the reply on the posting queue in the
        same transaction (live mode), so a ticket is never committed without its queue entry.

        Raises
        ------
        TicketConflict
            When the record's ticket ID already belongs to another tweet.
        """
        if reply_state not in REPLY_STATES:
            raise StoreError(f"reply_state must be one of {REPLY_STATES}, found {reply_state!r}.")
        tweet_id = str(record["tweet_id"])
        ticket_id = validate_ticket_id(record["ticket_id"])
        now = self.now()
        with self.session() as s:
            # One statement for both keys: a concurrent writer that commits between two separate
            # lookups would otherwise make our own tweet look like a ticket ID conflict.
            found = list(
                s.scalars(select(Ticket).where((Ticket.tweet_id == tweet_id) | (Ticket.ticket_id == ticket_id)))
            )
            for existing in found:
                if existing.tweet_id == tweet_id:
                    return existing, False
            if found:
                raise TicketConflict(
                    f"Ticket ID {ticket_id} already belongs to tweet {found[0].tweet_id}, not {tweet_id}."
                )
            ticket = Ticket(
                ticket_id=ticket_id,
                tweet_id=tweet_id,
                author_username=record.get("author_username"),
                tweet_text=record.get("text"),
                tweet_created_at=record.get("created_at"),
                mentions=list(record.get("mentions") or []),
                category=record.get("category"),
                sentiment=record.get("sentiment"),
                sentiment_score=record.get("sentiment_score"),
                priority=record.get("priority"),
                entities=list(record.get("entities") or []),
                model_version=record.get("model_version"),
                status="open",
                reply_text=record.get("reply_text"),
                reply_state=reply_state,
                reply_note=note,
                created_at=now,
                updated_at=now,
            )
            ticket.history.append(TicketEvent(kind="status", to_status="open", actor="dispatcher", at=now))
            if reply_state != "pending" or note:
                ticket.history.append(
                    TicketEvent(kind="reply", to_status=reply_state, actor="dispatcher", note=note, at=now)
                )
            s.add(ticket)
            try:
                s.flush()
                if enqueue:
                    s.add(QueueEntry(tweet_id=tweet_id, ticket_pk=ticket.id, available_at=now, enqueued_at=now))
                s.commit()
            except IntegrityError:
                # Another writer inserted the same tweet between our check and our insert.
                s.rollback()
                existing = s.scalar(select(Ticket).where(Ticket.tweet_id == tweet_id))
                if existing is None:
                    raise TicketConflict(f"Ticket ID {ticket_id} for tweet {tweet_id} conflicts with another ticket.")
                return existing, False
            return ticket, True

    def get(self, ticket_id: str) -> Ticket:
        """The ticket with this ID (any accepted spelling); :class:`TicketNotFound` if none."""
        canonical = validate_ticket_id(ticket_id)
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.ticket_id == canonical))
            if ticket is None:
                raise TicketNotFound(f"No ticket {canonical}.")
            return ticket

    def get_by_tweet(self, tweet_id: str) -> Ticket | None:
        with self.session() as s:
            return s.scalar(select(Ticket).where(Ticket.tweet_id == str(tweet_id)))

    def set_status(self, ticket_id: str, status: str, actor: str, note: str | None = None) -> Ticket:
        """Move a ticket to ``status`` if :data:`TRANSITIONS` allows it, recording who and when."""
        if status not in STATUSES:
            raise InvalidTransition(f"Unknown status {status!r}; expected one of {', '.join(STATUSES)}.")
        canonical = validate_ticket_id(ticket_id)
        now = self.now()
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.ticket_id == canonical).with_for_update())
            if ticket is None:
                raise TicketNotFound(f"No ticket {canonical}.")
            if status not in TRANSITIONS[ticket.status]:
                allowed = ", ".join(sorted(TRANSITIONS[ticket.status])) or "none (closed is final)"
                raise InvalidTransition(
                    f"Ticket {canonical} is {ticket.status}; it cannot become {status}. Allowed next: {allowed}."
                )
            ticket.history.append(
                TicketEvent(kind="status", from_status=ticket.status, to_status=status, actor=actor, note=note, at=now)
            )
            ticket.status = status
            ticket.updated_at = now
            s.commit()
            return ticket

    def approve_reply(self, ticket_id: str, actor: str) -> Ticket:
        """Approve a pending reply and put it on the posting queue (approve mode)."""
        canonical = validate_ticket_id(ticket_id)
        now = self.now()
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.ticket_id == canonical).with_for_update())
            if ticket is None:
                raise TicketNotFound(f"No ticket {canonical}.")
            if ticket.reply_state != "pending":
                raise InvalidTransition(
                    f"Reply of {canonical} is {ticket.reply_state}; only a pending reply can be approved."
                )
            if not ticket.reply_text:
                raise InvalidTransition(f"Ticket {canonical} has no reply text to approve.")
            ticket.reply_state = "approved"
            ticket.updated_at = now
            ticket.history.append(TicketEvent(kind="reply", to_status="approved", actor=actor, at=now))
            s.add(QueueEntry(tweet_id=ticket.tweet_id, ticket_pk=ticket.id, available_at=now, enqueued_at=now))
            s.commit()
            return ticket

    def skip_reply(self, ticket_id: str, actor: str, reason: str) -> Ticket:
        """Mark a reply as never to be posted and drop it from the queue."""
        canonical = validate_ticket_id(ticket_id)
        now = self.now()
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.ticket_id == canonical).with_for_update())
            if ticket is None:
                raise TicketNotFound(f"No ticket {canonical}.")
            if ticket.reply_state in ("posted", "skipped"):
                raise InvalidTransition(f"Reply of {canonical} is already {ticket.reply_state}.")
            ticket.reply_state = "skipped"
            ticket.reply_note = reason
            ticket.updated_at = now
            ticket.history.append(TicketEvent(kind="reply", to_status="skipped", actor=actor, note=reason, at=now))
            s.execute(delete(QueueEntry).where(QueueEntry.tweet_id == ticket.tweet_id))
            s.commit()
            return ticket

    def list_tickets(
        self,
        *,
        status: str | Iterable[str] | None = None,
        category: str | None = None,
        sentiment: str | None = None,
        priority: str | None = None,
        reply_state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Ticket]:
        """Tickets matching every given filter, high priority and oldest first."""
        query = select(Ticket)
        if status is not None:
            query = query.where(Ticket.status.in_([status] if isinstance(status, str) else list(status)))
        for column, value in (
            (Ticket.category, category),
            (Ticket.sentiment, sentiment),
            (Ticket.priority, priority),
            (Ticket.reply_state, reply_state),
        ):
            if value:
                query = query.where(column == value)
        rank = case({"high": 0, "medium": 1, "low": 2}, value=Ticket.priority, else_=3)
        query = (
            query.order_by(rank, Ticket.created_at, Ticket.id).limit(max(0, min(limit, 1000))).offset(max(0, offset))
        )
        with self.session() as s:
            return list(s.scalars(query))

    def counts(self, column: str, status: str | Iterable[str] | None = None) -> dict[str, int]:
        """Ticket counts grouped by ``column`` (category, sentiment, priority, status, reply_state)."""
        if column not in ("category", "sentiment", "priority", "status", "reply_state"):
            raise StoreError(f"Cannot count tickets by {column!r}.")
        col = getattr(Ticket, column)
        query = select(col, func.count()).group_by(col)
        if status is not None:
            query = query.where(Ticket.status.in_([status] if isinstance(status, str) else list(status)))
        with self.session() as s:
            return {(k if k is not None else "unknown"): n for k, n in s.execute(query)}

    def time_series(self, bucket_s: int = 3600, since: _dt.datetime | None = None) -> list[tuple[_dt.datetime, int]]:
        """Tickets created per ``bucket_s``-second bucket (bucket start, count), oldest first."""
        query = select(Ticket.created_at)
        if since is not None:
            query = query.where(Ticket.created_at >= since)
        buckets: dict[int, int] = {}
        with self.session() as s:
            for (created,) in s.execute(query):
                key = int(created.timestamp()) // bucket_s * bucket_s
                buckets[key] = buckets.get(key, 0) + 1
        return [(_epoch_to_dt(k), buckets[k]) for k in sorted(buckets)]

    # -- posting queue -----------------------------------------------------------------------

    def enqueue(self, tweet_id: str) -> bool:
        """Put an approved, unposted reply on the queue; False when it is already queued or done."""
        now = self.now()
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.tweet_id == str(tweet_id)))
            if ticket is None or ticket.reply_state != "approved" or ticket.reply_tweet_id:
                return False
            if s.scalar(select(QueueEntry.id).where(QueueEntry.tweet_id == ticket.tweet_id)) is not None:
                return False
            s.add(QueueEntry(tweet_id=ticket.tweet_id, ticket_pk=ticket.id, available_at=now, enqueued_at=now))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                return False
            return True

    def queue_size(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(QueueEntry)) or 0

    def due(self, limit: int = 50) -> list[tuple[QueueEntry, Ticket]]:
        """Queue entries whose ``available_at`` has come, oldest first, with their tickets."""
        now = self.now()
        with self.session() as s:
            rows = s.execute(
                select(QueueEntry, Ticket)
                .join(Ticket, Ticket.id == QueueEntry.ticket_pk)
                .where(QueueEntry.available_at <= now)
                .order_by(QueueEntry.available_at, QueueEntry.id)
                .limit(limit)
            )
            return [(q, t) for q, t in rows]

    def next_due_at(self) -> _dt.datetime | None:
        with self.session() as s:
            return s.scalar(select(func.min(QueueEntry.available_at)))

    def mark_in_flight(self, tweet_id: str) -> None:
        """Record that a post for ``tweet_id`` is about to be sent (committed before sending)."""
        now = self.now()
        with self.session() as s:
            s.execute(
                update(QueueEntry)
                .where(QueueEntry.tweet_id == tweet_id)
                .values(in_flight_at=now, attempts=QueueEntry.attempts + 1)
            )
            s.commit()

    def defer(self, tweet_id: str, until: _dt.datetime, error: str, clear_in_flight: bool) -> None:
        """Put a queue entry back until ``until`` after a failed or refused attempt."""
        values: dict[str, Any] = {"available_at": until, "last_error": error[:1000]}
        if clear_in_flight:
            values["in_flight_at"] = None
        with self.session() as s:
            s.execute(update(QueueEntry).where(QueueEntry.tweet_id == tweet_id).values(**values))
            s.commit()

    def record_posted(self, tweet_id: str, reply_tweet_id: str, note: str | None = None) -> None:
        """In one transaction: the ticket gets its reply tweet id, the queue entry goes, the post is logged."""
        now = self.now()
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.tweet_id == tweet_id).with_for_update())
            if ticket is None:
                raise TicketNotFound(f"No ticket for tweet {tweet_id}.")
            if ticket.reply_tweet_id is None:
                ticket.reply_tweet_id = str(reply_tweet_id)
                ticket.reply_state = "posted"
                ticket.replied_at = now
                ticket.updated_at = now
                ticket.history.append(
                    TicketEvent(kind="reply", to_status="posted", actor="dispatcher", note=note, at=now)
                )
                s.add(PostLog(tweet_id=tweet_id, reply_tweet_id=str(reply_tweet_id), posted_at=now))
            s.execute(delete(QueueEntry).where(QueueEntry.tweet_id == tweet_id))
            s.commit()

    def drop_from_queue(self, tweet_id: str, reason: str) -> None:
        """Give up on a queued reply: it becomes ``skipped`` with the reason."""
        now = self.now()
        with self.session() as s:
            ticket = s.scalar(select(Ticket).where(Ticket.tweet_id == tweet_id).with_for_update())
            if ticket is not None and ticket.reply_state != "posted":
                ticket.reply_state = "skipped"
                ticket.reply_note = reason
                ticket.updated_at = now
                ticket.history.append(
                    TicketEvent(kind="reply", to_status="skipped", actor="dispatcher", note=reason, at=now)
                )
            s.execute(delete(QueueEntry).where(QueueEntry.tweet_id == tweet_id))
            s.commit()

    def posts_since(self, since: _dt.datetime) -> list[_dt.datetime]:
        """Times of replies posted at or after ``since``, oldest first (the pacing windows)."""
        with self.session() as s:
            return list(
                s.scalars(select(PostLog.posted_at).where(PostLog.posted_at >= since).order_by(PostLog.posted_at))
            )

    def posted_count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(PostLog)) or 0

    # -- counters ----------------------------------------------------------------------------

    def incr(self, name: str, amount: float = 1.0) -> None:
        with self.session() as s:
            updated = s.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + amount))
            if updated.rowcount == 0:
                s.add(Counter(name=name, value=amount))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                s.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + amount))
                s.commit()

    def set_gauge(self, name: str, value: float) -> None:
        with self.session() as s:
            updated = s.execute(update(Counter).where(Counter.name == name).values(value=value))
            if updated.rowcount == 0:
                s.add(Counter(name=name, value=value))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                s.execute(update(Counter).where(Counter.name == name).values(value=value))
                s.commit()

    def counters(self) -> dict[str, float]:
        with self.session() as s:
            return {name: value for name, value in s.execute(select(Counter.name, Counter.value))}

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        with self.session() as s:
            return s.scalar(select(1)) == 1

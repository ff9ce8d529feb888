"""Reply dispatcher: ``replies.outbox`` -> ticket store -> replies on X, exactly once per tweet.

Spark writes facts at least once; this service acts on them once. The order of effects is what
makes it safe to kill at any point:

1. A batch of outbox records is read (confluent-kafka, no auto-commit). Each record is validated
   (:func:`validate_outbox_record`); a bad one goes to ``tweets.deadletter`` with the reason.
2. Its ticket is upserted and, in ``live`` mode, its reply put on the persistent posting queue,
   in one store transaction. A record for a tweet already in the store changes nothing.
3. Only then are the Kafka offsets committed. A crash before this replays the batch, which step 2
   makes harmless.
4. Queued replies are posted within X's limits (:class:`Pacer`). A queue entry is marked in
   flight before the request; if the request fails ambiguously (5xx, timeout, crash), the next
   attempt first looks on X for the reply (:meth:`~sparktweet.xapi.XClient.find_reply`) and
   records it instead of posting twice.

Modes: ``dry-run`` (default) records tickets and writes the replies it would post to a JSON Lines
file, never calling X; ``approve`` records tickets with pending replies that an agent approves on
the dashboard, then posts them; ``live`` posts every eligible reply. A reply is eligible only when
the tweet mentions the brand's account (X allows programmatic replies only then) and the reply
is non-empty and at most 280 characters.

No pyspark and no TensorFlow are imported here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import math
import random
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparktweet.config import PROJECT_ROOT, get
from sparktweet.errors import InputError, TicketIdError
from sparktweet.store import TicketConflict, TicketStore
from sparktweet.ticket_ids import parse_ticket_id, ticket_code
from sparktweet.xapi import (
    Ambiguous,
    DuplicateContent,
    RateLimited,
    Rejected,
    XApiError,
    XClient,
)

log = logging.getLogger(__name__)

MODES = ("dry-run", "approve", "live")
MAX_REPLY_CHARS = 280
SENTIMENTS = ("negative", "neutral", "positive")
PRIORITIES = ("low", "medium", "high")
_TWEET_ID_RE = re.compile(r"[0-9]{1,20}")
_HANDLE_RE = re.compile(r"@([A-Za-z0-9_]{1,15})\b")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class OutboxError(InputError):
    """An outbox record that cannot be acted on; it goes to the dead-letter topic."""


@dataclass(frozen=True)
class OutboxRecord:
    """A validated ``replies.outbox`` record (see :func:`validate_outbox_record`)."""

    tweet_id: str
    text: str
    ticket_id: str
    author_username: str | None = None
    mentions: tuple[str, ...] = ()
    created_at: str | None = None
    reply_text: str | None = None
    category: str | None = None
    sentiment: str | None = None
    sentiment_score: float | None = None
    priority: str | None = None
    entities: tuple[dict[str, Any], ...] = ()
    model_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mentions": list(self.mentions), "entities": [dict(e) for e in self.entities]}


def _opt_str(record: Mapping[str, Any], key: str, max_len: int = 10_000) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OutboxError(f"Outbox field {key!r} must be a string or null, found {type(value).__name__}.")
    if len(value) > max_len:
        raise OutboxError(f"Outbox field {key!r} is {len(value)} characters long; at most {max_len} are accepted.")
    return value


def validate_outbox_record(value: bytes | str | Mapping[str, Any]) -> OutboxRecord:
    """Parse and check one outbox record; :class:`OutboxError` says what is wrong.

    Required: ``tweet_id`` (decimal string), ``text`` (string) and ``ticket_id`` (valid check
    character, and the code part must be the one derived from this tweet id). Optional fields
    must have the documented types: ``mentions`` a list of handles, ``entities`` a list of
    ``{text, label, start, end}``, ``sentiment`` one of negative/neutral/positive,
    ``sentiment_score`` in [0, 1], ``priority`` one of low/medium/high.

    Examples
    --------
    >>> r = validate_outbox_record(b'{"tweet_id": "570306133677760513", "text": "@united hi",'
    ...                            b' "ticket_id": "BAG-150224-0JK4HW2"}')
    >>> r.ticket_id, r.mentions
    ('BAG-150224-0JK4HW2', ())
    >>> validate_outbox_record(b'{"tweet_id": 1.5}')
    Traceback (most recent call last):
    ...
    sparktweet.dispatcher.OutboxError: Outbox field 'tweet_id' must be a decimal string (X ids exceed 2^53), found 1.5.
    """
    if isinstance(value, (bytes, bytearray, str)):
        try:
            record = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OutboxError(f"Outbox value is not UTF-8 JSON: {exc}") from None
    else:
        record = value
    if not isinstance(record, Mapping):
        raise OutboxError(f"An outbox record must be a JSON object, found {type(record).__name__}.")
    tweet_id = record.get("tweet_id")
    if isinstance(tweet_id, int) and not isinstance(tweet_id, bool):
        tweet_id = str(tweet_id)
    if not isinstance(tweet_id, str) or not _TWEET_ID_RE.fullmatch(tweet_id):
        raise OutboxError(f"Outbox field 'tweet_id' must be a decimal string (X ids exceed 2^53), found {tweet_id!r}.")
    text = record.get("text")
    if not isinstance(text, str):
        raise OutboxError(f"Outbox record {tweet_id}: 'text' must be a string, found {type(text).__name__}.")
    raw_ticket = record.get("ticket_id")
    if not isinstance(raw_ticket, str):
        raise OutboxError(f"Outbox record {tweet_id}: 'ticket_id' must be a string, found {raw_ticket!r}.")
    try:
        parts = parse_ticket_id(raw_ticket)
    except TicketIdError as exc:
        raise OutboxError(f"Outbox record {tweet_id}: {exc}") from None
    if parts.code != ticket_code(tweet_id, parts.prefix):
        raise OutboxError(f"Outbox record {tweet_id}: ticket ID {parts} was not derived from this tweet id.")
    mentions = record.get("mentions") or []
    if not isinstance(mentions, list) or not all(isinstance(m, str) for m in mentions):
        raise OutboxError(f"Outbox record {tweet_id}: 'mentions' must be a list of handles, found {mentions!r}.")
    entities = record.get("entities") or []
    if not isinstance(entities, list):
        raise OutboxError(f"Outbox record {tweet_id}: 'entities' must be a list, found {type(entities).__name__}.")
    checked_entities = []
    for entity in entities:
        if (
            not isinstance(entity, Mapping)
            or not isinstance(entity.get("text"), str)
            or not isinstance(entity.get("label"), str)
            or not all(isinstance(entity.get(k), int) and not isinstance(entity.get(k), bool) for k in ("start", "end"))
        ):
            raise OutboxError(
                f"Outbox record {tweet_id}: each entity must be {{text, label, start, end}}, found {entity!r}."
            )
        checked_entities.append({k: entity[k] for k in ("text", "label", "start", "end")})
    sentiment = _opt_str(record, "sentiment", 16)
    if sentiment is not None and sentiment not in SENTIMENTS:
        raise OutboxError(f"Outbox record {tweet_id}: 'sentiment' must be one of {SENTIMENTS}, found {sentiment!r}.")
    score = record.get("sentiment_score")
    if score is not None:
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
            or not 0 <= score <= 1
        ):
            raise OutboxError(
                f"Outbox record {tweet_id}: 'sentiment_score' must be a number in [0, 1], found {score!r}."
            )
        score = float(score)
    priority = _opt_str(record, "priority", 16)
    if priority is not None and priority not in PRIORITIES:
        raise OutboxError(f"Outbox record {tweet_id}: 'priority' must be one of {PRIORITIES}, found {priority!r}.")
    return OutboxRecord(
        tweet_id=tweet_id,
        text=text[:10_000],
        ticket_id=str(parts),
        author_username=_opt_str(record, "author_username", 64),
        mentions=tuple(m.lstrip("@") for m in mentions),
        created_at=_opt_str(record, "created_at", 64),
        reply_text=_opt_str(record, "reply_text"),
        category=_opt_str(record, "category", 64),
        sentiment=sentiment,
        sentiment_score=score,
        priority=priority,
        entities=tuple(checked_entities),
        model_version=_opt_str(record, "model_version", 64),
    )


def mentions_account(record: OutboxRecord, accounts: Iterable[str]) -> bool:
    """True when the tweet @mentions one of ``accounts`` (in ``mentions`` or in its text)."""
    wanted = {a.lower().lstrip("@") for a in accounts}
    handles = {m.lower() for m in record.mentions} | {m.lower() for m in _HANDLE_RE.findall(record.text)}
    return bool(wanted & handles)


def safe_reply_text(text: str, author_username: str | None) -> str:
    """The reply as it will be posted: control and bidi characters removed, whitespace collapsed,
    and every @handle other than the tweet's author defused with a full-width ＠, so words taken
    from the customer's tweet (entities in the template) can never mention or notify anyone else."""
    cleaned = _CONTROL_RE.sub("", unicodedata.normalize("NFC", text))
    cleaned = " ".join(cleaned.split())
    author = (author_username or "").lower().lstrip("@")

    def defuse(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1).lower() == author else "\uff20" + match.group(1)

    return _HANDLE_RE.sub(defuse, cleaned)


def reply_problem(text: str | None) -> str | None:
    """Why a reply cannot be posted, or None when it can."""
    if not text or not text.strip():
        return "no reply text"
    if len(text) > MAX_REPLY_CHARS:
        return f"reply is {len(text)} characters; X allows {MAX_REPLY_CHARS}"
    return None


@dataclass
class DispatchSettings:
    """How the dispatcher behaves; :meth:`from_config` reads the ``dispatch:`` config section."""

    mode: str = "dry-run"
    accounts: tuple[str, ...] = ()
    group_id: str = "sparktweet-dispatcher"
    per_window: int = 100
    window_s: float = 900.0
    per_day: int = 10_000
    day_s: float = 86_400.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 900.0
    batch_size: int = 100
    poll_s: float = 1.0
    x_timeout_s: float = 10.0
    api_base: str | None = None
    dry_run_path: Path = field(default_factory=lambda: PROJECT_ROOT / "var" / "dry_run_replies.jsonl")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"Dispatch mode must be one of {', '.join(MODES)}, found {self.mode!r}.")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], mode: str | None = None) -> DispatchSettings:
        section = dict(get(config, "dispatch", {}) or {})
        accounts = section.pop("accounts", None) or get(config, "brand.handles", []) or []
        if isinstance(accounts, str):
            accounts = [accounts]
        path = section.pop("dry_run_path", None)
        api_base = section.pop("api_base", None) or get(config, "x.api_base")
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise InputError(f"Unknown dispatch settings {unknown}; expected {sorted(cls.__dataclass_fields__)}.")
        settings = cls(accounts=tuple(a.lstrip("@") for a in accounts), api_base=api_base, **known)
        if mode:
            settings.mode = mode
            settings.__post_init__()
        if path:
            p = Path(path)
            settings.dry_run_path = p if p.is_absolute() else PROJECT_ROOT / p
        return settings


class Pacer:
    """X's posting limits from the store's post log: at most ``per_window`` posts in any
    ``window_s`` seconds (per user) and ``per_day`` in any ``day_s`` (per app)."""

    def __init__(self, store: TicketStore, settings: DispatchSettings) -> None:
        self.store = store
        self.settings = settings

    def wait_s(self) -> float:
        """Seconds until one more post fits both budgets (0 when it fits now)."""
        s = self.settings
        now = self.store.clock()
        day = self.store.posts_since(_dt.datetime.fromtimestamp(now - s.day_s, tz=_dt.UTC))
        stamps = [t.timestamp() for t in day]
        wait = 0.0
        if len(stamps) >= s.per_day:
            wait = max(wait, stamps[len(stamps) - s.per_day] + s.day_s - now)
        recent = [t for t in stamps if t > now - s.window_s]
        if len(recent) >= s.per_window:
            wait = max(wait, recent[len(recent) - s.per_window] + s.window_s - now)
        return max(0.0, wait)


class Dispatcher:
    """Turns outbox records into tickets and queued replies into posts.

    Parameters
    ----------
    store
        The ticket store; its clock is the dispatcher's clock.
    settings
        Mode, accounts, limits and backoff.
    x
        The X client; required in ``approve`` and ``live`` modes.
    deadletter
        Called with ``(original bytes, key, reason)`` for each bad record.
    rng
        Jitter for backoff (seeded in tests).
    """

    def __init__(
        self,
        store: TicketStore,
        settings: DispatchSettings,
        x: XClient | None = None,
        deadletter: Callable[[bytes | None, bytes | None, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if settings.mode != "dry-run" and x is None:
            raise InputError(f"Dispatch mode {settings.mode!r} posts replies and needs an X client.")
        self.store = store
        self.settings = settings
        self.x = x
        self.deadletter = deadletter
        self.pacer = Pacer(store, settings)
        self.rng = rng or random.Random()
        self.stats: dict[str, int] = {}
        self._pacing = False

    def _count(self, name: str, amount: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + amount
        self.store.incr(name, amount)

    # -- outbox side --------------------------------------------------------------------------

    def handle(self, value: bytes | None, key: bytes | None = None) -> str:
        """Act on one outbox record. Returns ``created``, ``duplicate`` or ``deadletter``; never
        raises for a bad record (store outages do raise, so offsets are not committed)."""
        try:
            record = validate_outbox_record(value if value is not None else b"null")
        except OutboxError as exc:
            return self._reject(value, key, str(exc))
        reply = safe_reply_text(record.reply_text, record.author_username) if record.reply_text else None
        state, note, enqueue = self._initial_reply_state(record, reply)
        data = {**record.as_dict(), "reply_text": reply}
        try:
            ticket, created = self.store.upsert_ticket(data, reply_state=state, note=note, enqueue=enqueue)
        except TicketConflict as exc:
            return self._reject(value, key, str(exc))
        if not created:
            self._count("outbox_duplicates")
            return "duplicate"
        self._count("tickets_created")
        if self.settings.mode == "dry-run" and state == "pending":
            self._write_dry_run(ticket.ticket_id, record, reply)
        return "created"

    def _initial_reply_state(self, record: OutboxRecord, reply: str | None) -> tuple[str, str | None, bool]:
        problem = reply_problem(reply)
        if problem:
            return "skipped", problem, False
        if not mentions_account(record, self.settings.accounts):
            return "skipped", "tweet does not mention the brand account; X forbids the reply", False
        if self.settings.mode == "live":
            return "approved", None, True
        if self.settings.mode == "dry-run":
            return "pending", "dry-run: written to the dry-run file, not posted", False
        return "pending", None, False

    def _write_dry_run(self, ticket_id: str, record: OutboxRecord, reply: str | None) -> None:
        path = self.settings.dry_run_path
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"ticket_id": ticket_id, "in_reply_to_tweet_id": record.tweet_id, "text": reply}
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._count("dry_run_replies")

    def _reject(self, value: bytes | None, key: bytes | None, reason: str) -> str:
        log.warning("Outbox record %r sent to dead letter: %s", key, reason)
        self._count("outbox_deadletter")
        if self.deadletter is not None:
            self.deadletter(value, key, reason)
        return "deadletter"

    # -- posting side -------------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        base = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** max(0, attempts - 1))
        return base * (0.5 + 0.5 * self.rng.random())

    def _later(self, seconds: float) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.store.clock() + seconds, tz=_dt.UTC)

    def drain(self, max_posts: int | None = None) -> float | None:
        """Post due replies until the queue has none due, the budget is spent or ``max_posts``.

        Returns the seconds to wait before calling again (pacing or backoff), 0 when stopped by
        ``max_posts``, or None when nothing is queued. Never sleeps, so a fake clock drives it.
        """
        if self.settings.mode == "dry-run":
            return None
        posted = 0
        while max_posts is None or posted < max_posts:
            wait = self.pacer.wait_s()
            if wait > 0 and self.store.queue_size():
                if not self._pacing:
                    # Counted once per pause, not once per poll while paused.
                    self._pacing = True
                    self._count("rate_limit_waits")
                return wait
            self._pacing = False
            due = self.store.due(limit=1)
            if not due:
                next_at = self.store.next_due_at()
                return None if next_at is None else max(0.01, next_at.timestamp() - self.store.clock())
            entry, ticket = due[0]
            if self._post_one(entry, ticket):
                posted += 1
        return 0.0

    def _post_one(self, entry: Any, ticket: Any) -> bool:
        tweet_id = ticket.tweet_id
        if ticket.reply_tweet_id:
            self.store.record_posted(tweet_id, ticket.reply_tweet_id)
            return False
        try:
            # in_flight_at set: an earlier attempt may have reached X (crash, timeout, 5xx).
            if entry.in_flight_at is not None:
                found = self.x.find_reply(tweet_id, since=entry.enqueued_at)
                if found:
                    self._count("replies_recovered")
                    self.store.record_posted(tweet_id, found, note="found on X after an interrupted attempt")
                    return False
            self.store.mark_in_flight(tweet_id)
            reply_id = self.x.post_reply(ticket.reply_text, tweet_id)
        except RateLimited as exc:
            self._count("retries")
            self._count("rate_limit_waits")
            now = self.store.clock()
            wait = (exc.reset_at - now + 1) if exc.reset_at else self._backoff(entry.attempts + 1)
            # A 429 means this attempt posted nothing; an older ambiguous attempt still needs a check.
            self.store.defer(
                tweet_id, self._later(max(1.0, wait)), str(exc), clear_in_flight=entry.in_flight_at is None
            )
            log.info("Rate limited posting to %s; retry in %.0fs", tweet_id, wait)
            return False
        except Ambiguous as exc:
            self._count("retries")
            self.store.defer(tweet_id, self._later(self._backoff(entry.attempts + 1)), str(exc), clear_in_flight=False)
            log.info("Posting to %s failed ambiguously (%s); will check X before retrying", tweet_id, exc)
            return False
        except DuplicateContent as exc:
            found = self._safe_find(tweet_id, entry.enqueued_at)
            if found:
                self.store.record_posted(tweet_id, found, note="X reported duplicate content; reply found")
            else:
                self.store.drop_from_queue(tweet_id, f"refused by X: {exc}")
            return False
        except Rejected as exc:
            self._count("replies_rejected")
            self.store.drop_from_queue(tweet_id, f"refused by X: {exc}")
            log.warning("X refused the reply to %s: %s", tweet_id, exc)
            return False
        self.store.record_posted(tweet_id, reply_id)
        self._count("replies_sent")
        return True

    def _safe_find(self, tweet_id: str, since: _dt.datetime) -> str | None:
        try:
            return self.x.find_reply(tweet_id, since=since)
        except XApiError:
            return None


def _deadletter_value(value: bytes | None, reason: str, clock: Callable[[], float]) -> bytes:
    record: dict[str, Any] = {"error": reason, "stage": "dispatch"}
    if value is None:
        record["original"] = None
    else:
        try:
            record["original"] = value.decode("utf-8")
            record["original_encoding"] = "utf-8"
        except UnicodeDecodeError:
            record["original"] = base64.b64encode(value).decode("ascii")
            record["original_encoding"] = "base64"
    record["time"] = _dt.datetime.fromtimestamp(clock(), tz=_dt.UTC).isoformat()
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def outbox_lag(consumer: Any) -> int | None:
    """Records in the assigned outbox partitions not yet consumed (None before assignment)."""
    assignment = consumer.assignment()
    if not assignment:
        return None
    lag = 0
    for tp in consumer.position(assignment):
        low, high = consumer.get_watermark_offsets(tp, cached=False, timeout=5)
        position = tp.offset if tp.offset >= 0 else low
        lag += max(0, high - position)
    return lag


def run(
    config: Mapping[str, Any],
    mode: str | None = None,
    *,
    store: TicketStore | None = None,
    x: XClient | None = None,
    stop: threading.Event | None = None,
    exit_when_idle_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Consume the outbox and post replies until ``stop`` is set (or idle for ``exit_when_idle_s``).

    Returns the counts of this run (tickets_created, outbox_duplicates, outbox_deadletter,
    replies_sent, retries, rate_limit_waits, ...).
    """
    from sparktweet import kafka_io

    settings = DispatchSettings.from_config(config, mode)
    store = store or TicketStore.from_config(config)
    if settings.mode != "dry-run" and x is None:
        x = XClient.from_env(timeout=settings.x_timeout_s, api_base=settings.api_base)
        _, username = x.me()
        # X allows replies only to posts that mention the replying account itself.
        settings.accounts = (username,)
    stop = stop or threading.Event()
    producer = kafka_io.producer(config)
    deadletter_topic = kafka_io.topic_name(config, "deadletter")

    def to_deadletter(value: bytes | None, key: bytes | None, reason: str) -> None:
        producer.produce(deadletter_topic, key=key, value=_deadletter_value(value, reason, store.clock))
        producer.poll(0)

    dispatcher = Dispatcher(store, settings, x=x, deadletter=to_deadletter)
    consumer = kafka_io.consumer(config, settings.group_id)
    consumer.subscribe([kafka_io.topic_name(config, "outbox")])
    idle_since = time.monotonic()
    log.info("Dispatcher running in %s mode for @%s", settings.mode, ", @".join(settings.accounts) or "?")
    try:
        while not stop.is_set():
            messages = consumer.consume(num_messages=settings.batch_size, timeout=settings.poll_s)
            handled = 0
            for msg in messages:
                if msg.error():
                    log.warning("Kafka error while reading the outbox: %s", msg.error())
                    continue
                dispatcher.handle(msg.value(), msg.key())
                handled += 1
            if handled:
                # Dead letters must be durable before their offsets are committed.
                if producer.flush(30):
                    raise kafka_io.KafkaError("Dead-letter records were not delivered; not committing offsets.")
                consumer.commit(asynchronous=False)
            lag = outbox_lag(consumer)
            if lag is not None:
                store.set_gauge("outbox_lag", lag)
            wait = dispatcher.drain()
            # Not idle before partitions are assigned: a group join takes a few seconds.
            busy = bool(handled) or wait is not None or lag is None or bool(lag)
            if busy:
                idle_since = time.monotonic()
            elif exit_when_idle_s is not None and time.monotonic() - idle_since >= exit_when_idle_s:
                break
            if not handled and wait:
                sleep(min(wait, settings.poll_s))
    finally:
        consumer.close()
        producer.flush(10)
    return dict(dispatcher.stats)

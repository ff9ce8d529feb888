"""Ingest: the X filtered stream (tweepy ``StreamingClient``) -> canonical records -> ``tweets.raw``.

No pyspark here. The flow:

1. **Rules** (:func:`build_rules`, :func:`sync_rules`): the brand's handles (``brand.handles``:
   ``@united OR @delta ...``) and keyword rules (``ingest.keywords`` together with the handles as
   words), packed into as few rules as fit ``ingest.max_rule_length``, tagged ``sparktweet:...``.
   At start the stream's rules are made equal to these: stale ``sparktweet:`` rules are deleted,
   missing ones added, rules other tools added are left alone.
2. **Stream**: one connection (X allows one), tweepy's own reconnect policy (X's guidelines:
   linear backoff for network errors, exponential for HTTP errors, at least a minute after 429),
   and around it an outer loop with exponential backoff should tweepy give up.
3. **Records** (:func:`tweet_record`): each payload becomes a canonical record (DESIGN.md) with
   ``source`` ``x-stream``; the long-post text (``note_tweet``) wins over the truncated one;
   ``author_username`` comes from the ``includes.users`` expansion. Produced with the idempotent
   producer of :mod:`sparktweet.kafka_io`, keyed by tweet_id, with delivery callbacks. A payload
   that is not JSON or not a tweet goes to ``tweets.deadletter`` (stage ``ingest``) with the reason;
   X's own error messages in the stream (e.g. operational disconnects) are logged.
4. **Shutdown**: SIGTERM/SIGINT (or :meth:`Ingestor.stop`) disconnects the stream at once (the
   blocked read is shut down, not waited for until the next keep-alive), then flushes the producer.

The bearer token comes from the environment only (``X_BEARER_TOKEN``, or the variable named by
``ingest.bearer_token_env``). ``x.api_base`` sends tweepy's requests to another origin (a proxy, or
the local fake X API in the tests); tweepy's HTTP code runs unchanged.

Examples
--------
>>> from sparktweet.config import load_config
>>> rules = build_rules(load_config(overrides=["brand.handles=[united, delta]", "ingest.keywords=[lost bag]"]))
>>> [r.value for r in rules]
['(@united OR @delta) -is:retweet', '("lost bag") (united OR delta) -is:retweet']
>>> run_ingest(load_config())  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import tweepy
from requests.adapters import HTTPAdapter

from sparktweet import kafka_io
from sparktweet.config import get, secret
from sparktweet.errors import ConfigError, InputError

log = logging.getLogger(__name__)

TWEEPY_HOST = "https://api.twitter.com"
RULE_TAG = "sparktweet"
DEFAULT_TOKEN_ENV = "X_BEARER_TOKEN"
TWEET_FIELDS = ["created_at", "lang", "author_id", "entities", "referenced_tweets", "note_tweet"]


@dataclass
class IngestStats:
    """Counters of one ingest run."""

    connects: int = 0
    received: int = 0
    produced: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    deadlettered: int = 0
    stream_errors: int = 0
    restarts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _XAdapter(HTTPAdapter):
    """Gives every request a timeout (tweepy sets none for the rules API) and optionally sends it
    to ``base`` instead of tweepy's fixed host; keeps the live stream response so that a stop can
    shut its socket down."""

    def __init__(self, base: str | None, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.target: tuple[str, str] | None = None
        self.last_stream: requests.Response | None = None
        if base:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"x.api_base must be an http(s) origin like http://127.0.0.1:8081, found {base!r}.")
            self.target = (parts.scheme, parts.netloc)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self.target is not None:
            parts = urlsplit(request.url)
            request.url = urlunsplit((*self.target, parts.path, parts.query, parts.fragment))
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        response = super().send(request, **kwargs)
        if kwargs.get("stream"):
            self.last_stream = response
        return response


def _quote(term: str) -> str:
    term = term.strip()
    return f'"{term}"' if any(c.isspace() for c in term) else term


def _pack(terms: list[str], template: str, max_len: int) -> list[str]:
    """Group ``terms`` into ``template.format(" OR ".join(group))`` values of at most ``max_len`` characters."""
    rules: list[str] = []
    group: list[str] = []
    for term in terms:
        candidate = template.format(" OR ".join([*group, term]))
        if group and len(candidate) > max_len:
            rules.append(template.format(" OR ".join(group)))
            group = [term]
        else:
            group.append(term)
        if len(template.format(term)) > max_len:
            raise ConfigError(f"The stream rule term {term!r} alone is longer than ingest.max_rule_length ({max_len}).")
    if group:
        rules.append(template.format(" OR ".join(group)))
    return rules


def build_rules(config: Mapping[str, Any]) -> list[tweepy.StreamRule]:
    """The filtered-stream rules for the brand: handle mentions, keywords with the brand, extra rules.

    Config: ``brand.handles``, ``ingest.keywords``, ``ingest.rules`` (extra raw rule values),
    ``ingest.rule_suffix`` (default ``-is:retweet``), ``ingest.max_rule_length`` (default 512, X's
    limit on the basic tiers).
    """
    handles = [str(h).lstrip("@").strip() for h in get(config, "brand.handles", []) or [] if str(h).strip()]
    keywords = [str(k) for k in get(config, "ingest.keywords", []) or [] if str(k).strip()]
    extra = [str(r) for r in get(config, "ingest.rules", []) or [] if str(r).strip()]
    suffix = str(get(config, "ingest.rule_suffix", "-is:retweet") or "").strip()
    max_len = int(get(config, "ingest.max_rule_length", 512))
    if not handles and not extra:
        raise ConfigError("No stream rules: set brand.handles (the brand's X accounts) or ingest.rules.")
    tail = f" {suffix}" if suffix else ""
    values = _pack([f"@{h}" for h in handles], "({})" + tail, max_len) if handles else []
    if keywords:
        if not handles:
            raise ConfigError("ingest.keywords are combined with brand.handles, which is empty.")
        brand = "(" + " OR ".join(handles) + ")"
        values += _pack([_quote(k) for k in keywords], "({}) " + brand + tail, max_len)
    values += extra
    for value in values:
        if len(value) > max_len:
            raise ConfigError(f"Stream rule {value!r} is longer than ingest.max_rule_length ({max_len}).")
    return [tweepy.StreamRule(value=v, tag=f"{RULE_TAG}:{i}") for i, v in enumerate(values, 1)]


def sync_rules(client: tweepy.StreamingClient, rules: list[tweepy.StreamRule]) -> tuple[int, int]:
    """Make the stream's ``sparktweet:`` rules equal to ``rules``; returns (added, deleted)."""
    current = client.get_rules().data or []
    wanted = {r.value for r in rules}
    ours = [r for r in current if (r.tag or "").startswith(RULE_TAG + ":")]
    stale = [r.id for r in ours if r.value not in wanted]
    present = {r.value for r in current}
    missing = [r for r in rules if r.value not in present]
    if stale:
        client.delete_rules(stale)
    if missing:
        response = client.add_rules(missing)
        errors = getattr(response, "errors", None) or []
        if errors:
            raise ConfigError(f"X rejected stream rules: {errors}")
    log.info("stream rules: %d wanted, %d added, %d stale deleted", len(rules), len(missing), len(stale))
    return len(missing), len(stale)


def tweet_record(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A filtered-stream payload (``{"data": {...}, "includes": {...}}``) as a canonical tweet record.

    Raises :class:`~sparktweet.errors.InputError` when the payload holds no tweet with an id and text.

    Examples
    --------
    >>> tweet_record({"data": {"id": "1861", "text": "@united hi", "author_id": "7",
    ...               "entities": {"mentions": [{"username": "united"}]}},
    ...               "includes": {"users": [{"id": "7", "username": "ana"}]}})
    {'tweet_id': '1861', 'text': '@united hi', 'author_id': '7', 'author_username': 'ana', 'mentions': ['united'], 'source': 'x-stream'}
    """
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise InputError(f"Stream payload has no tweet 'data' object (keys {sorted(payload)}).")
    note = data.get("note_tweet")
    text = note.get("text") if isinstance(note, Mapping) and isinstance(note.get("text"), str) else data.get("text")
    record: dict[str, Any] = {"tweet_id": data.get("id"), "text": text}
    if data.get("author_id") is not None:
        record["author_id"] = str(data["author_id"])
    users = (payload.get("includes") or {}).get("users") or []
    for user in users:
        if isinstance(user, Mapping) and str(user.get("id")) == str(data.get("author_id")) and user.get("username"):
            record["author_username"] = user["username"]
            break
    for key in ("created_at", "lang"):
        if data.get(key):
            record[key] = data[key]
    for ref in data.get("referenced_tweets") or []:
        if isinstance(ref, Mapping) and ref.get("type") == "replied_to" and ref.get("id"):
            record["in_reply_to_tweet_id"] = str(ref["id"])
    mentions = ((data.get("entities") or {}).get("mentions")) or []
    handles = [m["username"] for m in mentions if isinstance(m, Mapping) and isinstance(m.get("username"), str)]
    if handles:
        record["mentions"] = handles
    record["source"] = "x-stream"
    # Raises InputError without a usable id or text (kafka_io's checks are the canonical ones).
    kafka_io.encode_tweet(record)
    return record


class TweetStream(tweepy.StreamingClient):
    """tweepy's ``StreamingClient`` that hands every raw payload to ``handler`` and never raises from it."""

    def __init__(self, bearer_token: str, handler: Any, stats: IngestStats, **kwargs: Any) -> None:
        super().__init__(bearer_token, **kwargs)
        self._handler = handler
        self._stats = stats

    def on_data(self, raw_data: bytes) -> None:
        # tweepy ends the whole stream when on_data raises; a bad payload must not do that.
        try:
            self._handler(raw_data)
        except Exception:
            log.exception("could not handle a stream payload")

    def on_connect(self) -> None:
        self._stats.connects += 1
        log.info("connected to the X filtered stream")

    def on_request_error(self, status_code: int) -> None:
        self._stats.stream_errors += 1
        log.warning("X filtered stream answered HTTP %d; tweepy reconnects with backoff", status_code)

    def on_connection_error(self) -> None:
        self._stats.stream_errors += 1
        log.warning("X filtered stream connection dropped or timed out; reconnecting")

    def on_closed(self, response: Any) -> None:
        log.info("X closed the stream connection; reconnecting")


class Ingestor:
    """Runs the filtered stream into Kafka; see the module docstring.

    Parameters
    ----------
    config
        The sparktweet config (``brand``, ``ingest``, ``kafka`` and ``x`` sections).
    producer
        A confluent-kafka producer (default: :func:`sparktweet.kafka_io.producer`).
    bearer_token
        Overrides the environment variable (tests); never read from config files.
    """

    def __init__(self, config: Mapping[str, Any], producer: Any = None, bearer_token: str | None = None) -> None:
        self.config = config
        self.stats = IngestStats()
        token_env = str(get(config, "ingest.bearer_token_env", DEFAULT_TOKEN_ENV))
        self.bearer_token = bearer_token or secret(token_env)
        self.producer = producer or kafka_io.producer(config)
        self.raw_topic = kafka_io.topic_name(config, "raw")
        self.deadletter_topic = kafka_io.topic_name(config, "deadletter")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stream = TweetStream(
            self.bearer_token,
            self.handle,
            self.stats,
            max_retries=float(get(config, "ingest.max_retries", float("inf"))),
            chunk_size=int(get(config, "ingest.chunk_size", 512)),
        )
        self.adapter = _XAdapter(get(config, "x.api_base"), timeout=float(get(config, "ingest.http_timeout_s", 30)))
        self.stream.session.mount(TWEEPY_HOST, self.adapter)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is None:
                self.stats.delivered += 1
            else:
                self.stats.delivery_failures += 1
        if err is not None:
            log.error("tweet %r was not delivered to %s: %s", msg.key(), msg.topic(), err.str())

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def deadletter(self, raw: bytes, reason: str) -> None:
        """Send a payload that is not a tweet to the dead-letter topic with ``reason`` (stage ``ingest``)."""
        try:
            original, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            original, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        value = {
            "original": original,
            "original_encoding": encoding,
            "original_bytes": len(raw),
            "error": reason,
            "stage": "ingest",
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "topic": None,
        }
        self._produce(self.deadletter_topic, None, json.dumps(value, ensure_ascii=False).encode("utf-8"))
        self.stats.deadlettered += 1
        log.warning("dead-lettered a stream payload: %s", reason)

    def handle(self, raw: bytes) -> str:
        """Handle one stream payload; returns ``produced``, ``deadletter`` or ``ignored`` (X notices)."""
        self.stats.received += 1
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.deadletter(raw, f"stream payload is not UTF-8 JSON: {exc}")
            return "deadletter"
        if not isinstance(payload, dict):
            self.deadletter(raw, f"stream payload is a JSON {type(payload).__name__}, expected an object")
            return "deadletter"
        if "data" not in payload and payload.get("errors"):
            log.warning("X stream message: %s", json.dumps(payload["errors"])[:500])
            return "ignored"
        try:
            record = tweet_record(payload)
        except InputError as exc:
            self.deadletter(raw, str(exc))
            return "deadletter"
        self._produce(self.raw_topic, kafka_io.tweet_key(record), kafka_io.encode_tweet(record))
        self.stats.produced += 1
        return "produced"

    def stop(self, *_: Any) -> None:
        """Disconnect now and end :meth:`run` (safe from a signal handler or another thread)."""
        self._stop.set()
        self.stream.disconnect()
        response = self.adapter.last_stream
        shutdown = getattr(getattr(response, "raw", None), "shutdown", None)
        if shutdown is not None:
            # Unblocks the stream thread's read instead of waiting for the next keep-alive (~20 s).
            try:
                shutdown()
            except Exception:  # the connection may already be gone
                log.debug("could not shut the stream socket down", exc_info=True)

    def run(self, max_seconds: float | None = None, sync: bool = True) -> IngestStats:
        """Sync the rules, stream until stopped (or ``max_seconds``), flush; returns the counters."""
        began = time.monotonic()
        backoff = float(get(self.config, "ingest.backoff_s", 5))
        backoff_max = float(get(self.config, "ingest.backoff_max_s", 320))
        flush_timeout = float(get(self.config, "ingest.flush_timeout_s", 30))
        thread: threading.Thread | None = None
        try:
            if sync:
                sync_rules(self.stream, build_rules(self.config))
            while not self._stop.is_set():
                thread = self.stream.filter(
                    threaded=True, expansions=["author_id"], tweet_fields=TWEET_FIELDS, user_fields=["username"]
                )
                while thread.is_alive() and not self._stop.is_set():
                    if max_seconds is not None and time.monotonic() - began >= max_seconds:
                        self.stop()
                        break
                    self._stop.wait(0.2)
                    self.producer.poll(0)
                if self._stop.is_set():
                    break
                # tweepy gave up (max_retries) or met an unexpected error: reconnect after a pause.
                self.stats.restarts += 1
                log.warning("the X stream ended; reconnecting in %.0fs", backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, backoff_max)
        finally:
            self.stream.disconnect()
            if thread is not None:
                thread.join(timeout=10)
            remaining = self.producer.flush(flush_timeout)
            if remaining:
                log.error("%d records were not delivered within %.0fs of shutting down", remaining, flush_timeout)
                self.stats.delivery_failures += remaining
        log.info("ingest done: %s", self.stats.as_dict())
        return self.stats


def run_ingest(
    config: Mapping[str, Any],
    max_seconds: float | None = None,
    handle_signals: bool = True,
    bearer_token: str | None = None,
    producer: Any = None,
) -> IngestStats:
    """Run the ingest until SIGTERM/SIGINT (or ``max_seconds``); returns its counters."""
    ingestor = Ingestor(config, producer=producer, bearer_token=bearer_token)
    previous: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, ingestor.stop)
    try:
        return ingestor.run(max_seconds=max_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

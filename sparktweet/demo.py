"""``sparktweet demo``: the whole streaming flow on one machine, on embedded defaults.

1. start the local Kafka broker (:mod:`sparktweet.kafka_broker`; left running if it already was),
2. replay the bundled sample tweets into ``tweets.raw`` (:mod:`sparktweet.replay`),
3. stream them through the shipped model until they are all processed
   (:func:`sparktweet.streaming.run_stream` with an ``available-now`` trigger that starts at the
   offsets the replay began at, so earlier runs' records are not read again),
4. show what came out: the Parquet rows, the ``replies.outbox`` records with their ticket IDs and
   reply texts, and the dead letters with their reasons (only this run's records),
5. run the reply dispatcher in ``dry-run`` mode until the outbox is drained (tickets into the
   ticket store, the replies it would post into ``var/dry_run_replies.jsonl``),
6. start the web app (waitress) on the port of ``tickets.tracking_url``, fetch one ticket's
   tracking page to check it, and print that URL and the agent dashboard's, with a one-off agent
   token unless ``$SPARKTWEET_AGENT_TOKEN`` is set.

Examples
--------
>>> from sparktweet.config import load_config
>>> result = run_demo(load_config(), "models/default")  # doctest: +SKIP
>>> print(format_demo(result))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparktweet import kafka_io
from sparktweet.replay import ReplaySummary, replay

log = logging.getLogger(__name__)
#: Errors a broker gives while it settles after a start (besides librdkafka's retriable ones).
_SETTLING = {"NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE", "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_PARTITION"}


@dataclass
class DemoResult:
    """What one demo run produced."""

    replay: ReplaySummary
    stream: dict[str, Any]
    output: str
    parquet_rows: int
    by_sentiment: dict[str, int]
    by_category: dict[str, int]
    outbox: list[dict[str, Any]] = field(default_factory=list)
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    show: int = 10
    dispatch: dict[str, int] = field(default_factory=dict)
    store_url: str = ""


def end_offsets(config: Mapping[str, Any], topic: str, timeout: float = 10.0) -> dict[int, int]:
    """Partition -> current end offset (high watermark) of ``topic``."""
    from confluent_kafka import KafkaException, TopicPartition

    c = kafka_io.consumer(config, group_id="sparktweet-demo-offsets")
    deadline = time.monotonic() + 6 * timeout
    try:
        while True:
            try:
                partitions = c.list_topics(topic, timeout=timeout).topics[topic].partitions
                return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in sorted(partitions)}
            except KafkaException as exc:
                # Just after a restart with existing data the broker answers before it leads its
                # partitions again (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE): wait for it.
                if not exc.args[0].retriable() and exc.args[0].name() not in _SETTLING or time.monotonic() > deadline:
                    raise
                log.info("Waiting for %s to have partition leaders: %s", topic, exc.args[0].str())
                time.sleep(0.5)
    finally:
        c.close()


def read_since(config: Mapping[str, Any], topic: str, since: Mapping[int, int], timeout: float = 30.0) -> list[Any]:
    """The messages of ``topic`` from ``since`` (partition -> offset) up to its current end."""
    from confluent_kafka import TopicPartition

    until = end_offsets(config, topic)
    todo = {p: end for p, end in until.items() if end > since.get(p, 0)}
    if not todo:
        return []
    c = kafka_io.consumer(config, group_id="sparktweet-demo-reader")
    out = []
    try:
        c.assign([TopicPartition(topic, p, since.get(p, 0)) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
            if msg.offset() + 1 >= todo.get(msg.partition(), 0):
                todo.pop(msg.partition(), None)
    finally:
        c.close()
    return out


def run_demo(
    config: Mapping[str, Any],
    model_path: str,
    sample: str | None = None,
    workdir: str = "var/demo-stream",
    keep_broker: bool = False,
    show: int = 10,
    dispatch: bool = True,
) -> DemoResult:
    """Broker up, replay ``sample``, stream it through ``model_path``, collect what came out, and
    (``dispatch``) let the dry-run dispatcher turn the outbox into tickets."""
    from pyspark.sql import functions as F

    from sparktweet import kafka_broker
    from sparktweet.cli import SAMPLE
    from sparktweet.session import build_session
    from sparktweet.streaming import run_stream
    from sparktweet.training import load_model

    began = time.monotonic()
    spark = build_session(config, app_name="sparktweet-demo")
    model = load_model(model_path)  # fails before the broker starts when there is no model
    already_running = kafka_broker.status(config).reachable
    if already_running:
        kafka_io.ensure_topics(config)  # a broker someone else runs: use it, leave it running
    else:
        kafka_broker.start(config)
    try:
        topics = {name: kafka_io.topic_name(config, name) for name in ("raw", "outbox", "deadletter")}
        start = {name: end_offsets(config, topic) for name, topic in topics.items()}
        summary = replay(config, sample or SAMPLE, progress=False)
        output, checkpoint = os.path.join(workdir, "tweets"), os.path.join(workdir, "checkpoint")
        shutil.rmtree(workdir, ignore_errors=True)
        job = run_stream(
            spark, config, None, output, checkpoint, model=model, trigger="available-now",
            starting_offsets=json.dumps({topics["raw"]: {str(p): o for p, o in start["raw"].items()}}),
            # 40 tweets: one task, so one set of Python workers loads the models.
            partitions=1,
        )
        rows, by_sentiment, by_category = 0, {}, {}
        if os.path.isdir(output):
            scored = spark.read.parquet(output)
            rows = scored.count()
            by_sentiment = {r[0]: r[1] for r in scored.where(F.col("sentiment").isNotNull()).groupBy("sentiment").count().collect()}
            by_category = {r[0]: r[1] for r in scored.where(F.col("category").isNotNull()).groupBy("category").count().collect()}
        outbox = [json.loads(m.value()) for m in read_since(config, topics["outbox"], start["outbox"])]
        dead = [json.loads(m.value()) for m in read_since(config, topics["deadletter"], start["deadletter"])]
        dispatched: dict[str, int] = {}
        if dispatch:
            from sparktweet import dispatcher
            from sparktweet.store import TicketStore

            store = TicketStore.from_config(config)
            try:
                # Idle once the group's partitions are assigned and nothing is left to read.
                dispatched = dispatcher.run(config, "dry-run", store=store, exit_when_idle_s=2.0)
            finally:
                store.close()
    finally:
        if not keep_broker and not already_running:
            kafka_broker.stop(config)
    return DemoResult(
        replay=summary, stream=job.stats.as_dict(), output=output, parquet_rows=rows,
        by_sentiment=dict(Counter(by_sentiment).most_common()), by_category=dict(Counter(by_category).most_common()),
        outbox=sorted(outbox, key=lambda r: r.get("tweet_id", "")), deadletters=dead,
        seconds=time.monotonic() - began, show=show, dispatch=dispatched, store_url=_redacted_store_url(config),
    )


def _redacted_store_url(config: Mapping[str, Any]) -> str:
    from sqlalchemy.engine import make_url

    from sparktweet.store import url_from_config

    return make_url(url_from_config(config)).render_as_string(hide_password=True)


def _short(text: str | None, width: int = 90) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def format_demo(result: DemoResult) -> str:
    """The demo's report for the terminal."""
    r, s = result.replay, result.stream
    lines = [
        f"Replayed {r.sent} tweets from {os.path.basename(r.path)} into {r.topic} ({r.invalid} deliberately broken).",
        (f"Streamed them through the model in {s['batches']} micro-batch(es): {s['rows']} records, "
        f"{s['parquet_rows']} scored, {s['outbox_records']} tickets, {s['deadletter_records']} dead letters "
        f"({result.seconds:.0f}s in all, most of it starting Python workers and loading models)."),
        "",
        f"Parquet: {result.parquet_rows} rows in {result.output} (partitioned by date)",
        "  sentiment: " + (", ".join(f"{k} {v}" for k, v in result.by_sentiment.items()) or "-"),
        "  category:  " + (", ".join(f"{k} {v}" for k, v in result.by_category.items()) or "-"),
        "",
        f"replies.outbox: {len(result.outbox)} records (showing {min(result.show, len(result.outbox))})",
    ]
    for rec in result.outbox[: result.show]:
        lines.append(f"  {rec.get('ticket_id')}  [{rec.get('priority') or '-'}] {rec.get('category')} / {rec.get('sentiment')}"
                     f"  @{rec.get('author_username') or '?'}: {_short(rec.get('text'), 70)}")
        lines.append(f"      reply: {_short(rec.get('reply_text'), 200)}")
    lines += ["", f"tweets.deadletter: {len(result.deadletters)} records"]
    for rec in result.deadletters[: result.show]:
        where = f"{rec.get('topic')}[{rec.get('partition')}]@{rec.get('offset')}"
        lines.append(f"  [{rec.get('stage')}] {rec.get('error')}  ({where}: {_short(rec.get('original'), 60)})")
    if result.dispatch:
        d = result.dispatch
        lines += ["", (f"Dispatcher (dry-run): {d.get('tickets_created', 0)} new tickets in {result.store_url}, "
                       f"{d.get('outbox_duplicates', 0)} already known, {d.get('dry_run_replies', 0)} replies written to "
                       f"the dry-run file instead of posted, {d.get('outbox_deadletter', 0)} dead-lettered")]
    return "\n".join(lines)


# --- the web app ------------------------------------------------------------------------------


@dataclass
class WebApp:
    """The Flask app served by waitress in a background thread (:func:`start_web`)."""

    base_url: str
    token: str
    token_generated: bool
    server: Any
    thread: Any

    def stop(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


def _port_of(url: str, default: int = 8080) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


def start_web(config: Mapping[str, Any], port: int | None = None) -> WebApp:
    """Serve the ticket tracking pages and the dashboard on the host and port of
    ``tickets.tracking_url`` (the links in the replies), or on a free port when that one is taken."""
    import secrets
    import threading

    from waitress import create_server

    from sparktweet.config import get
    from sparktweet.store import TicketStore
    from sparktweet.web import AGENT_TOKEN_ENV, create_app

    host, wanted = _port_of(str(get(config, "tickets.tracking_url", "")))
    token = os.environ.get(AGENT_TOKEN_ENV)
    generated = not token
    token = token or secrets.token_urlsafe(24)
    app = create_app({"SPARKTWEET": dict(config), "STORE": TicketStore.from_config(config), "AGENT_TOKEN": token})
    try:
        server = create_server(app, host=host, port=wanted if port is None else port, threads=4)
    except OSError as exc:
        log.warning("Port %d is taken (%s): serving on a free port; the links in the replies point at %d.", wanted, exc, wanted)
        server = create_server(app, host=host, port=0, threads=4)
    thread = threading.Thread(target=server.run, name="sparktweet-web", daemon=True)
    thread.start()
    return WebApp(f"http://{host}:{server.effective_port}", token, generated, server, thread)


def check_tracking_page(url: str, timeout: float = 10.0) -> str:
    """Fetch a ticket's tracking page as JSON; a short status line ("open, 1 step") for the report."""
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = json.loads(resp.read())
    return f"checked: HTTP {resp.status}, status {body.get('status')!r}"


def format_web(result: DemoResult, web: WebApp) -> str:
    """Where to look: one ticket's tracking URL (checked) and the dashboard."""
    first = next((r for r in result.outbox if r.get("ticket_id")), None)
    lines = ["", f"Web app: {web.base_url}/ (waitress)"]
    if first is not None:
        url = f"{web.base_url}/tickets/{first['ticket_id']}"
        lines.append(f"  track a ticket: {url}  ({check_tracking_page(url)})")
    lines.append(f"  agent dashboard: {web.base_url}/dashboard")
    if web.token_generated:
        lines.append(f"  agent token for this run (set SPARKTWEET_AGENT_TOKEN to choose one): {web.token}")
    else:
        lines.append("  agent token: the value of $SPARKTWEET_AGENT_TOKEN")
    return "\n".join(lines)

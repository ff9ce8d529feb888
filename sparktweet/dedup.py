"""The stream job's duplicate check on the driver: which record of a tweet_id is accepted.

:class:`FirstSeenStore` remembers, for each tweet_id, the Kafka position (:func:`position`) of the
record that was accepted for it, in a SQLite file next to the query's checkpoint. A micro-batch hands
it the (tweet_id, position, Kafka time) of its valid records and gets back the positions of the
duplicates: every record of a tweet_id except the accepted one. The accepted record is the one
already remembered, or else the batch's lowest position (the first sent: a producer keyed by tweet_id
puts all of an id's records in one partition, in order).

Replays decide the same. Each entry carries the batch that added it, and :meth:`FirstSeenStore.decide`
first removes what batch ``N`` and later ones added before it decides batch ``N``. So a micro-batch that
Spark runs again after a crash (its offsets were not committed) finds the state as it was before that
batch's first run, and accepts the same records; the outbox and Parquet get the same rows again (at
least once), never a second tweet for the same id.

Entries expire ``ttl_s`` of Kafka time after the newest accepted record of an earlier batch (a
watermark that, like Spark's, only moves forward with the data); an expired id is accepted again.
Unlike Spark's ``dropDuplicatesWithinWatermark``, a record older than the watermark whose id is not
remembered is accepted, not dropped.

The file belongs to its checkpoint, since batch ids are the checkpoint's: by default it is inside the
checkpoint folder, so removing the checkpoint removes it. Spark runs batch ``N + 1`` only after batch ``N`` is
committed, so the file is never more than the batch being decided ahead; a file with decisions of a later
batch belongs to another checkpoint (an old ``stream.dedup.path`` with a new or reset checkpoint), and
:meth:`FirstSeenStore.decide` refuses it with :class:`DedupStateError` rather than forget its ids.

Why not Spark's own streaming deduplication (``stream.dedup.store: spark``, still available): it
needs the scored rows shuffled by tweet_id, and both the records and the first-record markers read
that shuffle, so Spark plans, optimizes and generates code for the whole scored plan twice in every
micro-batch. On 2 cores that doubled a paced micro-batch (1,070 against 549 ms; see
docs/stream_latency.md). The driver's store costs one small collect and a SQLite transaction per batch.
Its file is on the driver's local disk: a checkpoint on S3 or HDFS needs ``stream.dedup.path`` on a
local disk that outlives the driver, or the ``spark`` store (state kept in the checkpoint).

Examples
--------
>>> store = FirstSeenStore(":memory:", ttl_s=3600)
>>> store.decide(0, [("11", 0, 1000), ("12", 1, 1000), ("11", 2, 1001)])
[2]
>>> store.decide(1, [("11", 3, 2000)])  # already accepted in batch 0
[3]
>>> store.decide(1, [("11", 3, 2000)])  # batch 1 again (a replay): the same answer
[3]
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Self

from sparktweet.errors import ConfigError

#: Kafka partition in the top bits of a position, the offset below (streaming._position is the same as a Column).
PARTITION_SHIFT = 44
_CHUNK = 500  # ids per SQLite lookup (below SQLite's default limit of host parameters)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS first_seen (
    tweet_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    kafka_ms INTEGER NOT NULL,
    batch_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS first_seen_batch ON first_seen (batch_id);
CREATE INDEX IF NOT EXISTS first_seen_time ON first_seen (kafka_ms);
CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY, max_kafka_ms INTEGER NOT NULL);
"""


class DedupStateError(ConfigError):
    """The duplicate check's file holds decisions of a later batch than the query's: another checkpoint's."""


def position(partition: int, offset: int) -> int:
    """A record's Kafka position as one integer (partition in the top bits)."""
    return (int(partition) << PARTITION_SHIFT) + int(offset)


class FirstSeenStore:
    """tweet_id -> the position of its accepted record, versioned by micro-batch (see the module doc).

    Parameters
    ----------
    path
        SQLite file (created with its folder), or ``":memory:"``.
    ttl_s
        Seconds of Kafka time an id is remembered after the newest accepted record of earlier batches.
    """

    def __init__(self, path: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, found {ttl_s}")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.ttl_ms = path, int(ttl_s * 1000)
        self._lock = threading.Lock()
        # foreachBatch may call from a different thread each batch; the lock serialises the calls.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            # WAL: a commit is one append to the log; NORMAL: durable when the process dies (even by
            # SIGKILL), like the checkpoint's own files on a local disk.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM first_seen").fetchone()[0])

    def watermark_ms(self, batch_id: int | None = None) -> int | None:
        """Kafka time (ms) before which remembered ids have expired, as of ``batch_id`` (default: next)."""
        with self._lock:
            return self._watermark(batch_id)

    def _watermark(self, batch_id: int | None) -> int | None:
        sql, args = "SELECT max(max_kafka_ms) FROM batches", ()
        if batch_id is not None:
            sql, args = sql + " WHERE batch_id < ?", (batch_id,)
        newest = self._db.execute(sql, args).fetchone()[0]
        return None if newest is None else int(newest) - self.ttl_ms

    def decide(self, batch_id: int, records: Iterable[Sequence[object]]) -> list[int]:
        """The positions of the duplicates among ``records`` (tweet_id, position, Kafka time in ms), sorted.

        Remembers the accepted record of each new id, as batch ``batch_id``, in one transaction that is
        committed before this returns. Deciding batch ``N`` first forgets what batches ``N`` and later
        added, so calling it again for the same batch (a replay) gives the same answer.
        """
        by_id: dict[str, list[tuple[int, int]]] = {}
        for tweet_id, pos, kafka_ms in records:
            by_id.setdefault(str(tweet_id), []).append((int(pos), int(kafka_ms)))
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                newest = db.execute("SELECT max(batch_id) FROM batches").fetchone()[0]
                if newest is not None and newest > batch_id:
                    raise DedupStateError(
                        f"The duplicate check's file {self.path} holds decisions of batch {newest}, but the query is at batch "
                        f"{batch_id}: the file belongs to another checkpoint (or the checkpoint was reset). Remove the file "
                        "to start the check over, or set stream.dedup.path to this checkpoint's own file."
                    )
                db.execute("DELETE FROM first_seen WHERE batch_id >= ?", (batch_id,))
                db.execute("DELETE FROM batches WHERE batch_id >= ?", (batch_id,))
                watermark = self._watermark(batch_id)
                known = self._lookup(list(by_id), watermark)
                duplicates: list[int] = []
                added: list[tuple[str, int, int, int]] = []
                for tweet_id, seen in by_id.items():
                    accepted = known.get(tweet_id)
                    if accepted is None:
                        accepted, kafka_ms = min(seen)
                        added.append((tweet_id, accepted, kafka_ms, batch_id))
                    duplicates.extend(p for p, _ in seen if p != accepted)
                if added:
                    # An id remembered before but expired is replaced (INSERT OR REPLACE).
                    db.executemany("INSERT OR REPLACE INTO first_seen VALUES (?, ?, ?, ?)", added)
                    db.execute("INSERT INTO batches VALUES (?, ?)", (batch_id, max(ms for _, _, ms, _ in added)))
                if watermark is not None:
                    # Expired for this batch, so for every later one (the watermark never goes back).
                    db.execute("DELETE FROM first_seen WHERE kafka_ms < ? AND batch_id < ?", (watermark, batch_id))
                    # Of the earlier batches' rows, the watermark (and a replay of this batch) needs only the
                    # newest time: the table stays a few rows long instead of one per batch.
                    db.execute("DELETE FROM batches WHERE batch_id < ? AND max_kafka_ms < ?", (batch_id, watermark + self.ttl_ms))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return sorted(duplicates)

    def _lookup(self, ids: list[str], watermark: int | None) -> dict[str, int]:
        known: dict[str, int] = {}
        floor = -(1 << 62) if watermark is None else watermark
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT tweet_id, position FROM first_seen WHERE tweet_id IN ({marks}) AND kafka_ms >= ?",
                (*chunk, floor),
            )
            known.update((str(t), int(p)) for t, p in rows)
        return known

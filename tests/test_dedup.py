"""The driver's duplicate check (sparktweet.dedup.FirstSeenStore): plain SQLite, no Spark."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from sparktweet.dedup import DedupStateError, FirstSeenStore, position

HOUR_MS = 3_600_000


def test_the_first_record_of_an_id_is_accepted_and_the_rest_are_duplicates(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        # Out of order within the batch: the lowest position wins, not the first listed.
        assert store.decide(0, [("11", 5, 1000), ("12", 1, 1000), ("11", 2, 1000), ("11", 9, 1000)]) == [5, 9]
        assert len(store) == 2
        assert store.decide(1, [("11", 10, 2000), ("13", 11, 2000), ("12", 12, 2000)]) == [10, 12]
        assert store.decide(2, []) == []
        assert store.decide(3, [("13", 20, 3000), ("14", 21, 3000), ("14", 22, 3000)]) == [20, 22]
        assert len(store) == 4


def test_a_replayed_batch_gets_the_same_answer(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        assert store.decide(0, [("11", 0, 1000)]) == []
        batch1 = [("11", 1, 2000), ("12", 2, 2000), ("12", 3, 2000)]
        first = store.decide(1, batch1)
        assert first == [1, 3]
        # Spark runs batch 1 again (its offsets were not committed): what batch 1 added is forgotten
        # first, so record 2 is accepted again rather than called a duplicate of itself.
        assert store.decide(1, batch1) == first
        # A replay may also come back with fewer records (e.g. a smaller maxOffsetsPerTrigger).
        assert store.decide(1, batch1[:1]) == [1]
        assert store.decide(2, batch1[1:]) == [3]


def test_the_state_survives_a_killed_process(tmp_path):
    path = str(tmp_path / "d.sqlite")

    def decide_and_die() -> None:
        store = FirstSeenStore(path, ttl_s=3600)
        store.decide(0, [("11", 0, 1000), ("12", 1, 1000)])
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no clean exit

    proc = multiprocessing.get_context("fork").Process(target=decide_and_die)
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    with FirstSeenStore(path, ttl_s=3600) as store:
        assert store.decide(1, [("11", 2, 2000), ("12", 1, 1000)]) == [2]


def test_ids_expire_a_ttl_after_the_newest_accepted_record(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        assert store.decide(0, [("old", 0, 0)]) == []
        assert store.decide(1, [("new", 1, 2 * HOUR_MS)]) == []
        assert store.watermark_ms() == HOUR_MS
        # "old" (Kafka time 0) is older than the watermark: accepted again, and remembered anew.
        assert store.decide(2, [("old", 2, 2 * HOUR_MS), ("new", 3, 2 * HOUR_MS)]) == [3]
        assert store.decide(3, [("old", 4, 2 * HOUR_MS)]) == [4]
        # A late record whose id is not remembered is accepted (Spark's deduplication would drop it).
        assert store.decide(4, [("late", 5, 10)]) == []
        # Expired entries are deleted, so the file does not grow with the stream.
        assert len(store) == 3


def test_the_batches_table_stays_short(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        for batch in range(200):
            assert store.decide(batch, [(str(batch), batch, 1000 * batch)]) == []
        # The watermark needs only the newest time of the earlier batches, not a row per batch.
        assert store._db.execute("SELECT count(*) FROM batches").fetchone()[0] <= 2
        assert store.watermark_ms() == 199_000 - 3_600_000
        assert store.decide(199, [("199", 199, 199_000), ("5", 500, 199_000)]) == [500]  # a replay decides the same


def test_expiry_replays_the_same(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        store.decide(0, [("a", 0, 0)])
        store.decide(1, [("b", 1, 2 * HOUR_MS)])
        batch = [("a", 2, 2 * HOUR_MS)]
        assert store.decide(2, batch) == []
        assert store.decide(2, batch) == []  # "a" expired before batch 2, on replay too


def test_many_ids_in_one_batch(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        records = [(str(i), position(i % 3, i), 1000) for i in range(5000)]
        assert store.decide(0, records) == []
        again = [(str(i), position(3, i), 2000) for i in range(0, 5000, 7)]
        assert store.decide(1, again) == sorted(p for _, p, _ in again)


def test_a_file_ahead_of_the_query_belongs_to_another_checkpoint(tmp_path):
    with FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=3600) as store:
        store.decide(0, [("11", 0, 1000)])
        store.decide(3, [("12", 1, 1000)])
        assert store.decide(3, [("12", 1, 1000)]) == []  # a replay of the latest batch is fine
        # A new or reset checkpoint starts again at batch 0: refused, and nothing is forgotten.
        with pytest.raises(DedupStateError, match=r"holds decisions of batch 3, but the query is at batch 0"):
            store.decide(0, [("13", 0, 1000)])
        assert len(store) == 2
        assert store.decide(4, [("11", 7, 2000), ("12", 8, 2000)]) == [7, 8]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="ttl_s"):
        FirstSeenStore(str(tmp_path / "d.sqlite"), ttl_s=0)


def test_position_puts_the_partition_above_the_offset():
    assert position(0, 7) == 7
    assert position(1, 0) > position(0, 10**12)

"""What runs inside Python workers: the import-cache invalidation a reused worker pays per task."""

from __future__ import annotations

import gc
import importlib
import sys
import zipfile
import zipimport

import pytest

from sparktweet import workers


def _stock_invalidation(monkeypatch) -> None:
    """Put Python's own zipimporter.invalidate_caches back for one test (restored afterwards): an
    earlier test in this process may have loaded a model, which installs the cheap one."""
    current = zipimport.zipimporter.invalidate_caches
    monkeypatch.setattr(zipimport.zipimporter, "invalidate_caches", getattr(current, "_sparktweet_stock", current))


@pytest.fixture
def zip_on_path(tmp_path, monkeypatch):
    """A zip archive with one module on sys.path; the stock zipimporter method is restored afterwards."""
    archive = tmp_path / "mods.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("st_zip_mod_a.py", "VALUE = 'a'\n")
    _stock_invalidation(monkeypatch)
    monkeypatch.syspath_prepend(str(archive))
    reads: list[str] = []
    stock_read = zipimport._read_directory

    def counting_read(path):
        reads.append(path)
        return stock_read(path)

    monkeypatch.setattr(zipimport, "_read_directory", counting_read)
    yield archive, reads
    for name in ("st_zip_mod_a", "st_zip_mod_b"):
        sys.modules.pop(name, None)


def test_zip_archives_are_reread_only_when_they_change(zip_on_path):
    archive, reads = zip_on_path
    assert importlib.import_module("st_zip_mod_a").VALUE == "a"
    assert isinstance(sys.path_importer_cache[str(archive)], zipimport.zipimporter)

    # The stock method re-reads the archive at every invalidation (PySpark calls it once per task).
    reads.clear()
    importlib.invalidate_caches()
    importlib.invalidate_caches()
    assert reads.count(str(archive)) == 2

    assert workers.cheap_zip_invalidation() is True
    assert workers.cheap_zip_invalidation() is False  # idempotent
    importlib.invalidate_caches()  # the first call per importer reads and remembers the file's stat
    reads.clear()
    for _ in range(5):
        importlib.invalidate_caches()
    assert reads.count(str(archive)) == 0

    # A changed archive is read again, and what it now holds can be imported.
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("st_zip_mod_b.py", "VALUE = 'b'\n")
    importlib.invalidate_caches()
    assert reads.count(str(archive)) == 1
    assert importlib.import_module("st_zip_mod_b").VALUE == "b"


def test_a_removed_archive_is_forgotten_as_before(zip_on_path):
    archive, _ = zip_on_path
    importlib.import_module("st_zip_mod_a")
    workers.cheap_zip_invalidation()
    importlib.invalidate_caches()
    importer = sys.path_importer_cache[str(archive)]
    archive.unlink()
    importer.invalidate_caches()  # the stock method runs: the archive's entries are dropped
    assert importer._files == {}


def test_loading_a_model_in_a_worker_installs_it(monkeypatch):
    _stock_invalidation(monkeypatch)
    monkeypatch.setattr(workers, "_CACHE", {})
    assert workers.cached("test", "/nowhere", lambda path: path.upper()) == "/NOWHERE"
    assert getattr(zipimport.zipimporter.invalidate_caches, "_sparktweet_cheap", False)


def test_cached_freezes_the_heap_after_a_load_and_at_a_few_calls(monkeypatch):
    _stock_invalidation(monkeypatch)
    monkeypatch.setattr(workers, "_CACHE", {})
    monkeypatch.setattr(workers, "_calls", 0)
    frozen_after: list[int] = []
    monkeypatch.setattr(workers, "freeze_heap", lambda: frozen_after.append(workers._calls))
    for _ in range(100):
        workers.cached("test", "/nowhere", lambda path: object())
    assert frozen_after == [0, 1, 4, 16, 64]  # the load (before its call is counted), then calls 1, 4, 16, 64
    workers.cached("test", "/elsewhere", lambda path: object())
    assert frozen_after[-1] == 100  # each load freezes


def test_frozen_objects_are_left_out_of_collections():
    model = [{"weight": i} for i in range(20_000)]
    try:
        count = workers.freeze_heap()
        assert count >= 20_000
        assert not any(o is model for o in gc.get_objects())  # in the permanent generation: no collection walks it
        fresh = [{"batch": i} for i in range(10)]
        assert any(o is fresh for o in gc.get_objects())  # what comes later is collected as usual
    finally:
        gc.unfreeze()


def test_a_reused_spark_worker_keeps_its_loaded_model_frozen(spark):
    def score(batches):
        import gc as worker_gc

        import pandas as pd

        from sparktweet import workers as worker_side

        worker_side.cached("test-frozen", "/model", lambda path: [{"w": i} for i in range(50_000)])
        for batch in batches:
            yield pd.DataFrame({"id": batch["id"], "frozen": worker_gc.get_freeze_count()})

    df = spark.range(0, 40, numPartitions=8).mapInPandas(score, "id long, frozen long")
    rows = df.collect()
    assert len(rows) == 40
    assert min(r.frozen for r in rows) >= 50_000  # every task ran in a worker whose model is frozen

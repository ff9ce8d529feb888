"""What runs inside Python workers: artifact lookup, one cached load per worker, error-aware UDF wiring.

Heavy objects (Keras models, spaCy pipelines, gensim models) are loaded once per Python worker
process and kept in :data:`_CACHE`; with ``spark.python.worker.reuse`` (Spark's default) a worker
serves many tasks with one load.

A reused worker also pays, at the start of every task, for ``importlib.invalidate_caches()``
(PySpark's ``setup_spark_files``). On Python 3.11 that re-reads the central directory of every zip
archive on the worker's path: ``pyspark.zip``, the py4j zip and the spark-core jar (which Spark
puts on the workers' ``PYTHONPATH``), once per cached importer, about 0.45 s a task on an idle
2-core machine. :func:`cheap_zip_invalidation` makes a re-read happen only when the archive
changed; :func:`cached` installs it in every worker that loads a model.
"""

from __future__ import annotations

import os
import threading
import zipimport
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparktweet.persistence import ArtifactRef

_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def resolve_artifact(ref: ArtifactRef) -> str:
    """Local path of a shipped artifact folder inside a worker (or the driver)."""
    try:
        from pyspark import SparkFiles

        shipped = SparkFiles.get(ref.name)
        if os.path.isdir(shipped):
            return shipped
    except Exception:  # noqa: BLE001 - no SparkFiles root outside Spark; fall back to the driver path
        pass
    if os.path.isdir(ref.local_path):
        return ref.local_path
    raise FileNotFoundError(f"Artifact {ref.name} is neither in SparkFiles nor at {ref.local_path}.")


_ZIP_STAT = "_sparktweet_archive_stat"


def _archive_stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def cheap_zip_invalidation() -> bool:
    """Make ``zipimporter.invalidate_caches`` re-read an archive only when its file changed.

    The stock method re-reads the archive's directory on every call; the replacement compares the
    archive's modification time, size and inode with those of this importer's last read, and calls
    the stock method when they differ (or the file is gone). Idempotent; returns True when this
    call installed it. Python versions whose zipimporter has no ``invalidate_caches`` are left alone.
    """
    stock = getattr(zipimport.zipimporter, "invalidate_caches", None)
    if stock is None or getattr(stock, "_sparktweet_cheap", False):
        return False

    def invalidate_caches(self: zipimport.zipimporter) -> None:
        now = _archive_stat(self.archive)
        if now is not None and getattr(self, _ZIP_STAT, None) == now:
            return
        stock(self)
        setattr(self, _ZIP_STAT, now)

    invalidate_caches._sparktweet_cheap = True  # type: ignore[attr-defined]
    invalidate_caches._sparktweet_stock = stock  # type: ignore[attr-defined]
    invalidate_caches.__doc__ = stock.__doc__
    zipimport.zipimporter.invalidate_caches = invalidate_caches  # type: ignore[method-assign]
    return True


def cached(kind: str, path: str, loader: Callable[[str], Any]) -> Any:
    """Load ``path`` with ``loader`` once per process and return the cached object afterwards.

    The first call in a process also installs :func:`cheap_zip_invalidation`.
    """
    key = (kind, path)
    obj = _CACHE.get(key)
    if obj is None:
        with _LOCK:
            obj = _CACHE.get(key)
            if obj is None:
                cheap_zip_invalidation()
                obj = loader(path)
                _CACHE[key] = obj
    return obj


def error_column(df: DataFrame, error_col: str) -> Column:
    """The existing error column, or a null string when the frame has none yet."""
    return F.col(error_col) if error_col in df.columns else F.lit(None).cast("string")


def with_struct_outputs(
    df: DataFrame,
    result: Column,
    outputs: Sequence[str],
    error_col: str,
    field_names: Sequence[str] | None = None,
) -> DataFrame:
    """Expand a UDF's struct result into ``outputs`` columns and merge its ``error`` field.

    The struct's fields are, in order, the values for ``outputs`` (named ``field_names``, defaulting
    to ``outputs``) and a string ``error``. The first error a row gets is kept.
    """
    names = list(field_names or outputs)
    tmp = f"__sparktweet_{outputs[0]}"
    out = df.withColumn(tmp, result)
    previous = error_column(out, error_col)
    out = out.withColumns({col: F.col(f"{tmp}.{name}") for col, name in zip(outputs, names)})
    out = out.withColumn(error_col, F.coalesce(previous, F.col(f"{tmp}.error")))
    return out.drop(tmp)

"""What runs inside Python workers: artifact lookup, one cached load per worker, error-aware UDF wiring.

Heavy objects (Keras models, spaCy pipelines, gensim models) are loaded once per Python worker
process and kept in :data:`_CACHE`; with ``spark.python.worker.reuse`` (Spark's default) a worker
serves many tasks with one load.
"""

from __future__ import annotations

import os
import threading
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


def cached(kind: str, path: str, loader: Callable[[str], Any]) -> Any:
    """Load ``path`` with ``loader`` once per process and return the cached object afterwards."""
    key = (kind, path)
    obj = _CACHE.get(key)
    if obj is None:
        with _LOCK:
            obj = _CACHE.get(key)
            if obj is None:
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

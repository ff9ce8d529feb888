"""Build the SparkSession the jobs and tests use, with the project's JVM jars and Python settings."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

from sparktweet.config import PROJECT_ROOT, get

JARS_DIR = PROJECT_ROOT / "jars"


def local_jars() -> list[str]:
    """Jars copied by ``mvn dependency:copy-dependencies`` into ``jars/`` (never fetched at run time)."""
    return sorted(glob.glob(str(JARS_DIR / "*.jar")))


def build_session(config: Mapping[str, Any] | None = None, app_name: str | None = None, **extra: str) -> SparkSession:
    """Create or reuse a SparkSession configured from the sparktweet config.

    ``PYSPARK_PYTHON`` is pinned to this interpreter so Python workers see the same environment
    as the driver.
    """
    config = config or {}
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Python workers inherit this: keeps TensorFlow's C++ start-up chatter out of job logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    builder = (
        SparkSession.builder.appName(app_name or get(config, "spark.app_name", "sparktweet"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(get(config, "spark.arrow_batch_size", 8192)))
        .config("spark.sql.shuffle.partitions", str(get(config, "spark.shuffle_partitions", 4)))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    master = os.environ.get("SPARK_MASTER") or get(config, "spark.master")
    if master and not os.environ.get("SPARK_SUBMITTED"):
        builder = builder.master(str(master))
    jars = local_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    for key, value in {**(get(config, "spark.conf", {}) or {}), **extra}.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(str(get(config, "spark.log_level", "WARN")))
    return spark

"""Reading tweet dumps (CSV, JSON Lines, Parquet) into the canonical tweet record, with validation.

Every input row comes out as one row: rows that cannot be scored keep their place with an
``error`` reason, so a batch job never fails and never silently drops a tweet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparktweet.errors import InputError

log = logging.getLogger(__name__)

CANONICAL_SCHEMA = T.StructType(
    [
        T.StructField("tweet_id", T.StringType()),
        T.StructField("text", T.StringType()),
        T.StructField("author_id", T.StringType()),
        T.StructField("author_username", T.StringType()),
        T.StructField("created_at", T.StringType()),
        T.StructField("in_reply_to_tweet_id", T.StringType()),
        T.StructField("lang", T.StringType()),
        T.StructField("mentions", T.ArrayType(T.StringType())),
        T.StructField("source", T.StringType()),
    ]
)
CANONICAL = [f.name for f in CANONICAL_SCHEMA.fields]
# Tweets.csv (Kaggle / CrowdFlower) column names that map onto the canonical record.
CSV_ALIASES = {"name": "author_username", "tweet_created": "created_at"}
# Label columns kept when present, for training and evaluation.
LABEL_COLUMNS = ["airline_sentiment", "negativereason", "airline"]
CORRUPT = "_corrupt_record"
MAX_TWEET_ID_DIGITS = 19
TIMESTAMP_FORMATS = ["yyyy-MM-dd HH:mm:ss Z", "yyyy-MM-dd'T'HH:mm:ss.SSSX", "yyyy-MM-dd'T'HH:mm:ssX", "yyyy-MM-dd HH:mm:ss"]


def detect_format(path: str) -> str:
    """``csv``, ``json`` or ``parquet`` from the path's extension (a folder is read as Parquet)."""
    lower = path.lower().rstrip("/")
    for ext, fmt in ((".csv", "csv"), (".jsonl", "json"), (".json", "json"), (".ndjson", "json"), (".parquet", "parquet")):
        if lower.endswith(ext):
            return fmt
    if "://" not in path and os.path.isdir(path):
        return "parquet"
    raise InputError(f"Cannot tell the format of {path!r}: use a .csv, .jsonl/.json or .parquet path, or pass --format.")


def _read_raw(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    if fmt == "csv":
        return (
            spark.read.option("header", True)
            .option("multiLine", True)
            .option("escape", '"')
            .option("mode", "PERMISSIVE")
            .option("enforceSchema", False)
            .csv(path)
        )
    if fmt == "json":
        fields = [f for f in CANONICAL_SCHEMA.fields] + [T.StructField(c, T.StringType()) for c in LABEL_COLUMNS + list(CSV_ALIASES)]
        schema = T.StructType(fields + [T.StructField(CORRUPT, T.StringType())])
        return spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT).json(path)
    if fmt == "parquet":
        return spark.read.parquet(path)
    raise InputError(f"Unknown input format {fmt!r}; expected csv, json or parquet.")


def parse_timestamp(col: Column) -> Column:
    """First of the known tweet timestamp formats that parses (null when none does)."""
    return F.coalesce(*[F.try_to_timestamp(col, F.lit(fmt)) for fmt in TIMESTAMP_FORMATS])


def validation_error(df: DataFrame) -> Column:
    """Why a canonical row cannot be scored, or null. Pure Column logic: works on streams too."""
    tid, text = F.col("tweet_id"), F.col("text")
    corrupt = F.col(CORRUPT).isNotNull() if CORRUPT in df.columns else F.lit(False)
    return (
        F.when(corrupt, F.lit("malformed record"))
        .when(tid.isNull() | (F.trim(tid) == ""), F.lit("missing tweet_id"))
        .when(~tid.rlike(rf"^[0-9]{{1,{MAX_TWEET_ID_DIGITS}}}$"), F.lit("invalid tweet_id: expected 1-19 digits"))
        .when(text.isNull(), F.lit("missing text"))
        .when(text.contains("\ufffd"), F.lit("text is not valid UTF-8"))
    )


def to_canonical(df: DataFrame, source: str = "dump", keep: Sequence[str] = ()) -> DataFrame:
    """Rename known aliases, cast to the canonical schema, add ``created_ts``, ``date`` and ``error``.

    ``keep`` names extra columns passed through untouched (the stream job keeps Kafka metadata).
    """
    for old, new in CSV_ALIASES.items():
        if old in df.columns and new not in df.columns:
            df = df.withColumnRenamed(old, new)
    cols: list[Column] = []
    for field in CANONICAL_SCHEMA.fields:
        if field.name in df.columns:
            cols.append(F.col(field.name).cast(field.dataType).alias(field.name) if field.name != "mentions" else F.col("mentions"))
        elif field.name == "source":
            cols.append(F.lit(source).alias("source"))
        else:
            cols.append(F.lit(None).cast(field.dataType).alias(field.name))
    extras = [F.col(c).cast("string").alias(c) for c in LABEL_COLUMNS if c in df.columns]
    if CORRUPT in df.columns:
        extras.append(F.col(CORRUPT))
    out = df.select(*cols, *extras, *keep)
    if "mentions" in df.columns and dict(df.dtypes).get("mentions") != "array<string>":
        out = out.withColumn("mentions", F.lit(None).cast("array<string>"))
    out = out.withColumn("tweet_id", F.trim("tweet_id"))
    # Parsed once and referenced by name: the formats' parse is not cheap, so the optimizer keeps it
    # in its own projection instead of copying it (and its generated code) into each use.
    out = out.withColumn("created_ts", parse_timestamp(F.col("created_at")))
    ts = F.col("created_ts")
    out = out.withColumn("date", F.to_date(ts))
    # ISO-8601 UTC when parseable, the original text otherwise (the error-free path never needs it).
    out = out.withColumn("created_at", F.coalesce(F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss'Z'"), F.col("created_at")))
    out = out.withColumn("error", validation_error(out))
    if CORRUPT in out.columns:
        out = out.drop(CORRUPT)
    return out


def read_tweets(spark: SparkSession, paths: Sequence[str] | str, fmt: str | None = None, source: str = "dump") -> DataFrame:
    """Read one or more dumps of one format into canonical rows.

    Examples
    --------
    >>> df = read_tweets(spark, "sparktweet/data/sample_tweets.jsonl")  # doctest: +SKIP
    >>> df.select("tweet_id", "text", "created_at", "error").show()  # doctest: +SKIP
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise InputError("No input paths given.")
    formats = {fmt or detect_format(p) for p in paths}
    if len(formats) != 1:
        raise InputError(f"All inputs of one run must share a format, found {sorted(formats)}; score them in separate runs.")
    raw = _read_raw(spark, paths if len(paths) > 1 else paths[0], formats.pop())
    if "tweet_id" not in raw.columns or "text" not in raw.columns:
        raise InputError(f"Input {paths} lacks the tweet_id and text columns (found {raw.columns}).")
    return to_canonical(raw, source)


def read_split(spark: SparkSession, path: str) -> DataFrame:
    """``tweet_id,split`` file of the shared data (train/test)."""
    df = spark.read.option("header", True).csv(path)
    missing = {"tweet_id", "split"} - set(df.columns)
    if missing:
        raise InputError(f"Split file {path} lacks {sorted(missing)}.")
    return df.select(F.trim("tweet_id").alias("tweet_id"), F.lower(F.trim("split")).alias("split"))


def first_per_tweet(df: DataFrame, order: Iterable[str] = ("created_ts",)) -> DataFrame:
    """One row per tweet_id (Tweets.csv repeats some ids), keeping the earliest."""
    from pyspark.sql.window import Window

    w = Window.partitionBy("tweet_id").orderBy(*[F.col(c).asc_nulls_last() for c in order])
    return df.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")

"""Batch scoring: dumps in (CSV, JSON Lines, Parquet), enriched Parquet out, partitioned by date."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparktweet.fusion import fuse
from sparktweet.records import read_tweets

log = logging.getLogger(__name__)

# Every column of DESIGN.md's stage table, in a stable order.
OUTPUT_COLUMNS = [
    "tweet_id", "text", "author_id", "author_username", "created_at", "in_reply_to_tweet_id", "lang", "mentions", "source",
    "tokens", "sentiment", "sentiment_score", "topic_label", "topic_score", "category", "category_score", "entities",
    "needs_ticket", "ticket_id", "priority", "reply_text", "model_version", "error", "date",
]


def enrich(model: PipelineModel, tweets: DataFrame, keep: Sequence[str] = ()) -> DataFrame:
    """Apply the pipeline to canonical rows and keep the output columns (works on streams too).

    ``keep`` names extra input columns carried through to the output (e.g. Kafka metadata).
    Consecutive Python stages run fused in one worker pass (:func:`sparktweet.fusion.fuse`),
    with the same rows as ``model.transform``.
    """
    scored = fuse(model).transform(tweets)
    missing = [c for c in OUTPUT_COLUMNS if c not in scored.columns]
    if missing:
        log.warning("model output lacks %s; writing them as nulls", missing)
        scored = scored.withColumns({c: F.lit(None) for c in missing})
    return scored.select(*OUTPUT_COLUMNS, *keep)


@dataclass
class ScoreSummary:
    rows: int
    errors: int
    tickets: int
    seconds: float
    output: str
    by_category: dict[str, int]
    by_sentiment: dict[str, int]
    error_reasons: dict[str, int]

    @property
    def tweets_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def score(spark: SparkSession, model: PipelineModel, inputs: Sequence[str], output: str, fmt: str | None = None,
          mode: str = "overwrite", partitions: int | None = None) -> ScoreSummary:
    """Score ``inputs`` with ``model`` into Parquet under ``output`` (partitioned by ``date``)."""
    start = time.monotonic()
    tweets = read_tweets(spark, inputs, fmt=fmt)
    # Multi-line CSV and single JSON files arrive as one partition: spread them over every core,
    # since the model stages run in one Python worker per partition.
    target = partitions or spark.sparkContext.defaultParallelism
    if partitions or tweets.rdd.getNumPartitions() < target:
        tweets = tweets.repartition(target)
    enriched = enrich(model, tweets)
    enriched.write.mode(mode).partitionBy("date").parquet(output)
    seconds = time.monotonic() - start
    written = spark.read.parquet(output)
    stats = written.agg(
        F.count("*").alias("rows"),
        F.count("error").alias("errors"),
        F.count("ticket_id").alias("tickets"),
    ).first()
    def counts(col: str) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in written.where(F.col(col).isNotNull()).groupBy(col).count().orderBy(F.desc("count")).collect()}
    summary = ScoreSummary(
        rows=int(stats["rows"]), errors=int(stats["errors"]), tickets=int(stats["tickets"]), seconds=seconds, output=output,
        by_category=counts("category"), by_sentiment=counts("sentiment"), error_reasons=counts("error"),
    )
    log.info("scored %d tweets in %.1fs (%.0f tweets/s) -> %s", summary.rows, seconds, summary.tweets_per_second, output)
    return summary


def format_summary(summary: ScoreSummary, sample: list[Any] | None = None) -> str:
    """A readable summary for the terminal."""
    lines = [
        f"Scored {summary.rows} tweets in {summary.seconds:.1f}s ({summary.tweets_per_second:.0f} tweets/s) -> {summary.output}",
        f"  tickets: {summary.tickets}   unscorable rows: {summary.errors}",
        "  sentiment: " + ", ".join(f"{k} {v}" for k, v in summary.by_sentiment.items()),
        "  category:  " + ", ".join(f"{k} {v}" for k, v in summary.by_category.items()),
    ]
    if summary.error_reasons:
        lines.append("  errors:    " + ", ".join(f"{k} ({v})" for k, v in summary.error_reasons.items()))
    for row in sample or []:
        text = (row["text"] or "").replace("\n", " ")
        text = text if len(text) <= 70 else text[:67] + "..."
        lines.append("")
        lines.append(f"  @{row['author_username'] or '?'}: {text}")
        ents = ", ".join(f"{e['label']}={e['text']}" for e in (row["entities"] or []))
        lines.append(f"    {row['sentiment']} ({row['sentiment_score'] or 0:.2f}) | {row['category']} | {row['priority'] or '-'} | {ents or 'no entities'}")
        if row["ticket_id"]:
            lines.append(f"    ticket {row['ticket_id']}: {row['reply_text']}")
        elif row["error"]:
            lines.append(f"    error: {row['error']}")
    return "\n".join(lines)

"""Training: fit the whole pipeline on the shared split, save it, and write its evaluation report."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.ml import Estimator, Pipeline, PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparktweet.config import get, resolve_path
from sparktweet.entities import EntityExtractor
from sparktweet.errors import ConfigError, InputError
from sparktweet.preprocessing import TweetPreprocessor
from sparktweet.records import first_per_tweet, read_split, read_tweets
from sparktweet.sentiment import SentimentClassifier
from sparktweet.tickets import TicketGenerator
from sparktweet.topics import TopicClassifier, TopicLabeler

log = logging.getLogger(__name__)

PIPELINE_DIR = "pipeline"
REPORT_DIR = "report"


def build_pipeline(config: Mapping[str, Any] | None = None) -> Pipeline:
    """The six stages of DESIGN.md, configured from the ``train`` section of the config."""
    cfg = config or {}
    # Only settings the config names are passed on: the rest keep each stage's own defaults
    # (the sentiment and topic LSTMs are tuned differently).
    keys = {"epochs": ("train.epochs", 1), "seed": ("train.seed", 0), "embeddingDim": ("train.embedding_dim", 1),
            "lstmUnits": ("train.lstm_units", 1), "vocabSize": ("train.vocab_size", 2), "maxLen": ("train.max_len", 1)}
    lstm = {param: _count(cfg, key, None, minimum) for param, (key, minimum) in keys.items() if get(cfg, key) is not None}
    sentiment = dict(lstm)
    if get(cfg, "train.sentiment_epochs") is not None:  # the sentiment LSTMs' own run (cosine rate, early stopping)
        sentiment["epochs"] = _count(cfg, "train.sentiment_epochs", None, minimum=1)
    # The recipe's cost knobs: the training time grows about linearly with each. The defaults
    # are the shipped recipe; one LSTM (sentiment_ensemble: 1) runs the sentiment stage in about a third of the time.
    ensemble = _count(cfg, "train.sentiment_ensemble", 3, minimum=1)
    finetune = _count(cfg, "train.teacher_finetune_epochs", 3, minimum=0)
    augment = _count(cfg, "train.augment", 16, minimum=0)
    lda = {"seed": lstm["seed"]} if "seed" in lstm else {}
    if get(cfg, "train.lda_passes") is not None:
        lda["passes"] = _count(cfg, "train.lda_passes", None, minimum=1)
    return Pipeline(
        stages=[
            TweetPreprocessor(backend=str(get(cfg, "train.preprocess_backend", "pandas"))),
            TopicLabeler(**lda),
            TopicClassifier(**lstm),
            # The shipped recipe: three LSTMs, each with its own teacher, MiniLM fine-tuned on the training rows
            # with the LSTM's seed (at training time only: the pipeline ships the LSTMs, averaged). Each learns the
            # rows and 16 "mix" copies of each (words swapped, pieces of two tweets joined), which its teacher alone
            # labels, without class weights (the teacher's probabilities carry the classes' real shares), for up to
            # six epochs (train.sentiment_epochs) with a cosine learning rate and early stopping. Validation part:
            # 0.835 / 0.787 (seed 13) and 0.837 / 0.786 (seed 14), against 0.827 / 0.773 and 0.831 / 0.779 over two
            # epochs, where the same seed run twice moves by up to 0.004 (docs/benchmarks.md, "Three teachers").
            # Early stopping ends each LSTM after its third epoch and keeps its first (lowest validation loss).
            # Test part, seed 13: 0.832 / 0.782; over two epochs 0.831 / 0.781, then 0.829 / 0.777 after the lemma fix.
            SentimentClassifier(ensembleSize=ensemble, ensembleStudent=False, teacherEncoder="default", teacherFineTune=finetune,
                                teacherWeight=1.0, augment=augment, augmentStyle="mix", classWeight="none",
                                teacherPerMember=ensemble > 1, lrSchedule="cosine", **sentiment),
            EntityExtractor(),
            TicketGenerator(),
        ]
    )


def _count(cfg: Mapping[str, Any], key: str, default: int | None, minimum: int) -> int:
    """A whole-number setting of the config, at least ``minimum``: a bad value fails before any training starts."""
    value = get(cfg, key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a whole number >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()) or number < minimum:
        raise ConfigError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    return number


def fit_with_progress(pipeline: Pipeline, df: DataFrame) -> PipelineModel:
    """``Pipeline.fit`` with one log line per stage, so a long training run shows where it is."""
    stages = pipeline.getStages()
    fitted = []
    current = df
    for i, stage in enumerate(stages, 1):
        start = time.monotonic()
        name = type(stage).__name__
        log.info("[%d/%d] %s ...", i, len(stages), "fitting " + name if isinstance(stage, Estimator) else "applying " + name)
        model = stage.fit(current) if isinstance(stage, Estimator) else stage
        fitted.append(model)
        if i < len(stages):
            current = model.transform(current)
            if isinstance(stages[i], Estimator):
                # The next estimator collects its input: compute this prefix once, not once per action.
                current = current.localCheckpoint(eager=True)
        log.info("[%d/%d] %s done in %.1fs", i, len(stages), name, time.monotonic() - start)
    return PipelineModel(fitted)


@dataclass
class TrainResult:
    model_path: str
    report_path: str
    version: str
    metrics: dict = field(default_factory=dict)


def load_labelled(spark: SparkSession, data: str, split: str) -> DataFrame:
    """Tweets.csv joined with the split file, one row per tweet id, valid rows only."""
    tweets = read_tweets(spark, data, fmt="csv")
    if "airline_sentiment" not in tweets.columns:
        raise InputError(f"{data} has no airline_sentiment column; training needs the labelled Tweets.csv.")
    tweets = first_per_tweet(tweets.where(F.col("error").isNull()))
    return tweets.join(read_split(spark, split), "tweet_id", "inner")


def train(spark: SparkSession, config: Mapping[str, Any], data: str, split: str, out: str, version: str | None = None,
          limit: int | None = None) -> TrainResult:
    """Fit on the ``train`` part of the split, save ``<out>/pipeline``, report on ``test`` in ``<out>/report``.

    ``limit`` caps the rows of each part (tests use it for a quick end-to-end run).
    """
    from sparktweet.evaluation import write_report

    version = version or str(get(config, "train.version") or f"sparktweet-{datetime.now(UTC):%Y%m%d-%H%M}")
    data, split = resolve_path(data), resolve_path(split)
    labelled = load_labelled(spark, data, split).cache()
    train_df = labelled.where("split = 'train'")
    test_df = labelled.where("split = 'test'")
    if limit:
        train_df, test_df = train_df.orderBy("tweet_id").limit(limit), test_df.orderBy("tweet_id").limit(max(limit // 4, 20))
    n_train, n_test = train_df.count(), test_df.count()
    if not n_train or not n_test:
        raise InputError(f"The split gave {n_train} train and {n_test} test rows; check that {split} matches {data}.")
    log.info("training on %d tweets, reporting on %d", n_train, n_test)
    pipeline = build_pipeline(config)
    pipeline.getStages()[-1].setModelVersion(version)
    model = fit_with_progress(pipeline, train_df)
    model_path = os.path.join(out, PIPELINE_DIR)
    model.write().overwrite().save(model_path)
    log.info("saved pipeline to %s", model_path)
    report_path = os.path.join(out, REPORT_DIR)
    metrics = write_report(model, train_df, test_df, report_path, version=version, config=config)
    with open(os.path.join(out, "VERSION"), "w", encoding="utf-8") as f:
        f.write(version + "\n")
    labelled.unpersist()
    return TrainResult(model_path=model_path, report_path=report_path, version=version, metrics=metrics)


def load_model(path: str) -> PipelineModel:
    """Load a saved pipeline from ``path`` or ``path/pipeline`` (local or Hadoop URI)."""
    path = resolve_path(path)
    local = "://" not in path
    candidate = os.path.join(path, PIPELINE_DIR)
    if local and os.path.isdir(candidate):
        path = candidate
    elif not local and not path.rstrip("/").endswith(PIPELINE_DIR):
        path = f"{path.rstrip('/')}/{PIPELINE_DIR}"
    if local and not os.path.isdir(path):
        raise InputError(f"No saved model at {path}; train one with `sparktweet train` or pass --model.")
    return PipelineModel.load(path)

"""Fused evaluation (sparktweet.fusion) gives exactly the rows and columns of the unfused pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from sparktweet.fusion import FusedPipelineModel, fuse
from sparktweet.preprocessing import TweetPreprocessor
from sparktweet.training import load_model

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "default"

TEXTS = [
    "@united my bag never arrived in Denver, flight UA 1234 on March 3rd. Refund $250 now!",
    "@SouthwestAir thanks, great crew on the flight to LAX 😀",
    "@AmericanAir why was my flight cancelled?? booking ref ABC12D",
    "@JetBlue how do I change my seat for tomorrow at 7:30pm",
    None,
    "",
    "   \t ",
    "  \u2028",
    "the a an of",  # only stop words: too few tokens
    "x" * 10_001,  # over maxChars
    "@delta ok",
    "@VirginAmerica 😡😡 stuck at DFW for 3 hours, missed connection",
]


@pytest.fixture(scope="module")
def shipped(spark) -> PipelineModel:
    return load_model(str(SHIPPED))


@pytest.fixture(scope="module")
def tweets(spark):
    rows = [(str(10**18 + i), text, f"2015-02-{10 + i % 10:02d} 11:0{i % 10}:00 -0800") for i, text in enumerate(TEXTS)]
    return spark.createDataFrame(rows, "tweet_id string, text string, created_at string")


def _assert_same(expected, got):
    assert expected.columns == got.columns
    assert_df_equality(expected.orderBy("tweet_id"), got.orderBy("tweet_id"), ignore_nullable=True, allow_nan_equality=True)


def test_fused_equals_unfused_on_the_shipped_model(shipped, tweets):
    fused = fuse(shipped)
    assert isinstance(fused, FusedPipelineModel)
    expected = shipped.transform(tweets)
    got = fused.transform(tweets)
    _assert_same(expected, got)
    # The edge rows really are edge rows: the comparison covers errors from several stages.
    errors = {r["error"] for r in got.select("error").collect() if r["error"]}
    assert {"missing text", "empty text"} <= errors
    assert any(e.startswith("too few tokens") for e in errors)
    assert any(e.startswith("text too long") for e in errors)


def test_fused_keeps_an_incoming_error_and_column_order(shipped, tweets):
    with_error = tweets.withColumn("error", F.when(F.col("tweet_id").endswith("1"), F.lit("upstream said no")))
    with_error = with_error.select("error", "text", "tweet_id", "created_at")
    _assert_same(shipped.transform(with_error), fuse(shipped).transform(with_error))


def test_fused_pass_is_one_python_node_for_the_whole_pipeline(shipped, tweets):
    """The five model stages and the ticket stage's ID function become one pandas UDF: one pooled
    Python worker per task slot, which loads the models once."""
    plan = fuse(shipped).transform(tweets)._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1
    unfused = shipped.transform(tweets)._jdf.queryExecution().executedPlan().toString()
    assert unfused.count("ArrowEvalPython") == 6


def test_runs_split_around_a_stage_that_cannot_fuse(shipped, tweets):
    """The JVM tokeniser is not fused: the Python stages after it still are, with identical rows."""
    from sparktweet.preprocessing import JVM_JAR

    if not JVM_JAR.exists():
        pytest.fail("jars/sparktweet-jvm.jar is not built: run jvm/preprocess/build.sh (make setup does)")
    stages = [TweetPreprocessor(backend="jvm"), *shipped.stages[1:]]
    model = PipelineModel(stages)
    _assert_same(model.transform(tweets), fuse(model).transform(tweets))


def test_a_single_stage_is_left_alone(tweets):
    model = PipelineModel([TweetPreprocessor()])
    _assert_same(model.transform(tweets), fuse(model).transform(tweets))
    assert fuse(TweetPreprocessor()).__class__ is TweetPreprocessor


def test_keep_stop_words_model_fuses_on_text(shipped, tweets):
    """An LSTM reading the re-tokenised text (keepStopWords) gives the same rows fused."""
    sentiment = next(s for s in shipped.stages if type(s).__name__ == "SentimentModel").copy({})
    sentiment._set(keepStopWords=True)
    model = PipelineModel([shipped.stages[0], sentiment])
    _assert_same(model.transform(tweets), fuse(model).transform(tweets))


def test_fused_pipeline_runs_on_a_stream(shipped, tweets, spark, tmp_path):
    """The stream job scores through enrich, hence fused: same rows on a streaming DataFrame."""
    from contract import check_streaming

    check_streaming(fuse(shipped), tweets, spark, tmp_path)


def test_fused_equals_unfused_on_real_tweets(shipped, spark, shared_data):
    """500 tweets of the shared data set: every output column equal, entities and tickets included."""
    import pandas as pd

    frame = pd.read_csv(shared_data / "Tweets.csv", dtype=str, keep_default_na=False).iloc[::29].head(500)
    rows = list(zip(frame["tweet_id"], frame["text"], frame["tweet_created"], strict=True))
    tweets = spark.createDataFrame(rows, "tweet_id string, text string, created_at string")
    _assert_same(shipped.transform(tweets), fuse(shipped).transform(tweets))

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from contract import check_no_arg_construction, check_save_load_round_trip, check_streaming
from sparktweet.sentiment import SentimentClassifier, SentimentModel
from sparktweet.topics import TopicClassifier, TopicLabeler, TopicLabelerModel, TopicModel

NEG = ["bag", "lose", "delay", "not", "happy", "cancel"]
POS = ["thank", "great", "crew", "love", "awesome"]
NEU = ["flight", "tomorrow", "schedule", "question"]


def _rows(n: int = 60):
    rows = []
    for i in range(n):
        kind = i % 3
        words = [NEG, NEU, POS][kind]
        tokens = [words[(i + j) % len(words)] for j in range(4)]
        rows.append((str(10**18 + i), " ".join(tokens), tokens, ["negative", "neutral", "positive"][kind]))
    return rows


@pytest.fixture(scope="module")
def tokens_df(spark):
    return spark.createDataFrame(_rows(), "tweet_id string, text string, tokens array<string>, airline_sentiment string")


TINY = dict(epochs=2, lstmUnits=8, embeddingDim=8, maxLen=8, validationFraction=0.0)


@pytest.mark.parametrize("cls", [SentimentClassifier, SentimentModel, TopicLabeler, TopicLabelerModel, TopicClassifier, TopicModel])
def test_no_arg_construction(cls):
    check_no_arg_construction(cls)


def test_sentiment_round_trip_and_values(spark, tokens_df, tmp_path):
    out = check_save_load_round_trip(SentimentClassifier(**TINY), tokens_df, tmp_path)
    rows = out.select("sentiment", "sentiment_score", "error").collect()
    assert {r.sentiment for r in rows} <= {"negative", "neutral", "positive"}
    assert all(0.0 < r.sentiment_score <= 1.0 and r.error is None for r in rows)


def test_sentiment_learns_separable_data(spark, tokens_df):
    model = SentimentClassifier(epochs=15, lstmUnits=8, embeddingDim=8, maxLen=8, validationFraction=0.0).fit(tokens_df)
    acc = model.transform(tokens_df).select(F.avg((F.col("sentiment") == F.col("airline_sentiment")).cast("double"))).first()[0]
    assert acc > 0.9


def test_sentiment_streaming(spark, tokens_df, tmp_path):
    check_streaming(SentimentClassifier(**TINY).fit(tokens_df), tokens_df, spark, tmp_path)


def test_errored_and_null_rows_get_nulls(spark, tokens_df):
    model = SentimentClassifier(**TINY).fit(tokens_df)
    bad = spark.createDataFrame(
        [("1", "x", None, None), ("2", "x", ["bag"], "empty text"), ("3", "x", ["bag"], None)],
        "tweet_id string, text string, tokens array<string>, error string",
    )
    out = model.transform(bad)
    # The struct result is expanded into columns without running the model once per column.
    assert out._jdf.queryExecution().executedPlan().toString().count("ArrowEvalPython") == 1
    rows = {r.tweet_id: r for r in out.collect()}
    assert rows["1"].sentiment is None and rows["1"].error is None
    assert rows["2"].sentiment is None and rows["2"].error == "empty text"
    assert rows["3"].sentiment in {"negative", "neutral", "positive"}


def test_missing_tokens_column_is_a_clear_error(spark, tokens_df):
    model = SentimentClassifier(**TINY).fit(tokens_df)
    with pytest.raises(Exception, match="tokens"):
        model.transform(tokens_df.drop("tokens"))


THEMES = {
    "baggage": ["bag", "luggage", "lose", "claim", "carousel", "suitcase"],
    "seating": ["seat", "aisle", "window", "legroom", "row", "middle"],
    "reschedule_refund": ["refund", "rebook", "reschedule", "compensation", "reimburse", "back"],
}


@pytest.fixture(scope="module")
def themed_df(spark):
    rows = []
    for t, (code, words) in enumerate(THEMES.items()):
        for i in range(30):
            tokens = [words[(i + j) % len(words)] for j in range(3)] + ["today", "airline"][: i % 3]
            rows.append((f"{t}{i:04d}", " ".join(tokens), tokens, code))
    return spark.createDataFrame(rows, "tweet_id string, text string, tokens array<string>, theme string")


def test_topic_labeler_follows_seed_keywords(spark, themed_df, tmp_path):
    labeler = TopicLabeler(passes=10, minDocFreq=1, extraTopics=1)
    labelled = check_save_load_round_trip(labeler, themed_df, tmp_path)
    rows = labelled.select("theme", "topic_label", "topic_score").collect()
    assert all(0 < r.topic_score <= 1 for r in rows)
    agreement = sum(r.theme == r.topic_label for r in rows) / len(rows)
    assert agreement >= 0.9, agreement


def test_topic_classifier_round_trip_and_streaming(spark, themed_df, tmp_path):
    labelled = TopicLabeler(passes=10, minDocFreq=1).fit(themed_df).transform(themed_df)
    topic_in = labelled.select("tweet_id", "text", "tokens", "topic_label")
    out = check_save_load_round_trip(TopicClassifier(**TINY), topic_in, tmp_path)
    assert {r.category for r in out.select("category").collect()} <= set(THEMES) | {r.topic_label for r in topic_in.collect()}
    check_streaming(TopicLabeler(passes=2, minDocFreq=1).fit(themed_df), themed_df, spark, tmp_path)

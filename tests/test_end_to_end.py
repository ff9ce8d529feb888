"""Train a tiny pipeline on the shared data, then score dumps with it through the CLI functions."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from sparktweet.cli import SAMPLE, main
from sparktweet.scoring import OUTPUT_COLUMNS


@pytest.fixture(scope="module")
def tiny_model(spark, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    code = main([
        "train", "--data", str(shared_data / "Tweets.csv"), "--split", str(shared_data / "split.csv"), "--out", str(out),
        "--limit", "300", "--version", "tiny-e2e", "--set", "train.epochs=1", "--set", "train.lda_passes=2",
        "--set", "train.lstm_units=8", "--set", "train.embedding_dim=16",
        # The recipe's every part (two LSTMs with their own fine-tuned teachers, altered copies), cut short.
        "--set", "train.sentiment_epochs=1", "--set", "train.sentiment_ensemble=2", "--set", "train.teacher_finetune_epochs=1",
        "--set", "train.augment=2",
    ])
    assert code == 0
    return out


@pytest.mark.slow
def test_train_writes_model_and_report(tiny_model):
    assert (tiny_model / "pipeline" / "metadata").is_dir()
    report = tiny_model / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["version"] == "tiny-e2e"
    assert 0.0 <= metrics["sentiment"]["accuracy"] <= 1.0
    assert set(metrics["lda_agreement"]["per_reason"]) >= {"Lost Luggage", "Late Flight", "Cancelled Flight"}
    for png in ("eda.png", "confusion_sentiment.png", "confusion_topic.png"):
        assert (report / png).stat().st_size > 1000
    text = (report / "report.md").read_text()
    assert "Accuracy" in text and "c_v" in text
    # The saved sentiment stage records the recipe the config's cost settings chose.
    meta = next((tiny_model / "pipeline" / "stages").glob("*_SentimentModel_*/metadata/part-*"))
    params = json.loads(meta.read_text())["paramMap"]
    assert (params["ensembleSize"], params["teacherFineTune"], params["augment"], params["epochs"]) == (2, 1, 2, 1)
    assert params["teacherPerMember"] is True


@pytest.mark.slow
def test_score_sample_with_bad_rows(spark, tiny_model, tmp_path, capsys):
    out = tmp_path / "scored"
    assert main(["score", SAMPLE, "--output", str(out), "--model", str(tiny_model), "--show", "3"]) == 0
    df = spark.read.parquet(str(out))
    n_input = sum(1 for _ in open(SAMPLE, encoding="utf-8"))
    assert df.count() == n_input
    assert set(OUTPUT_COLUMNS) <= set(df.columns)
    errors = {r.error for r in df.where(F.col("error").isNotNull()).collect()}
    assert {"malformed record", "missing text", "invalid tweet_id: expected 1-19 digits"} <= errors
    good = df.where(F.col("error").isNull())
    assert good.where(F.col("sentiment").isNull() | F.col("category").isNull()).count() == 0
    assert good.select(F.first("model_version")).first()[0] == "tiny-e2e"
    assert "Scored" in capsys.readouterr().out


@pytest.mark.slow
def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["score", SAMPLE, "--output", str(tmp_path / "o"), "--model", str(tmp_path / "nope")]) == 2
    assert "No saved model" in capsys.readouterr().err

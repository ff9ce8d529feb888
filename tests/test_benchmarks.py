"""The issue's benchmarks run from a clone with one command each: small runs, checked for what they print and write.

The figures of these runs mean nothing (a few thousand tweets, two epochs); the tests check that each command
still trains, scores and reports every row beside its floor, so a change elsewhere cannot silently break them.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from sparktweet.evaluation import OBVIOUS_CATEGORY


def run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_quality_benchmark_reports_every_figure_and_the_seed_spread(tmp_path, shared_data):
    out = tmp_path / "quality.json"
    proc = run("quality.py", "--quick", "--seeds", "2", "--data", str(shared_data / "Tweets.csv"),
               "--split", str(shared_data / "split.csv"), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for part in ("sentiment", "baseline", "topic"):
        assert 0.0 < figures[part]["accuracy"] <= 1.0 and 0.0 < figures[part]["macro_f1"] <= 1.0
    assert 0.0 <= figures["lda"]["agreement"]["pooled_share"] <= 1.0
    reference = figures["lda"]["supervised_reference"]
    assert 0.0 < reference["pooled_share"] <= 1.0 and reference["n"] == sum(
        row["n"] for reason, row in figures["lda"]["agreement"]["per_reason"].items() if reason in OBVIOUS_CATEGORY)
    spread = figures["sentiment_seeds"]
    assert [r["seed"] for r in spread["runs"]] == [13, 14]
    assert spread["runs"][0]["accuracy"] == figures["sentiment"]["accuracy"]  # the headline is the shipped seed's run
    for key in ("accuracy", "macro_f1"):
        values = [r[key] for r in spread["runs"]]
        assert spread[key]["min"] == min(values) and spread[key]["max"] == max(values)
        assert spread[key]["mean"] == pytest.approx(sum(values) / 2)
    table = proc.stdout
    assert "QUICK RUN" in table
    for row in ("sentiment accuracy (LSTM)", "sentiment macro-F1 (LSTM)", "LDA labels vs human reasons, pooled",
                "topic LSTM vs LDA labels, macro-F1", "sentiment accuracy over 2 seeds"):
        assert row in table, row
    assert table.count("PASS") + table.count("FAIL") == 4  # one verdict per floor


def test_quality_benchmark_refuses_zero_seeds():
    proc = run("quality.py", "--seeds", "0", timeout=120)
    assert proc.returncode == 2
    assert "--seeds must be at least 1" in proc.stderr


def test_throughput_benchmark_scores_every_tweet_in_spark_and_in_plain_python(tmp_path, shared_data):
    out = tmp_path / "throughput.json"
    proc = run("throughput.py", "-n", "2000", "--naive-n", "20", "--warm-runs", "1", "--data", str(shared_data / "Tweets.csv"),
               "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["spark_rows"] == figures["plain_rows"] == 2000
    assert figures["spark_errors"] == 0
    assert 0 < figures["spark_tickets"] < 2000  # complaints and questions get tickets, the others do not
    for key in ("spark_warm_tweets_per_s", "plain_tweets_per_s", "lstm_tweets_per_s", "naive_udf_tweets_per_s"):
        assert figures[key] > 0, key
    assert figures["spark_peak_rss_mb"] > 0 and figures["plain_peak_rss_mb"] > 0
    for row in ("whole pipeline, Spark local[2], warm", "Spark / plain Python", "one LSTM", "naive per-row UDF", "peak RSS"):
        assert row in proc.stdout, row



def _quality_module():
    """benchmarks/quality.py imported as a module (it is a script, not a package member)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    return quality

def test_the_lda_reference_learns_the_human_reasons_and_counts_pooled_tweets_only():
    import pandas as pd

    quality = _quality_module()
    says = {"Lost Luggage": "where is my bag, my suitcase is lost", "Cancelled Flight": "you cancelled my flight again",
            "Late Flight": "delayed three hours, late again", "Customer Service Issue": "nobody answers the phone"}
    train = pd.DataFrame([{"text": f"{text} #{i}", "negativereason": reason} for i in range(10) for reason, text in says.items()])
    evaluate = train.iloc[:8].reset_index(drop=True)
    ref = quality.reasons_reference(train, evaluate)
    assert ref == {"pooled_share": 1.0, "n_train": 30, "n": 6}  # the Customer Service Issue rows are not pooled
    # The same texts under each other's reasons: the reference agrees with none of them.
    swapped = evaluate.assign(negativereason=evaluate["negativereason"].map(
        {"Lost Luggage": "Cancelled Flight", "Cancelled Flight": "Late Flight", "Late Flight": "Lost Luggage",
         "Customer Service Issue": "Customer Service Issue"}))
    assert quality.reasons_reference(train, swapped)["pooled_share"] == 0.0


def test_the_quality_benchmark_trains_the_training_jobs_sentiment_recipe(monkeypatch):
    import pandas as pd

    from sparktweet.keras_io import TextClassifier
    from sparktweet.sentiment import SentimentClassifier
    from sparktweet.training import build_pipeline

    quality = _quality_module()
    seen = {}

    class Stop(Exception):
        pass

    def train(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(TextClassifier, "train", train)
    # A config whose sentiment epochs differ from the stage's own default shows which one the benchmark reads.
    import sparktweet.config

    shipped_config = sparktweet.config.load_config
    monkeypatch.setattr(sparktweet.config, "load_config", lambda *a, **kw: shipped_config(overrides=["train.sentiment_epochs=5"]))
    frame = quality.add_tokens(pd.DataFrame({"text": ["so late again", "thanks a lot"], "airline_sentiment": ["negative", "positive"]}))
    with pytest.raises(Stop):
        quality.sentiment_lstm(frame, frame, {}, quick=False)
    job = next(s for s in build_pipeline(sparktweet.config.load_config()).getStages() if isinstance(s, SentimentClassifier)).trainKwargs()
    assert {k: seen[k] for k in job} == job
    assert seen["epochs"] == 5 != SentimentClassifier().getOrDefault("epochs")

"""TweetPreprocessor: both backends, the stage contract, bad rows, and backend parity on Tweets.csv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from contract import check_no_arg_construction, check_save_load_round_trip, check_streaming
from sparktweet.errors import ConfigError, InputError
from sparktweet.preprocessing import TweetPreprocessor, register_jvm_function

ROOT = Path(__file__).resolve().parent.parent
# The JVM backend's jar must be on spark.jars when the session-wide `spark` fixture starts, and
# collection runs before any fixture: build it now (a no-op when it is up to date).
_build = subprocess.run(["bash", str(ROOT / "jvm" / "preprocess" / "build.sh")], capture_output=True, text=True)
if _build.returncode != 0:
    raise RuntimeError(f"bash jvm/preprocess/build.sh failed ({_build.returncode}):\n{_build.stdout}{_build.stderr}")

BACKENDS = ["pandas", "jvm"]
OUT_SCHEMA = StructType(
    [
        StructField("tweet_id", StringType()),
        StructField("text", StringType()),
        StructField("tokens", ArrayType(StringType())),
        StructField("error", StringType()),
    ]
)


def _tweets(spark: SparkSession, rows: list[tuple[str, str | None]]) -> DataFrame:
    return spark.createDataFrame(rows, "tweet_id string, text string")


def _expected(spark: SparkSession, rows: list[tuple[str, str | None, list[str] | None, str | None]]) -> DataFrame:
    return spark.createDataFrame(rows, OUT_SCHEMA)


@pytest.fixture(scope="module")
def sample(spark: SparkSession) -> DataFrame:
    return _tweets(
        spark,
        [
            ("1", "@united my bag never arrived in Denver 😡 http://t.co/abc"),
            ("2", "Thanks @VirginAmerica, best flight ever! #happy"),
            ("3", "I don't think 2 cancelled flights is OK"),
            ("4", None),
        ],
    )


def test_builds_with_no_arguments() -> None:
    check_no_arg_construction(TweetPreprocessor)
    stage = TweetPreprocessor()
    assert (stage.getBackend(), stage.getMaxChars(), stage.getMinTokens()) == ("pandas", 10000, 1)
    assert (stage.getTextCol(), stage.getTokensCol(), stage.getErrorCol()) == ("text", "tokens", "error")


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load_round_trip(spark: SparkSession, sample: DataFrame, tmp_path: Path, backend: str) -> None:
    out = check_save_load_round_trip(TweetPreprocessor(backend=backend), sample, tmp_path)
    assert out.filter("tweet_id = '3'").first().tokens == ["not", "think", "xnum", "cancel", "flight", "okay"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming(spark: SparkSession, sample: DataFrame, tmp_path: Path, backend: str) -> None:
    check_streaming(TweetPreprocessor(backend=backend), sample, spark, tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tokens_of_tricky_inputs(spark: SparkSession, backend: str) -> None:
    rows = [
        ("1", "Delays &amp; lost bags &gt;:("),
        ("2", "visit https://t.co/F2LFULCbQ7 and www.united.com"),
        ("3", "@united @AmericanAir #fail #NeverAgain"),
        ("4", "love it 😍👍🏽 but 😡✈️"),
        ("5", "I don't like it, NOT good, can’t fly"),
        ("6", "cancelled flights, waited 3 hrs"),
    ]
    expected = _expected(
        spark,
        [
            ("1", rows[0][1], ["delay", "lose", "bag"], None),
            ("2", rows[1][1], ["visit", "xurl", "xurl"], None),
            ("3", rows[2][1], ["xmention", "xmention", "fail", "neveragain"], None),
            ("4", rows[3][1], ["love", "xemojipos", "xemojipos", "xemojineg", "xemoji"], None),
            ("5", rows[4][1], ["not", "like", "not", "good", "not", "fly"], None),
            ("6", rows[5][1], ["cancel", "flight", "wait", "xnum", "hr"], None),
        ],
    )
    actual = TweetPreprocessor(backend=backend).transform(_tweets(spark, rows))
    assert_df_equality(actual.orderBy("tweet_id"), expected.orderBy("tweet_id"), ignore_nullable=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_rows_get_null_tokens_and_a_reason(spark: SparkSession, backend: str) -> None:
    huge = "my bag is lost " * 7000  # 105,000 characters
    rows = [("1", None), ("2", ""), ("3", " \t\n "), ("4", "😡😡"), ("5", huge), ("6", "the a an ! ?")]
    expected = _expected(
        spark,
        [
            ("1", None, None, "missing text"),
            ("2", "", None, "empty text"),
            ("3", " \t\n ", None, "empty text"),
            ("4", "😡😡", ["xemojineg", "xemojineg"], None),
            ("5", huge, None, "text too long (105000 chars > maxChars 10000)"),
            ("6", "the a an ! ?", None, "too few tokens (0 < minTokens 1)"),
        ],
    )
    actual = TweetPreprocessor(backend=backend).transform(_tweets(spark, rows))
    assert_df_equality(actual.orderBy("tweet_id"), expected.orderBy("tweet_id"), ignore_nullable=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_limits_are_params(spark: SparkSession, backend: str) -> None:
    huge = "my bag is lost " * 7000
    df = _tweets(spark, [("1", huge), ("2", "the a an")])
    out = TweetPreprocessor(backend=backend, maxChars=200_000, minTokens=0).transform(df).orderBy("tweet_id").collect()
    assert out[0].tokens == ["bag", "lose"] * 7000 and out[0].error is None
    assert out[1].tokens == [] and out[1].error is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_utf8_and_incoming_errors(spark: SparkSession, backend: str) -> None:
    df = spark.createDataFrame(
        [("1", "C328414243", None), ("2", "6C6F737420626167", "bad json"), ("3", "", None)],
        "tweet_id string, hex string, error string",
    ).select("tweet_id", F.unhex("hex").cast("string").alias("text"), "error")
    out = TweetPreprocessor(backend=backend).transform(df)
    assert out.columns == ["tweet_id", "text", "error", "tokens"]
    rows = {r.tweet_id: (r.tokens, r.error) for r in out.collect()}
    assert rows == {"1": (["abc"], None), "2": (None, "bad json"), "3": (None, "empty text")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_columns_and_non_string_text(spark: SparkSession, backend: str) -> None:
    df = spark.createDataFrame([(1, 42)], "id int, body int")
    stage = TweetPreprocessor(backend=backend).setTextCol("body").setTokensCol("words").setErrorCol("why")
    row = stage.transform(df).first()
    assert (row.words, row.why) == (["xnum"], None)


def test_backend_choice_is_validated() -> None:
    with pytest.raises(ConfigError, match="Scala 2.13.*Use backend 'jvm'"):
        TweetPreprocessor(backend="sparknlp")
    with pytest.raises(ConfigError, match="pandas, jvm; found 'spacy'"):
        TweetPreprocessor().setBackend("spacy")
    with pytest.raises(ConfigError, match="maxChars must be an integer >= 1"):
        TweetPreprocessor(maxChars=0)
    with pytest.raises(ConfigError, match="minTokens must be an integer >= 0"):
        TweetPreprocessor(minTokens=-1)
    assert TweetPreprocessor(backend=" JVM ").getBackend() == "jvm"


def test_unloadable_jvm_class_says_to_build_the_jar(spark: SparkSession) -> None:
    with pytest.raises(ConfigError, match=r"cannot load.*start a new one"):
        register_jvm_function(spark, "sparktweet_no_such_udf", "sparktweet.jvm.NoSuchClass")


def test_missing_text_column_is_an_input_error(spark: SparkSession) -> None:
    with pytest.raises(InputError, match="text column 'text'"):
        TweetPreprocessor().transform(spark.createDataFrame([("1",)], "tweet_id string"))


def test_saved_backend_choice_survives_reload(spark: SparkSession, sample: DataFrame, tmp_path: Path) -> None:
    path = str(tmp_path / "pipeline")
    Pipeline(stages=[TweetPreprocessor(backend="jvm", maxChars=500, minTokens=2)]).fit(sample).save(path)
    stage = PipelineModel.load(path).stages[0]
    assert isinstance(stage, TweetPreprocessor)
    assert (stage.getBackend(), stage.getMaxChars(), stage.getMinTokens()) == ("jvm", 500, 2)


def test_backends_agree_on_tweets_csv(spark: SparkSession, shared_data: Path, record_property) -> None:
    tweets = spark.read.csv(str(shared_data / "Tweets.csv"), header=True, multiLine=True, escape='"').select("tweet_id", "text")
    both = TweetPreprocessor(backend="pandas", tokensCol="tokens_pandas", errorCol="error_pandas").transform(tweets)
    both = TweetPreprocessor(backend="jvm", tokensCol="tokens_jvm", errorCol="error_jvm").transform(both)
    same = F.col("tokens_pandas").eqNullSafe(F.col("tokens_jvm")) & F.col("error_pandas").eqNullSafe(F.col("error_jvm"))
    stats = both.agg(
        F.count("*").alias("rows"),
        F.sum(same.cast("int")).alias("same"),
        F.sum(F.col("error_pandas").isNotNull().cast("int")).alias("errors"),
    ).first()
    share = stats.same / stats.rows
    record_property("backend_agreement", share)
    print(f"pandas and jvm backends agree on {stats.same}/{stats.rows} Tweets.csv rows ({share:.2%}); {stats.errors} rows have an error")
    assert stats.rows == 14640
    assert share >= 0.95
    assert stats.errors < 50

"""EntityExtractor as a Spark stage: contract, expected entities, bad rows, brand patterns, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from chispa import assert_df_equality
from contract import (
    check_no_arg_construction,
    check_save_load_round_trip,
    check_streaming,
)
from pyspark.ml import PipelineModel
from pyspark.sql.types import StringType, StructField, StructType

from sparktweet import ner
from sparktweet.entities import ENTITIES_TYPE, EntityExtractor
from sparktweet.errors import ConfigError, InputError, ModelError

INPUT = StructType([StructField("tweet_id", StringType()), StructField("text", StringType())])
OUTPUT = StructType([StructField("tweet_id", StringType()), StructField("entities", ENTITIES_TYPE), StructField("error", StringType())])

TWEETS = [
    ("1", "@united my bag never arrived in Denver"),
    ("2", "Flight UA 1234 from ORD to SFO delayed 3 hours, paid $25 for wifi"),
    ("3", "confirmation number ABC12D"),
    ("4", "I do NOT want THE seat"),
]


@pytest.fixture(scope="module")
def tweets(spark):
    return spark.createDataFrame(TWEETS, INPUT)


def test_contract(spark, tweets, tmp_path):
    check_no_arg_construction(EntityExtractor)
    check_save_load_round_trip(EntityExtractor(), tweets, tmp_path)
    check_streaming(EntityExtractor(), tweets, spark, tmp_path)


def test_entities_of_inline_tweets(spark, tweets):
    out = EntityExtractor().transform(tweets).select("tweet_id", "entities", "error")
    expected = spark.createDataFrame(
        [
            ("1", [("united", "AIRLINE", 1, 7), ("Denver", "CITY", 32, 38)], None),
            (
                "2",
                [
                    ("UA 1234", "FLIGHT", 7, 14),
                    ("ORD", "AIRPORT", 20, 23),
                    ("SFO", "AIRPORT", 27, 30),
                    ("3 hours", "TIME", 39, 46),
                    ("$25", "MONEY", 53, 56),
                ],
                None,
            ),
            ("3", [("ABC12D", "BOOKING_REF", 20, 26)], None),
            ("4", [], None),
        ],
        OUTPUT,
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)
    for row in EntityExtractor().transform(tweets).collect():
        assert all(row.text[e.start : e.end] == e.text for e in row.entities)


def test_bad_rows_get_nulls_and_reasons(spark):
    rows = [
        ("n", None, None),
        ("e", "", None),
        ("h", "Denver " * 20, None),
        ("p", "@united in Denver", "TweetPreprocessor: something upstream failed"),
        ("ok", "in Denver", None),
    ]
    schema = StructType([*INPUT.fields, StructField("error", StringType())])
    df = spark.createDataFrame(rows, schema)
    out = EntityExtractor(maxTextLength=100).transform(df).select("tweet_id", "entities", "error")
    expected = spark.createDataFrame(
        [
            ("n", None, None),
            ("e", [], None),
            ("h", None, "EntityExtractor: text has 140 characters, more than the limit of 100."),
            ("p", None, "TweetPreprocessor: something upstream failed"),
            ("ok", [("Denver", "CITY", 3, 9)], None),
        ],
        OUTPUT,
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_brand_patterns_and_labels_survive_save_without_the_source_file(spark, tmp_path: Path):
    source = tmp_path / "brand.jsonl"
    patterns = [*ner.airline_patterns([ner.Airline("ZZ", ("Acme Air",), ("acmeair",))]), {"label": "CITY", "pattern": "Gotham"}]
    source.write_text("".join(json.dumps(p) + "\n" for p in patterns))
    stage = EntityExtractor(patternsPath=str(source), labels=["AIRLINE", "FLIGHT"], outputCol="ents")
    df = spark.createDataFrame([("1", "@AcmeAir flight ZZ 123 to Gotham, not United")], INPUT)
    before = stage.transform(df)
    assert before.first().ents == [("AcmeAir", "AIRLINE", 1, 8), ("ZZ 123", "FLIGHT", 16, 22)]
    target = f"file://{tmp_path.resolve()}/saved/model"
    PipelineModel(stages=[stage]).write().overwrite().save(target)
    os.remove(source)
    loaded = PipelineModel.load(target).stages[0]
    assert loaded.getPatternsPath() == str(source) and loaded.getLabels() == ["AIRLINE", "FLIGHT"]
    assert_df_equality(before, loaded.transform(df), ignore_nullable=True)


def test_saving_an_unused_stage_writes_the_default_patterns(spark, tmp_path: Path):
    target = str(tmp_path / "extractor")
    EntityExtractor().save(target)
    saved = Path(target) / "artifacts" / ner.PATTERNS_FILE
    assert saved.stat().st_size > 100_000
    loaded = EntityExtractor.load(target)
    assert ner.patterns_digest(str(saved)) == ner.patterns_digest(loaded._require_artifacts())


def test_changing_patterns_path_rebuilds_the_artifact(spark, tmp_path: Path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"label": "CITY", "pattern": "Gotham"}) + "\n")
    second.write_text(json.dumps({"label": "CITY", "pattern": "Metropolis"}) + "\n")
    df = spark.createDataFrame([("1", "Gotham or Metropolis")], INPUT)
    stage = EntityExtractor(patternsPath=str(first))
    assert [e.text for e in stage.transform(df).first().entities] == ["Gotham"]
    copy = stage.copy({stage.patternsPath: str(second)})
    assert [e.text for e in copy.transform(df).first().entities] == ["Metropolis"]
    assert [e.text for e in stage.transform(df).first().entities] == ["Gotham"]


def test_configuration_errors_fail_on_the_driver(tweets):
    with pytest.raises(ModelError, match="spaCy model 'en_core_web_nonexistent' is not installed"):
        EntityExtractor(spacyModel="en_core_web_nonexistent").transform(tweets)
    with pytest.raises(ConfigError, match=r"labels \['PERSON'\] are unknown"):
        EntityExtractor(labels=["CITY", "PERSON"]).transform(tweets)
    with pytest.raises(InputError, match="input column 'body' not found"):
        EntityExtractor(textCol="body").transform(tweets)

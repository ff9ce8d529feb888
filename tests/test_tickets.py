from __future__ import annotations

import json
import sys
from datetime import date, datetime, timezone

import pytest
from chispa import assert_df_equality
from contract import check_no_arg_construction, check_save_load_round_trip, check_streaming
from pyspark import cloudpickle
from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.util import DefaultParamsReader
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparktweet.categories import Category, load_categories
from sparktweet.errors import ConfigError, InputError
from sparktweet.fusion import FusedPipelineModel, FusionStep
from sparktweet.ticket_ids import make_ticket_id, validate_ticket_id
from sparktweet.tickets import (
    MAX_REPLY_CHARS,
    TicketGenerator,
    _default_categories_json,
    categories_to_json,
    render_reply,
    validate_templates,
)

SCHEMA = (
    "tweet_id string, text string, created_at string, sentiment string, sentiment_score double, category string, "
    "entities array<struct<text:string,label:string,start:int,end:int>>"
)
SNOWFLAKE = "570306133677760513"  # created 2015-02-24 19:35:52 UTC
PREFIX = {c.code: c.prefix for c in load_categories()}


def _rows(*rows: tuple) -> list[tuple]:
    """Fill created_at, score, category and entities defaults for short test rows."""
    out = []
    for row in rows:
        tweet_id, text, sentiment, *rest = row
        score, category, entities, created = (rest + [0.8, "baggage", None, "2015-02-24T10:00:00Z"][len(rest) :])[:4]
        out.append((tweet_id, text, created, sentiment, score, category, entities))
    return out


# Python workers cannot import this test module: ship the probe kernel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _probe_kernel(frame):
    return {"probe": [1] * len(frame)}


class _Probe(Transformer):
    """A fusable Python stage that adds a constant column: puts TicketGenerator in a fused pass."""

    def _fusion_step(self, columns):
        return FusionStep(inputs=("text",), outputs=(("probe", T.IntegerType()),), kernel=_probe_kernel)

    def _transform(self, dataset):
        return dataset.withColumn("probe", F.lit(1))


@pytest.fixture(params=["alone", "fused"])
def run(request):
    """Apply a TicketGenerator alone, or inside a fused pass (checked row for row against the unfused pipeline)."""

    def alone(stage, df):
        return stage.transform(df)

    def fused(stage, df):
        got = FusedPipelineModel([_Probe(), stage]).transform(df)
        plan = got._jdf.queryExecution().executedPlan().toString()
        assert plan.count("ArrowEvalPython") == 1, plan
        expected = PipelineModel([_Probe(), stage]).transform(df)
        assert got.columns == expected.columns
        order = [c for c in got.columns if c != "entities"]
        assert_df_equality(expected.orderBy(*order), got.orderBy(*order), ignore_nullable=True)
        return got.drop("probe")

    return alone if request.param == "alone" else fused


def test_no_arg_construction_and_defaults():
    check_no_arg_construction(TicketGenerator)
    stage = TicketGenerator()
    assert stage.getTweetIdCol() == "tweet_id" and stage.getTextCol() == "text" and stage.getCreatedAtCol() == "created_at"
    assert stage.getSentimentCol() == "sentiment" and stage.getSentimentScoreCol() == "sentiment_score"
    assert stage.getCategoryCol() == "category" and stage.getEntitiesCol() == "entities"
    assert stage.getTrackingUrl() == "http://127.0.0.1:8080/tickets/{ticket_id}"
    assert stage.getCategories() == load_categories()
    assert stage.getModelVersion() == "unversioned" and stage.getErrorCol() == "error"


def test_needs_ticket_for_complaints_and_questions_not_praise_or_chatter(spark, run):
    df = spark.createDataFrame(
        _rows(
            ("01", "@united my bag is lost", "negative"),
            ("02", "@united how do I add a bag", "neutral"),
            ("03", "@united @delta is the wifi free on board", "neutral"),
            ("04", "@united thanks, great flight!", "positive"),
            ("05", "@united can you believe how great the crew was?", "positive"),
            ("06", "@united flying to Denver today http://t.co/abc?x=1", "neutral"),
            ("07", "@united any update on my refund?", "neutral"),
            ("08", "@united just landed", "neutral"),
            ("09", None, "negative"),
            ("10", "@united howdy", "neutral"),
            ("11", ".@united Why is it late", None),
            ("12", "@united When: tomorrow. Is it?", "positive"),
        ),
        SCHEMA,
    )
    got = run(TicketGenerator(), df).select("tweet_id", "needs_ticket", "error").orderBy("tweet_id")
    expected = spark.createDataFrame(
        [
            ("01", True, None),
            ("02", True, None),
            ("03", True, None),
            ("04", False, None),
            ("05", False, None),
            ("06", False, None),
            ("07", True, None),
            ("08", False, None),
            ("09", True, None),
            ("10", False, None),
            ("11", True, None),
            ("12", False, None),
        ],
        "tweet_id string, needs_ticket boolean, error string",
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def test_priority_rules(spark, run):
    df = spark.createDataFrame(
        _rows(
            ("01", "@united my bag is lost", "negative", 0.95, "baggage"),
            ("02", "@united stuck in Denver without my bag", "negative", 0.6, "baggage"),
            ("03", "@united when does the delayed flight leave?", "neutral", 0.7, "delay_customer_service"),
            ("04", "@united is my flight CANCELLED?", "neutral", 0.7, "delay_customer_service"),
            ("05", "@united waited two hours at the gate", "negative", 0.95, "delay_customer_service"),
            ("06", "@united waited two hours at the gate", "negative", 0.5, "delay_customer_service"),
            ("07", "@united can I pick a window seat?", "neutral", 0.8, "seating"),
            ("08", "@united can I change my seat now?", "neutral", 0.8, "seating"),
            ("09", "@united thanks, home now!", "positive", 0.99, "baggage"),
            ("10", "@united refund please", "negative", None, "reschedule_refund"),
            ("11", "@united is there legroom nowhere?", "neutral", 0.8, "seating"),
            ("12", "@united missed   my connection in ORD", "negative", 0.4, "customer_experience"),
        ),
        SCHEMA,
    )
    got = run(TicketGenerator(), df).select("tweet_id", "priority").orderBy("tweet_id")
    expected = spark.createDataFrame(
        [
            ("01", "medium"),
            ("02", "high"),
            ("03", "medium"),
            ("04", "high"),
            ("05", "high"),
            ("06", "medium"),
            ("07", "low"),
            ("08", "medium"),
            ("09", None),
            ("10", "medium"),
            ("11", "low"),
            ("12", "high"),
        ],
        "tweet_id string, priority string",
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def _entity(text: str, label: str) -> tuple:
    return (text, label, 0, len(text))


CUSTOM = [
    Category(code="bags", name="Bag Desk", prefix="BG", template="Sorry{flight}{airport}. {name} ticket {ticket_id}: {tracking_url}"),
    Category(code="long", name="Long", prefix="LONG", template="x" * 250 + "{flight} {ticket_id}"),
    Category(code="plain", name="Plain", prefix="PL"),
]


def test_reply_text_fills_slots_from_entities_and_never_echoes_the_tweet(spark, run):
    df = spark.createDataFrame(
        _rows(
            (
                "01",
                "@united ZEBRA my bag on UA 123 at DEN",
                "negative",
                0.9,
                "bags",
                [_entity("ZEBRA", "FLIGHT"), _entity("UA 123", "FLIGHT"), _entity("Denver", "AIRPORT"), _entity("den", "AIRPORT")],
            ),
            ("02", "@united flight 1234 lost my bag", "negative", 0.9, "bags", [_entity("flight 1234", "FLIGHT")]),
            ("03", "@united #B61234 bag?", "neutral", 0.9, "bags", [_entity("#b6-1234", "FLIGHT"), _entity("UA9", "DATE")]),
            ("04", "@united where is my bag ZEBRA", "neutral", 0.9, "bags", [_entity("ZEBRA", "FLIGHT")]),
            ("05", "@united my bag is lost", "negative", 0.9, "bags", []),
            ("06", "@united long story about UA1", "negative", 0.9, "long", [_entity("UA1", "FLIGHT")]),
            ("07", "@united lovely day", "positive", 0.9, "bags", [_entity("UA1", "FLIGHT")]),
            ("08", "@united my bag on UA1 is lost", "negative", 0.9, "plain", [_entity("UA1", "FLIGHT")]),
        ),
        SCHEMA,
    )
    stage = TicketGenerator(trackingUrl="https://help.example.com/t/{ticket_id}").setCategories(CUSTOM)
    rows = {r.tweet_id: r for r in run(stage, df).collect()}
    ids = {k: r.ticket_id for k, r in rows.items()}
    url = "https://help.example.com/t/"
    assert rows["01"].reply_text == f"Sorry on flight UA123 at DEN. Bag Desk ticket {ids['01']}: {url}{ids['01']}"
    assert rows["02"].reply_text == f"Sorry on flight 1234. Bag Desk ticket {ids['02']}: {url}{ids['02']}"
    assert rows["03"].reply_text == f"Sorry on flight B61234. Bag Desk ticket {ids['03']}: {url}{ids['03']}"
    assert rows["04"].reply_text == f"Sorry. Bag Desk ticket {ids['04']}: {url}{ids['04']}"
    assert rows["05"].reply_text == f"Sorry. Bag Desk ticket {ids['05']}: {url}{ids['05']}"
    # With the flight the long template would pass 280 characters, so the slot is dropped.
    assert rows["06"].reply_text == "x" * 250 + f" {ids['06']}"
    assert rows["07"].reply_text is None and rows["07"].ticket_id is None
    assert rows["08"].reply_text == f"We've opened ticket {ids['08']} for you on flight UA1. Track it at {url}{ids['08']}"
    for key, row in rows.items():
        assert row.error is None, key
        if row.reply_text is not None:
            assert len(row.reply_text) <= MAX_REPLY_CHARS
            assert "ZEBRA" not in row.reply_text and "Denver" not in row.reply_text
            assert validate_ticket_id(row.ticket_id) == row.ticket_id
    assert ids["01"].startswith("BG-150224-") and ids["06"].startswith("LONG-") and ids["08"].startswith("PL-")


def test_default_templates_fit_and_render():
    validate_templates(load_categories(), "http://127.0.0.1:8080/tickets/{ticket_id}")
    for cat in load_categories():
        reply = render_reply(
            cat.template,
            ticket_id=cat.prefix + "-000000-0000000",
            name=cat.name,
            tracking_url="http://127.0.0.1:8080/tickets/x",
            flight=" on flight UA1234",
        )
        assert "{" not in reply and len(reply) <= MAX_REPLY_CHARS


def test_spark_ticket_ids_equal_the_python_implementation(spark, run):
    rows = [
        (SNOWFLAKE, "2015-02-24 23:30:00 -0800", "baggage"),
        ("570306133677760514", "2015-02-24T19:35:52.000Z", "delay_customer_service"),
        (SNOWFLAKE, None, "seating"),
        (SNOWFLAKE, "garbage", "online_booking"),
        ("42", "2026-01-31", "extra_charges"),
        ("43", "2026-01-31T23:59:59+00:00", "customer_experience"),
    ]
    df = spark.createDataFrame([(t, "@united help?", c, "neutral", 0.5, cat, None) for t, c, cat in rows], SCHEMA)
    got = run(TicketGenerator(), df).select("tweet_id", "created_at", "category", "ticket_id", "error").collect()
    assert len(got) == len(rows)
    for row in got:
        assert row.error is None
        assert row.ticket_id == make_ticket_id(row.tweet_id, PREFIX[row.category], row.created_at)
    assert {r.ticket_id.split("-")[1] for r in got if r.tweet_id == SNOWFLAKE} == {"150225", "150224"}


def test_timestamp_and_date_created_at_use_the_utc_date_whatever_the_session_zone(spark, run):
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        instant = datetime(2015, 2, 25, 3, 0, tzinfo=timezone.utc)  # 2015-02-24 19:00 in Los Angeles
        df = spark.createDataFrame(
            [(10, "@united my bag?", instant, date(2015, 3, 1), "negative", 0.9, "baggage")],
            "tweet_id long, text string, created_at timestamp, created_day date, sentiment string, sentiment_score double, category string",
        )
        by_ts = run(TicketGenerator(), df).select("ticket_id", "error").first()
        by_day = run(TicketGenerator(createdAtCol="created_day"), df).select("ticket_id").first()
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert by_ts.error is None
    assert by_ts.ticket_id == make_ticket_id("10", "BAG", instant) and by_ts.ticket_id.startswith("BAG-150225-")
    assert by_day.ticket_id == make_ticket_id("10", "BAG", date(2015, 3, 1))


def test_bad_rows_get_an_error_and_null_outputs(spark, run):
    df = spark.createDataFrame(
        [
            (None, "@united lost bag", "2015-02-24", "negative", 0.9, "baggage", None, None),
            ("  ", "@united lost bag", "2015-02-24", "negative", 0.9, "baggage", None, None),
            ("3", "@united lost bag", "2015-02-24", "negative", 0.9, None, None, None),
            ("4", "@united lost bag", "2015-02-24", "negative", 0.9, "lost_pets", None, None),
            ("5", "@united love you", "2015-02-24", "positive", 0.9, None, None, None),
            ("6", "@united lost bag", None, "negative", 0.9, "baggage", None, None),
            ("7", "@united lost bag", "2015-02-24", "negative", 0.9, "baggage", None, "SentimentModel: text is empty"),
            (SNOWFLAKE, "@united lost bag", None, "negative", 0.9, "baggage", None, None),
        ],
        SCHEMA + ", error string",
    )
    got = run(TicketGenerator(), df).select("tweet_id", "needs_ticket", "ticket_id", "priority", "reply_text", "error")
    rows = {r.tweet_id: r for r in got.collect()}
    assert rows[None].error == "TicketGenerator: tweet_id is null or empty; every row needs the tweet id."
    assert rows["  "].error == rows[None].error
    assert rows["3"].error == "TicketGenerator: category is null; a tweet that needs a ticket needs a category code."
    assert rows["4"].error.startswith("TicketGenerator: unknown category code 'lost_pets'; expected one of baggage,")
    assert rows["6"].error.startswith("TicketGenerator: Tweet '6': created_at None is missing or not ISO-8601")
    assert rows["7"].error == "SentimentModel: text is empty"
    for key in [None, "  ", "3", "4", "6", "7"]:
        row = rows[key]
        assert (row.needs_ticket, row.ticket_id, row.priority, row.reply_text) == (None, None, None, None), key
    # A tweet that needs no ticket does not need a category either.
    assert (rows["5"].needs_ticket, rows["5"].error) == (False, None)
    assert rows[SNOWFLAKE].ticket_id == make_ticket_id(SNOWFLAKE, "BAG", "2015-02-24") and rows[SNOWFLAKE].error is None


def test_schema_problems_fail_at_transform_time_with_a_clear_message(spark, run):
    df = spark.createDataFrame([("1", "@united hi?", "2015-02-24", "neutral", 0.5, "baggage", None)], SCHEMA)
    with pytest.raises(InputError, match="input column 'sentiment' is missing"):
        run(TicketGenerator(), df.drop("sentiment"))
    with pytest.raises(InputError, match="column 'entities' must be array<struct<text, label, start, end>>, found string"):
        run(TicketGenerator(), df.withColumn("entities", df.text))
    with pytest.raises(InputError, match="column 'tweet_id' must be a string or integer, found double"):
        run(TicketGenerator(), df.withColumn("tweet_id", df.sentiment_score))
    with pytest.raises(InputError, match="column 'created_at' must be a string, timestamp or date"):
        run(TicketGenerator(), df.withColumn("created_at", df.sentiment_score))


def test_bad_configuration_is_rejected():
    cats = [Category(code="a", name="A", prefix="AA", template="{ticket_id} {customer}")]
    with pytest.raises(ConfigError, match=r"unknown slots \['customer'\]"):
        validate_templates(cats, "http://x/{ticket_id}")
    with pytest.raises(ConfigError, match="even without flight and airport"):
        validate_templates([Category(code="a", name="A", prefix="AA", template="y" * 270 + " {ticket_id}")], "http://x/{ticket_id}")
    with pytest.raises(ConfigError, match="trackingUrl may only use the slot"):
        validate_templates(load_categories(), "http://x/{tweet_id}")
    with pytest.raises(ConfigError, match="prefix must be 1-5 letters"):
        TicketGenerator().setCategoriesJson(json.dumps([{"code": "a", "name": "A", "prefix": "A1"}]))


def test_long_template_fails_transform_without_running_a_job(spark):
    df = spark.createDataFrame([("1", "@united hi?", "2015-02-24", "neutral", 0.5, "a", None)], SCHEMA)
    stage = TicketGenerator().setCategories([Category(code="a", name="A", prefix="AA", template="y" * 300)])
    with pytest.raises(ConfigError, match="shorten the template"):
        stage.transform(df)


def _contract_frame(spark):
    return spark.createDataFrame(
        _rows(
            (SNOWFLAKE, "@united my bag on UA 12 is lost", "negative", 0.95, "bags", [_entity("UA 12", "FLIGHT")]),
            ("2", "@united how do I pick a seat?", "neutral", 0.7, "plain", None),
            ("3", "@united great crew", "positive", 0.9, None, None),
            ("4", "@united stuck here", "negative", 0.9, "nope", None),
            ("5", "@united stuck here", "negative", 0.9, "bags", None, "not a date"),
        ),
        SCHEMA,
    )


def test_save_load_round_trip_keeps_categories_and_urls(spark, tmp_path):
    stage = TicketGenerator(trackingUrl="https://help.example.com/t/{ticket_id}", modelVersion="2026.02").setCategories(CUSTOM)
    out = check_save_load_round_trip(stage, _contract_frame(spark), tmp_path)
    rows = {r.tweet_id: r for r in out.collect()}
    assert rows[SNOWFLAKE].ticket_id.startswith("BG-150224-") and "https://help.example.com/t/" in rows[SNOWFLAKE].reply_text
    assert rows["5"].ticket_id is None and rows["5"].error.startswith("TicketGenerator: Tweet '5': created_at 'not a date'")
    assert {r.model_version for r in rows.values()} == {"2026.02"}
    assert json.loads(stage.getCategoriesJson()) == json.loads(categories_to_json(CUSTOM))


def test_streaming(spark, tmp_path):
    stage = TicketGenerator().setCategories(CUSTOM)
    check_streaming(stage, _contract_frame(spark), spark, tmp_path)


def test_saved_stage_carries_its_default_categories(spark, tmp_path):
    target = str(tmp_path / "tickets")
    TicketGenerator().save(target)
    (part,) = (tmp_path / "tickets" / "metadata").glob("part-*")
    metadata = json.loads(part.read_text())
    assert json.loads(metadata["defaultParamMap"]["categoriesJson"]) == json.loads(categories_to_json(load_categories()))
    assert TicketGenerator.load(target).getCategories() == load_categories()
    # A host without conf/categories.yaml builds the stage with empty categories, then load() sets the saved ones.
    assert _default_categories_json(tmp_path / "absent.yaml") == ""
    bare = TicketGenerator()
    bare._setDefault(categoriesJson="")
    with pytest.raises(ConfigError, match="TicketGenerator has no categories"):
        bare.getCategories()
    DefaultParamsReader.getAndSetParams(bare, metadata)
    assert bare.getCategories() == load_categories()

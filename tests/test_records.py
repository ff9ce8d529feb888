from __future__ import annotations

import json

import pytest

from sparktweet.errors import InputError
from sparktweet.records import detect_format, read_split, read_tweets

CSV = '''tweet_id,airline_sentiment,negativereason,airline,name,text,tweet_created
570306133677760513,neutral,,Virgin America,cairdin,"@VirginAmerica What @dhepburn said.",2015-02-24 11:35:52 -0800
570301130888122368,negative,Bad Flight,Virgin America,jnardino,"@VirginAmerica it's ""really"" bad
and multi-line",2015-02-24 11:15:59 -0800
abc,negative,,United,x,"@united bad id",2015-02-24 11:15:59 -0800
570301130888122369,negative,,United,y,,2015-02-24 11:15:59 -0800
'''


def test_tweets_csv_maps_onto_the_canonical_record(spark, tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(CSV.encode("utf-8") + b'570301130888122370,negative,,United,z,"caf\xe9 latin-1",2015-02-24 11:15:59 -0800\n')
    rows = {r.tweet_id: r for r in read_tweets(spark, str(path)).collect()}
    assert len(rows) == 5
    assert rows["570301130888122370"].error == "text is not valid UTF-8"
    first = rows["570306133677760513"]
    assert first.author_username == "cairdin"
    assert first.created_at == "2015-02-24T19:35:52Z"
    assert str(first.date) == "2015-02-24"
    assert first.airline_sentiment == "neutral" and first.source == "dump" and first.error is None
    assert rows["570301130888122368"].text == '@VirginAmerica it\'s "really" bad\nand multi-line'
    assert rows["abc"].error.startswith("invalid tweet_id")
    assert rows["570301130888122369"].error == "missing text"


def test_jsonl_bad_records_get_reasons_not_failures(spark, tmp_path):
    path = tmp_path / "t.jsonl"
    good = {"tweet_id": "1", "text": "@united hi", "created_at": "2026-11-01T10:00:00Z", "mentions": ["united"]}
    lines = [
        json.dumps(good),
        json.dumps({"tweet_id": 1234567890123456789, "text": "numeric id", "created_at": "2026-11-01T10:00:00.000Z"}),
        json.dumps({"tweet_id": None, "text": "null id"}),
        json.dumps({"tweet_id": "12345678901234567890123", "text": "too long id"}),
        '{"tweet_id": "5", "text": ',
        json.dumps({"tweet_id": "6", "text": "x" * 100_000}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(path, "ab") as f:
        f.write(b'{"tweet_id": "7", "text": "caf\xe9 latin-1 bytes"}\n')
    rows = read_tweets(spark, str(path)).collect()
    assert len(rows) == 7
    by_text = {r.text: r for r in rows if r.text}
    assert by_text["@united hi"].error is None and by_text["@united hi"].mentions == ["united"]
    assert by_text["numeric id"].tweet_id == "1234567890123456789" and by_text["numeric id"].error is None
    assert by_text["null id"].error == "missing tweet_id"
    assert by_text["too long id"].error.startswith("invalid tweet_id")
    assert by_text["x" * 100_000].error is None  # length is the preprocessor's call
    errors = sorted(r.error for r in rows if r.error)
    # Truncated JSON and bytes that are not UTF-8 both fail JSON parsing.
    assert errors.count("malformed record") == 2


def test_parquet_round_trip_and_format_detection(spark, tmp_path):
    df = spark.createDataFrame([("9", "hello @delta", "2026-11-01T10:00:00Z")], "tweet_id string, text string, created_at string")
    out = tmp_path / "in.parquet"
    df.write.parquet(str(out))
    assert detect_format(str(out)) == "parquet"
    row = read_tweets(spark, str(out)).first()
    assert row.tweet_id == "9" and row.error is None and row.source == "dump"
    with pytest.raises(InputError, match="format"):
        detect_format(str(tmp_path / "x.txt"))


def test_split_file_requires_columns(spark, tmp_path):
    bad = tmp_path / "split.csv"
    bad.write_text("id,part\n1,train\n")
    with pytest.raises(InputError, match="lacks"):
        read_split(spark, str(bad))

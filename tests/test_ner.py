"""The spaCy side of EntityExtractor: rules, offsets, failure isolation, pattern files, model mixing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy

from sparktweet import ner
from sparktweet.errors import ModelError
from sparktweet.ner import Entity, Extraction


@pytest.fixture(scope="module")
def pattern_dir(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("ner-patterns"))
    ner.write_patterns(ner.default_patterns(), directory)
    return directory


@pytest.fixture(scope="module")
def nlp(pattern_dir):
    return ner.load_nlp(pattern_dir)


def found(nlp, text: str) -> list[tuple[str, str]]:
    (result,) = ner.extract(nlp, [text])
    assert result.error is None
    for e in result.entities:
        assert text[e.start : e.end] == e.text, e
    return [(e.text, e.label) for e in result.entities]


def test_brief_examples(nlp):
    assert found(nlp, "@united my bag never arrived in Denver") == [("united", "AIRLINE"), ("Denver", "CITY")]
    assert found(nlp, "Flight UA 1234 from ORD to SFO delayed 3 hours, paid $25 for wifi") == [
        ("UA 1234", "FLIGHT"),
        ("ORD", "AIRPORT"),
        ("SFO", "AIRPORT"),
        ("3 hours", "TIME"),
        ("$25", "MONEY"),
    ]
    assert found(nlp, "confirmation number ABC12D") == [("ABC12D", "BOOKING_REF")]
    assert found(nlp, "I do NOT want THE seat") == []


def test_offsets_are_in_the_original_text(nlp):
    text = "thx!@united 🙏 &amp; Feb 24th at 5:30 PM ORD-&gt;SFO, conf#ABC12D"
    (result,) = ner.extract(nlp, [text])
    assert [(e.text, e.label) for e in result.entities] == [
        ("united", "AIRLINE"),
        ("Feb 24th", "DATE"),
        ("5:30 PM", "TIME"),
        ("ORD", "AIRPORT"),
        ("SFO", "AIRPORT"),
        ("ABC12D", "BOOKING_REF"),
    ]
    assert result.entities[0] == Entity("united", "AIRLINE", 5, 11)
    assert all(text[e.start : e.end] == e.text for e in result.entities)


@pytest.mark.parametrize(
    "text",
    [
        "I'M GOING TO ASK FOR THE CEO AND THE TSA",  # shouted words that are IATA codes
        "the USA is big, OMG",
        "MLI is lovely",  # a small airport's code needs context
    ],
)
def test_capitalised_words_are_not_airports(nlp, text):
    assert [e for e in found(nlp, text) if e[1] == "AIRPORT"] == []


def test_small_airports_need_context_and_routes_need_two_codes(nlp):
    assert found(nlp, "flying to MLI tomorrow") == [("MLI", "AIRPORT"), ("tomorrow", "DATE")]
    assert found(nlp, "my MLI-&gt;DEN flight") == [("MLI", "AIRPORT"), ("DEN", "AIRPORT")]
    assert found(nlp, "SYS-CON Media") == []
    assert found(nlp, "stuck at Logan airport") == [("Logan airport", "AIRPORT")]


def test_cities_names_and_airlines(nlp):
    assert found(nlp, "Gary at the gate was great") == []
    assert found(nlp, "diverted to Lubbock") == [("Lubbock", "CITY")]
    assert found(nlp, "New York to Fort Lauderdale") == [("New York", "CITY"), ("Fort Lauderdale", "CITY")]
    assert found(nlp, "the United States") == []
    assert found(nlp, "I flew American and @SouthwestAir") == [("American", "AIRLINE"), ("SouthwestAir", "AIRLINE")]
    assert found(nlp, "American citizens") == []


def test_flight_numbers_and_quantities(nlp):
    assert found(nlp, "my flight 2 hours late") == [("2 hours", "TIME")]
    assert found(nlp, "on #UA123 and flt #45, then UAL212") == [("UA123", "FLIGHT"), ("45", "FLIGHT"), ("UAL212", "FLIGHT")]
    assert found(nlp, "flights 2516 &amp; 2244") == [("2516", "FLIGHT")]


def test_dates_times_money(nlp):
    assert found(nlp, "leaving 2/24 at 17:30, back Monday") == [("2/24", "DATE"), ("17:30", "TIME"), ("Monday", "DATE")]
    assert found(nlp, "rated 10/10, half of 1/2") == []
    assert found(nlp, "on the 24th, 25 dollars or USD 50") == [("24th", "DATE"), ("25 dollars", "MONEY"), ("USD 50", "MONEY")]
    assert found(nlp, "landed at 11:40am. tomorrow morning") == [("11:40am", "TIME"), ("tomorrow morning", "TIME")]


def test_booking_refs(nlp):
    assert found(nlp, "record locator: KARAAX") == [("KARAAX", "BOOKING_REF")]
    assert found(nlp, "ticket CHANGE please") == []
    assert found(nlp, "tail N598JB and an ERJ145") == []
    assert found(nlp, "UA1234") == [("UA1234", "FLIGHT")]


def test_null_empty_long_and_failing_texts(nlp):
    results = ner.extract(nlp, [None, "", "Denver " * 20, 42, "in Denver"], max_length=100)  # type: ignore[list-item]
    assert results[0] == Extraction(None, None)
    assert results[1] == Extraction([], None)
    assert results[2].entities is None and "140 characters, more than the limit of 100" in results[2].error
    # spaCy itself rejects a non-string; only that text fails, the batch goes on.
    assert results[3].entities is None and results[3].error.startswith("EntityExtractor: spaCy failed on this text")
    assert results[4] == Extraction([Entity("Denver", "CITY", 3, 9)], None)


def test_long_text_within_the_limit(nlp):
    text = "lost bag " * 6000 + "in Denver"
    (result,) = ner.extract(nlp, [text])
    assert result == Extraction([Entity("Denver", "CITY", 54003, 54009)], None)


def test_labels_filter(nlp):
    (result,) = ner.extract(nlp, ["@united lost my bag in Denver"], labels=["CITY"])
    assert result.entities == [Entity("Denver", "CITY", 23, 29)]


def test_pattern_file_round_trip_and_brand_rules(tmp_path: Path):
    brand = [ner.Airline("ZZ", ("Acme Air",), ("acmeair",))]
    patterns = ner.airline_patterns(brand)
    path = ner.write_patterns(patterns, str(tmp_path))
    assert ner.read_patterns(str(tmp_path)) == json.loads(json.dumps(patterns))
    assert json.loads((tmp_path / ner.META_FILE).read_text())["format"] == ner.PATTERN_FORMAT
    nlp = ner.load_nlp(path)
    assert nlp.pipe_names == ["sparktweet_regex", "sparktweet_ruler", "sparktweet_merge"]
    (result,) = ner.extract(nlp, ["@AcmeAir flight ZZ 123 beats United"])
    assert [(e.text, e.label) for e in result.entities] == [("AcmeAir", "AIRLINE"), ("ZZ 123", "FLIGHT")]


def test_bad_pattern_files_say_what_is_wrong(tmp_path: Path):
    bad_label = tmp_path / "label.jsonl"
    bad_label.write_text(json.dumps({"label": "PERSON", "pattern": "Bob"}) + "\n")
    with pytest.raises(ModelError, match="label 'PERSON' is not one of"):
        ner.read_patterns(str(bad_label))
    bad_json = tmp_path / "json.jsonl"
    bad_json.write_text("{not json\n")
    with pytest.raises(ModelError, match="line 1 is not JSON"):
        ner.read_patterns(str(bad_json))
    with pytest.raises(ModelError, match="does not exist"):
        ner.read_patterns(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ModelError, match="does not compile"):
        ner.write_patterns([{"label": "CITY", "regex": "("}], str(tmp_path / "out"))


def test_missing_model_is_a_clear_error():
    with pytest.raises(ModelError, match="spaCy model 'en_core_web_nonexistent' is not installed.*spacyModel=''"):
        ner.build_nlp([], model="en_core_web_nonexistent")


def test_statistical_model_fills_gaps_without_overwriting_rules(pattern_dir, tmp_path: Path):
    # A real spaCy pipeline saved to disk stands in for en_core_web_sm: its entity_ruler plays
    # the statistical NER, predicting after our rules have run.
    model = spacy.blank("en")
    model.add_pipe("entity_ruler").add_patterns(
        [
            # Were the rules' CITY overwritten, Denver would vanish as a PERSON.
            {"label": "PERSON", "pattern": "Denver"},
            {"label": "GPE", "pattern": "Lubbock"},
            {"label": "GPE", "pattern": "Gotham"},
            {"label": "ORG", "pattern": "delta"},
            {"label": "ORG", "pattern": "Acme"},
            {"label": "DATE", "pattern": [{"LOWER": "the"}, {"LOWER": "holidays"}]},
            {"label": "PERSON", "pattern": "Bob"},
        ]
    )
    model_path = tmp_path / "fake_sm"
    model.to_disk(model_path)
    nlp = ner.load_nlp(pattern_dir, model=str(model_path))
    assert nlp.pipe_names[:3] == ["sparktweet_regex", "sparktweet_ruler", "sparktweet_merge"]
    text = "Bob: Denver, Lubbock and Gotham over the holidays with delta not Acme"
    assert found(nlp, text) == [
        ("Denver", "CITY"),
        ("Lubbock", "CITY"),
        ("the holidays", "DATE"),
        ("delta", "AIRLINE"),
    ]

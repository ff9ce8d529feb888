"""The NER fast path (:class:`sparktweet.ner.FastExtractor`) gives exactly the spaCy pipeline's entities."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sparktweet import ner

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "default" / "pipeline" / "stages"

# Texts where tokenization, splitting, overlaps or case folding could make the two paths differ.
TRICKY = [
    "@united my bag never arrived in Denver",
    "thx!@united 🙏 &amp; Feb 24th at 5:30 PM ORD-&gt;SFO, conf#ABC12D",
    "Flight UA 1234 from ORD to SFO delayed 3 hours, paid $25 for wifi",
    "@JetBlue @SouthwestAir @VirginAmerica @USAirways @AmericanAir #delta",
    "  leading spaces then @united to  JFK\tand\n\nDenver airport",
    " to BTV", "to BTV ", "", " ", "\n", "Denver airport", "Denver  airport", "Denver airport's lounge",
    "Denver Airport, DENVER AIRPORT, Denver AirPort",
    "Logan airport, Midway Airport and Hobby airport-bound", "flying to Logan tomorrow morning",
    "United States vs United Airlines vs American Express vs American Airlines Center",
    "New York City, NYC, Washington D.C. and St. Louis on the 3rd", "Fort Worth Fort Worth",
    "flight 2 hours late, flights 2516 & 2244, fl. 123, FLT#456, UAL212, B6 1234",
    "DEN-ORD, ORD→LAX, LAX ✈️ JFK, SEA to PDX, BOS / DCA", "I do NOT want THE seat ON TIME",
    "record locator: QX7Y2Z, PNR is ABCDEF, ticket CHANGE, N598JB ERJ145 737MAX",
    "10/10 would fly again 1/2 of the time, 2/24, 2015-02-24, Monday Feb. 23rd, 3 days ago",
    "5pm, 17:30, 5:30 PM-7 p.m., tonight, 45 mins, half an hour, 2h", "$1,200.50 and 25 dollars, USD 50, twenty bucks",
    "\u212a\u212a and \u0130stanbul, \u017fan Diego, TONİGHT at 5 \u212aM, ſtuck in Denver",
    "Thank you @united!!!Denver!!! #Denver #NYC #Chicago", "O'Hare OHare LaGuardia La Guardia Sea-Tac DIA",
    "gonna cannot don't Denver's o'clock", "a\u00a0Denver\u2009airport\u3000NYC", "Charlotte at the gate was great, fly to Charlotte",
    "@united@united@united", "#UA1234 #UA 123 UA1234x UA12345", "Chicago-O'Hare/Denver", "Denver" * 40,
]


@pytest.fixture(scope="module")
def nlp():
    (artifacts,) = SHIPPED.glob("*_EntityExtractor_*/artifacts")
    return ner.load_nlp(str(artifacts))


def _fuzz(seed: int, count: int) -> list[str]:
    """Fragments of the tricky texts glued with random whitespace and punctuation."""
    rng = random.Random(seed)
    pieces = [p for t in TRICKY for p in t.split()] + ["airport", "Airport", "-", "#", "@", "'s", "!!", "to", "in"]
    glue = [" ", "  ", "", "\n", "\t", " \n ", ", ", "-", "/", "\u00a0"]
    return ["".join(rng.choice(pieces) + rng.choice(glue) for _ in range(rng.randint(1, 25))) for _ in range(count)]


def test_fast_path_is_used_for_the_shipped_rules(nlp):
    assert ner.fast_extractor(nlp) is not None


@pytest.mark.parametrize("texts", [TRICKY, _fuzz(1, 400), _fuzz(2, 400)], ids=["tricky", "fuzz1", "fuzz2"])
def test_fast_path_equals_spacy_pipeline(nlp, texts):
    fast = ner.extract(nlp, texts)
    slow = ner.extract(nlp, texts, fast=False)
    for text, a, b in zip(texts, fast, slow, strict=True):
        assert a == b, text


def test_tokens_equal_spacy_tokenizer(nlp):
    fast = ner.fast_extractor(nlp)
    for text in [*TRICKY, *_fuzz(3, 300)]:
        assert fast.tokens(text)[0] == [(t.idx, t.idx + len(t.text)) for t in nlp.tokenizer(text)], repr(text)


def test_prefilter_never_drops_a_match(nlp):
    regex = nlp.get_pipe("sparktweet_regex")
    fast = ner.fast_extractor(nlp)
    for text in [*TRICKY, *_fuzz(4, 300)]:
        full = list(regex.matches(text))
        assert list(regex.matches(text, prefilter=True)) == full, text
        assert list(regex.matches(text, present=fast.tokens(text)[1])) == full, text
        # and pattern by pattern: a pattern that matches has one of its literals in the text
        for pattern in regex.patterns:
            if pattern.atoms is not None and pattern.regex.search(text):
                assert any(a in ner.fold_case(text) for a in pattern.atoms), (pattern.regex.pattern, text)


@pytest.mark.parametrize(
    ("regex", "literals"),
    [
        (r"\b(?i:today|tomorrow)\b", ("today", "tomorrow")),
        (r"(?i:hours?|hrs?)", ("hour", "hr")),
        (r"\bconf(?:irmation)?\s*#", ("conf",)),
        (r"[A-Z]{3}", None),
        (r"\d+", None),
        (r"(?:a|b)?c", ("c",)),
        (r"x*", None),
        (r"(?:foo|\w+)bar", ("bar",)),
        (r"(a)\1", ("a",)),
    ],
)
def test_required_literals(regex, literals):
    assert ner.required_literals(regex) == literals


@pytest.mark.parametrize("text", ["\u212aid", "\u0130D", "\u017fky", "KID", "k\u0130d"])
def test_fold_case_covers_ignorecase_equivalents(text):
    import re

    for regex in (r"(?i:kid)", r"(?i:id)", r"(?i:sky)", r"(?i:kid)"):
        if re.search(regex, text):
            literals = ner.required_literals(regex)
            assert any(a in ner.fold_case(text) for a in literals), (regex, text)


def test_pipelines_it_does_not_mirror_run_through_spacy(tmp_path):
    token_pattern = [{"label": "CITY", "pattern": [{"LOWER": "denver"}]}, {"label": "TIME", "regex": r"\d+pm"}]
    nlp = ner.build_nlp(token_pattern)
    assert ner.fast_extractor(nlp) is None
    (result,) = ner.extract(nlp, ["DENVER at 5pm"])
    assert [(e.text, e.label) for e in result.entities] == [("DENVER", "CITY"), ("5pm", "TIME")]


def test_regex_only_and_phrase_only_pipelines(tmp_path):
    texts = ["meet at 5pm in Denver", "Denver5pm", "nothing here", "Denver Denver at 12pm"]
    for patterns in ([{"label": "TIME", "regex": r"\d+pm"}], [{"label": "CITY", "pattern": "Denver"}]):
        nlp = ner.build_nlp(patterns)
        assert ner.fast_extractor(nlp) is not None
        assert ner.extract(nlp, texts) == ner.extract(nlp, texts, fast=False)


def test_shipped_model_entities_unchanged(nlp):
    # Fixed expectations from the spaCy pipeline before the fast path existed.
    (result,) = ner.extract(nlp, [TRICKY[1]])
    assert [(e.text, e.label, e.start, e.end) for e in result.entities] == [
        ("united", "AIRLINE", 5, 11),
        ("Feb 24th", "DATE", 20, 28),
        ("5:30 PM", "TIME", 32, 39),
        ("ORD", "AIRPORT", 40, 43),
        ("SFO", "AIRPORT", 48, 51),
        ("ABC12D", "BOOKING_REF", 58, 64),
    ]


def test_tweets_csv_entities_identical(nlp, shared_data):
    import pandas as pd

    texts = pd.read_csv(shared_data / "Tweets.csv", dtype=str, keep_default_na=False)["text"].tolist()
    fast = ner.extract(nlp, texts)
    slow = ner.extract(nlp, texts, fast=False)
    differ = [t for t, a, b in zip(texts, fast, slow, strict=True) if a != b]
    assert not differ, differ[:5]


@pytest.mark.parametrize(
    ("regex", "needs"),
    [
        (r"\bflight\s*(\d{1,4})", True),
        (r"(?:[12]\d|3[01])(?i:st|nd)", True),
        (r"(?=[A-Z]*\d)[A-Z0-9]{6}", True),
        (r"\d*h", False),
        (r"(?:\d+|one)\s+hours?", False),
        (r"(?!\d)x", False),
        (r"[0-9a]", False),
    ],
)
def test_requires_digit(regex, needs):
    assert ner.requires_digit(regex) is needs


def test_digit_prefilter_sees_unicode_digits():
    nlp = ner.build_nlp([{"label": "TIME", "regex": r"\d+\s?pm"}])
    texts = ["at \u0665pm", "at 5pm", "at five pm"]  # ARABIC-INDIC DIGIT FIVE is a \d too
    assert ner.extract(nlp, texts) == ner.extract(nlp, texts, fast=False)
    assert [len(r.entities) for r in ner.extract(nlp, texts)] == [1, 1, 0]


@pytest.mark.parametrize(
    ("regex", "needs"),
    [
        (r"to ([A-Z]{3})", True),
        (r"(?-i:[A-Z]{3})", True),
        (r"(?i)[A-Z]{3}", False),
        (r"(?i:[A-Z]{3})", False),
        (r"[A-Z]{2}", False),
        (r"[A-Za-z]{3}", False),
        (r"(?:[A-Z]{3}|x)", False),
    ],
)
def test_requires_capitals(regex, needs):
    assert ner.requires_capitals(regex) is needs


def test_capitals_prefilter_is_per_chunk_safe():
    nlp = ner.build_nlp([{"label": "AIRPORT", "regex": r"\b([A-Z]{3})\b"}, {"label": "CITY", "pattern": "Denver"}])
    texts = ["JFK", "JF K", "to JFK\tnow", "jfk", "ÀBCD", "Denver ORD", "AB\u00a0C"]
    assert ner.extract(nlp, texts) == ner.extract(nlp, texts, fast=False)

"""Airline-domain named entities with spaCy: rules first, an optional statistical model second.

Imports no pyspark: :mod:`sparktweet.entities` wraps this module in a Spark stage.

The rules live in one JSON Lines file (``patterns.jsonl``), the stage's artifact, so a brand can
ship its own. Each line is one of

- a phrase for spaCy's ``EntityRuler``: ``{"label": "CITY", "pattern": "Denver"}`` (matched
  case-sensitively on token text, optional ``"id"``);
- a regular expression run on the raw text: ``{"label": "FLIGHT", "regex": "...", "groups": [1],
  "allowed": [...], "exclude": [...]}``. ``groups`` names the capture groups that are the entity
  (``0`` is the whole match), so context words ("flight", "from", "confirmation") can be required
  without being part of the entity; ``allowed`` restricts the captured text to a list (IATA codes)
  and ``exclude`` rejects some captured texts (case-insensitive).

The pipeline is ``spacy.blank("en")`` plus three components: ``sparktweet_regex`` (runs the
expressions and splits tokens where a match starts or ends inside one, so every match becomes a
token-aligned span), ``sparktweet_ruler`` (spaCy's EntityRuler, in its ``future_entity_ruler``
implementation, for the phrases) and ``sparktweet_merge`` (keeps the longest non-overlapping spans,
ties broken by :data:`LABEL_PRIORITY`). Character offsets always refer to the original text.

:func:`extract` runs a rules-only pipeline through :class:`FastExtractor` (about 5x faster, same
entities: spaCy's tokenizer memoised per whitespace-delimited chunk, each expression skipped when
the text lacks the literals it requires, the ruler and the merge redone on offsets); a pipeline with
a statistical model or token patterns, and ``extract(..., fast=False)``, run the spaCy components.

Examples
--------
>>> nlp = build_nlp(default_patterns())
>>> extract(nlp, ["@united my bag never arrived in Denver"])[0].entities
[Entity(text='united', label='AIRLINE', start=1, end=7), Entity(text='Denver', label='CITY', start=32, end=38)]
"""

from __future__ import annotations

import bisect
import functools
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import unicodedata
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import spacy
from spacy.language import Language
from spacy.pipeline.span_ruler import prioritize_new_ents_filter
from spacy.tokens import Doc, Span

from sparktweet.errors import ModelError

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("AIRLINE", "FLIGHT", "AIRPORT", "CITY", "DATE", "TIME", "MONEY", "BOOKING_REF")
# Spans that must win against a shorter entity and then vanish ("United States" is no airline).
IGNORE = "IGNORE"
# Equal-length overlaps: the more specific label wins ("UA1234" is a flight, not a record locator).
LABEL_PRIORITY: dict[str, int] = {
    IGNORE: 0,
    "FLIGHT": 1,
    "BOOKING_REF": 2,
    "AIRPORT": 3,
    "AIRLINE": 4,
    "MONEY": 5,
    "TIME": 6,
    "DATE": 7,
    "CITY": 8,
}
PATTERNS_FILE = "patterns.jsonl"
META_FILE = "meta.json"
PATTERN_FORMAT = 1
REGEX_SPANS_KEY = "sparktweet_regex"
DEFAULT_MAX_LENGTH = 100_000


class Entity(NamedTuple):
    """One entity: ``text == original_text[start:end]``."""

    text: str
    label: str
    start: int
    end: int


class Extraction(NamedTuple):
    """Entities of one text, or the reason there are none (``None`` both for a null text)."""

    entities: list[Entity] | None
    error: str | None


@dataclass(frozen=True)
class Airline:
    """An airline the rules recognise.

    Parameters
    ----------
    code
        IATA designator ("UA"), used for flight numbers ("UA 1234") and as the patterns' id.
    names
        Surface forms matched case-sensitively ("United", "United Airlines", "UNITED").
    handles
        X handles without "@", matched case-insensitively after "@" or "#".
    code_alone
        Whether the bare designator is a mention; False where it is a common word ("US", "AS", "HA").
    contextual_names
        Names too ambiguous alone ("American"), recognised only after on/with/fly/flew/booked...
    icao
        ICAO designator ("UAL"), also accepted in flight numbers ("UAL212").
    """

    code: str
    names: tuple[str, ...]
    handles: tuple[str, ...] = ()
    code_alone: bool = True
    contextual_names: tuple[str, ...] = ()
    icao: str = ""


DEFAULT_AIRLINES: tuple[Airline, ...] = (
    Airline("UA", ("United", "United Airlines", "UNITED", "UAL"), ("united",), icao="UAL"),
    Airline(
        "AA",
        ("American Airlines", "American Air", "AmericanAirlines", "AmericanAir", "AMERICAN AIRLINES", "AAL"),
        ("AmericanAir",),
        contextual_names=("American", "AMERICAN"),
        icao="AAL",
    ),
    Airline("DL", ("Delta", "Delta Air Lines", "Delta Airlines", "DELTA"), ("Delta",), icao="DAL"),
    Airline("WN", ("Southwest", "Southwest Airlines", "SouthwestAir", "SOUTHWEST", "SWA"), ("SouthwestAir",), icao="SWA"),
    Airline("B6", ("JetBlue", "jetBlue", "Jetblue", "jetblue", "JETBLUE", "Jet Blue"), ("JetBlue",), icao="JBU"),
    Airline("US", ("US Airways", "USAirways", "US Air", "USAir", "usairways", "US AIRWAYS"), ("USAirways",), code_alone=False, icao="AWE"),
    Airline("VX", ("Virgin America", "VirginAmerica", "VIRGIN AMERICA"), ("VirginAmerica",), icao="VRD"),
    Airline("AS", ("Alaska Airlines", "Alaska Air", "AlaskaAir"), ("AlaskaAir",), code_alone=False, contextual_names=("Alaska",), icao="ASA"),
    Airline("NK", ("Spirit", "Spirit Airlines", "SPIRIT"), ("SpiritAirlines",), icao="NKS"),
    Airline("F9", ("Frontier", "Frontier Airlines", "FRONTIER"), ("FlyFrontier",), icao="FFT"),
    Airline("HA", ("Hawaiian Airlines", "Hawaiian Air"), ("HawaiianAir",), code_alone=False, contextual_names=("Hawaiian",), icao="HAL"),
    Airline("G4", ("Allegiant", "Allegiant Air"), ("Allegiant",), icao="AAY"),
)

# Longer phrases that contain an airline or city name but are neither.
IGNORED_PHRASES: tuple[str, ...] = (
    "United States", "United Kingdom", "United Nations", "United Arab Emirates", "United Way", "United Center",
    "American Express", "American Idol", "American Airlines Center", "American Airlines Arena",
    "Delta Sky Club", "Spirit Airlines Inc",
)

# Airports whose code alone, in capitals, is a mention. Large and medium hubs these airlines
# serve plus their main international gateways; any other IATA code needs context ("to BTV").
MAJOR_AIRPORTS: frozenset[str] = frozenset(
    [
        "ATL", "LAX", "ORD", "DFW", "DEN", "JFK", "SFO", "SEA", "LAS", "MCO", "EWR", "CLT", "PHX", "IAH", "MIA",
        "BOS", "MSP", "FLL", "DTW", "PHL", "LGA", "BWI", "SLC", "SAN", "IAD", "DCA", "MDW", "TPA", "PDX", "HNL",
        "DAL", "STL", "AUS", "BNA", "HOU", "OAK", "MSY", "RDU", "SJC", "SMF", "SNA", "SAT", "RSW", "MCI", "CLE",
        "IND", "PIT", "CMH", "CVG", "PBI", "OGG", "JAX", "ABQ", "ANC", "BDL", "BUF", "OMA", "ONT", "BUR", "LGB",
        "MKE", "RIC", "ORF", "OKC", "TUL", "MEM", "SDF", "BHM", "CHS", "SAV", "GRR", "DSM", "BOI", "RNO", "TUS",
        "ELP", "PVD", "ALB", "SYR", "ROC", "BTV", "PWM", "MHT", "HPN", "ISP", "SJU", "STT", "STX", "KOA", "LIH",
        "PSP", "SRQ", "EYW", "MYR", "GSP", "GSO", "TYS", "XNA", "MSN", "GEG", "HDN", "EGE", "ASE", "JAC", "BZN",
        "DRO", "COS", "FAT", "SBA", "ICT", "LIT", "YYZ", "YVR", "YUL", "YYC", "YOW", "YEG", "CUN", "MEX", "SJD",
        "PVR", "GDL", "MBJ", "NAS", "SXM", "PUJ", "AUA", "BDA", "LIR", "SJO", "GCM", "SDQ", "LHR", "LGW", "CDG",
        "AMS", "FRA", "MAD", "BCN", "FCO", "DUB", "MUC", "ZRH", "IST", "DXB", "DOH", "HKG", "NRT", "HND", "ICN",
        "PEK", "PVG", "SIN", "SYD", "MEL", "GRU", "EZE", "BOG", "LIM", "SCL", "TLV"
    ]
)

# Capitalised abbreviations that are also IATA codes but, in tweets, almost never airports.
ABBREVIATIONS: frozenset[str] = frozenset(
    [
        "CEO", "USA", "FAA", "TSA", "ABC", "POS", "IVR", "ATC", "SOP", "UAL", "SWA", "AAL", "LUV", "CTL", "EST",
        "PST", "CST", "MST", "EDT", "PDT", "CDT", "GMT", "UTC", "OMG", "LOL", "BTW", "IMO", "WTF", "FYI", "ETA",
        "FLT", "MVP", "CSS", "ALI", "VIP", "DOT", "CNN", "NBC", "CBS", "FOX", "NFL", "NBA", "MLB", "SMS", "PDF",
        "URL", "APP", "GPS", "ATM", "BBQ", "DIY", "RIP", "FAQ", "USD", "EUR", "GBP", "CAD", "AUD", "HRS", "MIN",
        "MPH", "JAN", "FEB", "MAR", "APR", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", "MON", "TUE", "WED",
        "THU", "FRI", "SUN", "AKA", "ASAP", "TBD", "TBA", "PHD", "CIA", "FBI", "NSA", "SOS", "MIL", "OFF", "PLZ",
        "PLS", "THX", "TIX", "FFL", "DIA"
    ]
)

# Airports people name without their full official name.
AIRPORT_ALIASES: dict[str, str] = {
    "O'Hare": "ORD", "OHare": "ORD", "LaGuardia": "LGA", "La Guardia": "LGA", "Laguardia": "LGA", "Logan Airport": "BOS",
    "Logan International": "BOS", "Dulles": "IAD", "Reagan National": "DCA", "National Airport": "DCA",
    "Love Field": "DAL", "Hobby Airport": "HOU", "Midway Airport": "MDW", "Sea-Tac": "SEA", "SeaTac": "SEA",
    "JFK Airport": "JFK", "Kennedy Airport": "JFK", "Newark Airport": "EWR", "Pearson": "YYZ", "Heathrow": "LHR",
    "Gatwick": "LGW", "Schiphol": "AMS", "DIA": "DEN", "Denver International": "DEN",
}
# Airport nicknames that are also surnames: an airport only after "at", "to", "from"...
CONTEXTUAL_AIRPORT_ALIASES: dict[str, str] = {
    "Logan": "BOS", "Midway": "MDW", "Hobby": "HOU", "Kennedy": "JFK", "Reagan": "DCA", "Bradley": "BDL",
    "Hartsfield": "ATL", "Lambert": "STL",
}
# airportsdata city names that in tweets are something else.
NOT_CITIES: frozenset[str] = frozenset({"Iberia", "Atlantic", "Pacific", "Mission", "Delta", "Spirit", "Frontier"})
# Cities of major airports that are as often a first name ("Charlotte at the gate was great").
NAME_LIKE_CITIES: frozenset[str] = frozenset(
    {"Charlotte", "Austin", "Jackson", "Madison", "Savannah", "Sydney", "Florence", "Victoria", "Lincoln", "Eugene", "Tyler", "Logan"}
)

CITY_ALIASES: tuple[str, ...] = (
    "NYC", "New York City", "Vegas", "Philly", "DC", "D.C.", "Washington DC", "Washington D.C.", "NOLA", "LA",
    "L.A.", "SF", "San Fran", "Dallas", "Fort Worth", "Ft Lauderdale", "Ft. Lauderdale", "St. Louis", "Saint Louis",
    "Minneapolis", "St. Paul", "Saint Paul", "Miami", "Toronto", "Mexico City", "Puerto Rico",
)

# A single-word city whose lower-case form is this frequent in English (log probability from
# spacy-lookups-data) is a word first ("Mobile", "Hope", "Orange"); only big cities keep it.
COMMON_WORD_LOGPROB = -12.5

_PREPOSITIONS = (
    "from", "to", "at", "in", "into", "via", "thru", "through", "out of", "leaving", "departing", "landing in",
    "landing at", "land in", "land at", "arriving in", "arriving at", "arrive in", "arrive at", "stuck in", "stuck at",
    "fly", "flying", "flew", "towards", "toward", "back to", "connecting in", "connection in", "layover in", "over",
)
_MONTH = (
    r"(?:(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)|May|MAY)"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])"
_ORDINAL = _DAY + r"(?i:st|nd|rd|th)"
_WEEKDAY = r"(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_WEEKDAY_ABBR = r"(?:Mon|Tue|Tues|Wed|Thu|Thur|Thurs|Fri|Sat|Sun)"
_NUMBER_WORD = r"(?:an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty)"
_AMOUNT = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?"
_AMPM = r"(?i:[ap]\.m\.|[ap]\.?m\b)"
_HOUR12 = r"(?:1[0-2]|0?[1-9])"
_CLOCK = r"(?:[01]?\d|2[0-3]):[0-5]\d"


def _case_variants(words: Iterable[str]) -> str:
    """Alternation matching each word lower-case or capitalised, never shouted (an all-caps tweet
    is full of three-letter words that are also airport codes)."""
    forms = sorted({f for w in words for f in (w, w[0].upper() + w[1:])}, key=len, reverse=True)
    return "(?:" + "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in forms) + ")"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@functools.lru_cache(maxsize=1)
def _common_words() -> dict[str, float]:
    """Log probabilities of English words (spacy-lookups-data), used only when generating patterns."""
    import spacy_lookups_data  # local: a loaded pattern file never needs this 1M-entry table

    path = os.path.join(os.path.dirname(spacy_lookups_data.__file__), "data", "en_lexeme_prob.json.gz")
    with gzip.open(path, "rt", encoding="utf8") as fh:
        return json.load(fh)


def _phrase(label: str, pattern: str, id_: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"label": label, "pattern": pattern}
    if id_:
        entry["id"] = id_
    return entry


def _regex(label: str, regex: str, groups: Sequence[int] = (0,), **extra: Any) -> dict[str, Any]:
    re.compile(regex)  # fail when generating, not inside a Spark worker
    return {"label": label, "regex": regex, "groups": list(groups), **extra}


def airline_patterns(airlines: Sequence[Airline] = DEFAULT_AIRLINES) -> list[dict[str, Any]]:
    """AIRLINE names, handles, bare designators and contextual names, plus the FLIGHT rules that
    need the designators ("UA123", "#UA 123", "flight 1234", "fl. 123")."""
    out: list[dict[str, Any]] = []
    for airline in airlines:
        out += [_phrase("AIRLINE", name, airline.code) for name in airline.names]
        if airline.code_alone:
            out.append(_phrase("AIRLINE", airline.code, airline.code))
        if airline.handles:
            handles = "|".join(re.escape(h) for h in airline.handles)
            out.append(_regex("AIRLINE", rf"(?<![\w@#])[@#]((?i:{handles}))(?!\w)", [1], id=airline.code))
        if airline.contextual_names:
            names = "|".join(re.escape(n) for n in airline.contextual_names)
            verbs = _case_variants(["on", "with", "fly", "flying", "flew", "flown", "booked", "love", "hate", "choose", "chose", "thanks", "thank you"])
            out.append(_regex("AIRLINE", rf"\b{verbs}\s+({names})\b", [1], id=airline.code))
    out += [_phrase(IGNORE, phrase) for phrase in IGNORED_PHRASES]
    codes = "|".join(sorted({re.escape(c) for a in airlines for c in (a.code, a.icao) if c}, key=len, reverse=True))
    # A number right after is a count or a duration, not a flight ("flight 2 hours late").
    not_a_duration = (
        r"(?![\w%]|[:.,/]\d|\s+[123]/[234]\b)(?!\s*(?i:hours?|hrs?|h\b|minutes?|mins?|min\b|days?|weeks?|months?|[ap]\.?m\b))"
    )
    not_a_quantity = not_a_duration + (
        r"(?!\s*(?i:times?|people|passengers|ppl|years?|yrs?|seats?|bags?|flights?|stops?|legs?|dollars|bucks|x\b|more\b"
        r"|of\b|out\s+of|in\s+a\s+row|%|\+))"
    )
    out.append(_regex("FLIGHT", rf"(?<![\w#@/])#?((?:{codes})\s?\d{{2,4}}|(?:{codes})\d)" + not_a_duration, [1]))
    keyword = r"(?:[Ff]light|FLIGHT|[Ff]lt|FLT|[Ff]l|[Ff]lite)\.?"
    number = r"\s*(?:(?i:#|no\.?|num(?:ber)?\.?)\s*)?#?\s*"
    out.append(_regex("FLIGHT", rf"\b{keyword}{number}((?:(?:{codes})\s?)?\d{{1,4}})" + not_a_quantity, [1]))
    # "flights 2 the NE" is not a number, "flights 2516 & 2244" is.
    out.append(_regex("FLIGHT", rf"\b(?:[Ff]lights|FLIGHTS){number}((?:(?:{codes})\s?)?\d{{2,4}})" + not_a_quantity, [1]))
    return out


def airport_and_city_patterns(
    airlines: Sequence[Airline] = DEFAULT_AIRLINES,
    major: frozenset[str] = MAJOR_AIRPORTS,
    abbreviations: frozenset[str] = ABBREVIATIONS,
) -> list[dict[str, Any]]:
    """AIRPORT codes, names and "<city> airport"; CITY names; all from ``airportsdata``.

    Precision first: a bare code must be upper case, a major airport and not an English word
    ("SEA", "DEN" need context); any other IATA code counts only after a preposition written in
    lower or title case ("flying to BTV") or in a route ("BTV-ORD", "ORD->BTV").
    """
    import airportsdata

    airports = airportsdata.load("IATA")
    words = _common_words()
    airline_names = {n.lower() for a in airlines for n in (*a.names, *a.contextual_names)}

    def is_word(code: str) -> bool:
        return words.get(code.lower(), -99.0) > COMMON_WORD_LOGPROB

    known = {c for c in airports if re.fullmatch(r"[A-Z]{3}", c)} | set(major)
    usable = {c for c in known if c not in abbreviations and (c in major or not is_word(c))}
    bare = sorted(c for c in usable if c in major and not is_word(c))
    # A regex rather than phrases: the tokenizer leaves "-JFK" or "(JFK" in one token.
    out: list[dict[str, Any]] = [_regex("AIRPORT", r"(?<![A-Za-z0-9@])([A-Z]{3})(?![A-Za-z0-9])", [1], allowed=bare)]
    allowed = sorted(usable)
    out.append(_regex("AIRPORT", rf"\b{_case_variants(_PREPOSITIONS)}\s+([A-Z]{{3}})(?![\w'])", [1], allowed=allowed))
    out.append(
        _regex(
            "AIRPORT",
            # Tweets arrive HTML-escaped: "ORD-&gt;SFO".
            r"(?<![\w@])([A-Z]{3})\s*(?:-*(?:>|&gt;)|=>|→|✈️?|-+|–|—|/|\s(?:to|TO)\s)\s*([A-Z]{3})(?!\w)",
            [1, 2],
            allowed=allowed,
        )
    )
    out += [_phrase("AIRPORT", alias, code) for alias, code in AIRPORT_ALIASES.items()]
    out.append(
        _regex("AIRPORT", rf"\b{_case_variants(_PREPOSITIONS)}\s+([A-Z][a-z]+)\b(?!\s+[A-Z])", [1], allowed=sorted(CONTEXTUAL_AIRPORT_ALIASES))
    )

    major_cities: set[str] = set()
    cities: set[str] = set()
    names: dict[str, str] = {}
    for code, info in airports.items():
        name = _ascii(info["name"]).strip()
        if name and len(name) > 6:
            names.setdefault(name, code)
            if name.endswith(" International Airport"):
                names.setdefault(name[: -len(" Airport")], code)
        for part in re.split(r"[/(),]", info["city"]):
            city = re.sub(r"\s+", " ", _ascii(part)).strip(" -")
            if len(city) < 4 or not city[0].isupper() or city.lower() in airline_names or city in NOT_CITIES:
                continue
            variants = {city}
            if city.startswith("St "):
                variants |= {"St. " + city[3:], "Saint " + city[3:]}
            for variant in variants:
                cities.add(variant)
                if code in major:
                    major_cities.add(variant)
    # Multi-word and big cities count anywhere; any other one-word city is too often a person
    # ("Gary at the gate") and counts only after a preposition or as a hashtag.
    anywhere = {c for c in cities if (" " in c or "-" in c or c in major_cities) and c not in NAME_LIKE_CITIES}
    anywhere |= set(CITY_ALIASES)
    contextual = sorted(c for c in cities - anywhere if re.fullmatch(r"[A-Z][A-Za-z]+", c) and not is_word(c))
    for name, code in sorted(names.items()):
        out.append(_phrase("AIRPORT", name, code))
    for city in sorted(anywhere):
        out.append(_phrase("CITY", city))
    for city in sorted(major_cities - NAME_LIKE_CITIES):
        if city.upper() != city:
            out.append(_phrase("CITY", city.upper()))
    for city in sorted(NAME_LIKE_CITIES & major_cities):
        out += [_phrase("AIRPORT", f"{city} airport"), _phrase("AIRPORT", f"{city} Airport")]
    out.append(
        _regex("CITY", rf"(?:\b{_case_variants(_PREPOSITIONS)}\s+|(?<![\w#@])#)([A-Z][A-Za-z]+)\b(?!\s+[A-Z][a-z])", [1], allowed=contextual)
    )
    return out


def date_time_money_patterns() -> list[dict[str, Any]]:
    """DATE ("Feb 24", "2/24", "on the 24th", "tomorrow", "Monday", "2 days"), TIME ("5pm",
    "17:30", "5:30 PM", "3 hours", "tonight") and MONEY ("$25", "25 dollars", "USD 50")."""
    tail = rf"(?:{_MONTH}\.?\s+{_DAY}(?i:st|nd|rd|th)?\b|{_DAY}/{_DAY}\b|(?:the\s+)?{_ORDINAL}\b)"
    relative = (
        r"(?i:today|tomorrow|tmrw|tmr|2morrow|yesterday|(?:the\s+)?day\s+(?:before|after)\s+(?:yesterday|tomorrow)"
        r"|(?:this|next|last|past)\s+(?:week(?:end)?|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday))"
    )
    ordinal_guard = (
        r"(?!\s+(?i:time|times|flight|flights|row|call|attempt|day|hour|try|floor|gate|place|seat|person|one|caller|leg"
        r"|bag|email|agent|delay|cancell?ation|hold|phone|week|month|year|class)\b)"
    )
    return [
        _regex("DATE", rf"\b{_MONTH}\.?\s+{_DAY}(?i:st|nd|rd|th)?\b(?:,?\s+(?:19|20)\d{{2}}\b)?"),
        _regex("DATE", rf"\b{_DAY}(?i:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+(?:19|20)\d{{2}}\b)?"),
        # Ratings ("10/10", "5/5") and fractions followed by "of" are not dates.
        _regex("DATE", r"(?<![\d/.,$])(?!(\d{1,2})/\1\b|1/[234]\b|[23]/[34]\b)(?:0?[1-9]|1[0-2])/(?:[12]\d|3[01]|0?[1-9])(?:/(?:19|20)?\d{2})?(?![\d/%])(?!\s+of\b)"),
        _regex("DATE", r"\b(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"),
        _regex(
            "DATE",
            rf"\b(?i:on|by|until|till|til|before|after|since|from|for|thru|through)\s+(?:the\s+)?({_ORDINAL})\b" + ordinal_guard,
            [1],
        ),
        _regex("DATE", rf"\b(?:{_WEEKDAY}s?(?:,?\s+{tail})?|{_WEEKDAY_ABBR}\.?,?\s+{tail})"),
        _regex("DATE", rf"\b{relative}\b"),
        _regex(
            "DATE",
            rf"\b(?:\d+|(?i:{_NUMBER_WORD}|a\s+few|several|a\s+couple(?:\s+of)?|couple(?:\s+of)?))\s*\+?\s*(?i:days?|weeks?|months?)\b(?:\s+(?i:ago))?",
        ),
        _regex(
            "TIME",
            rf"(?<![\d:.$])(?:(?:{_HOUR12}(?::[0-5]\d)?\s?{_AMPM}?|{_CLOCK})\s?(?:-|–|to)\s?)?{_HOUR12}(?::[0-5]\d)?\s?{_AMPM}(?!\w)",
        ),
        _regex("TIME", rf"(?<![\d:.$/])(?:[01]?\d|2[0-3]):[0-5]\d(?![\d:])(?:\s?{_AMPM}(?!\w))?"),
        _regex(
            "TIME",
            rf"\b(?:\d+(?:\.\d+)?|(?i:{_NUMBER_WORD}|half\s+an|a\s+few|several|a\s+couple(?:\s+of)?|couple(?:\s+of)?))"
            r"\s*\+?\s*(?i:hours?|hrs?|minutes?|mins?)\b",
        ),
        _regex("TIME", r"\b\d+(?:\.\d+)?\s?h\b"),
        _regex(
            "TIME",
            r"\b(?i:tonight|overnight|noon|midnight|(?:this|tomorrow|yesterday|last|tonight's)\s+(?:morning|afternoon|evening|night)"
            r"|(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)\s+(?:morning|afternoon|evening|night))\b",
        ),
        _regex("MONEY", rf"(?<![\w$€£])(?:US|C|CA|AU)?[$€£]\s?(?:{_AMOUNT})(?:\s?(?:[kK]\b|(?i:million|billion|mil)\b))?"),
        _regex("MONEY", rf"\b(?:{_AMOUNT})\s?(?i:dollars?|bucks|usd|cents|euros?|eur|gbp|cad)\b"),
        _regex("MONEY", rf"\b(?:USD|EUR|GBP|CAD|AUD)\s?(?:{_AMOUNT})\b"),
        _regex(
            "MONEY",
            r"\b(?i:(?:(?:a|one|two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|forty|fifty|sixty|seventy|eighty"
            r"|ninety|hundred|thousand)[\s-]+)+(?:dollars|bucks))\b",
        ),
    ]


def booking_patterns() -> list[dict[str, Any]]:
    """BOOKING_REF: six-character record locators.

    After "confirmation", "conf #", "record locator", "PNR", "booking", "reservation" any six
    capitals or digits count, except common English words ("ticket CHANGE"); alone, only a mix of
    capitals and digits does ("ABC12D"), and never aircraft types ("737MAX").
    """
    words = _common_words()
    six_letter_words = sorted(w.upper() for w, p in words.items() if len(w) == 6 and w.isalpha() and p > -15.0)
    context = (
        r"\b(?i:confirmation|conf|confirm|record\s+locator|locator|pnr|booking|reservation|res|ticket|trip|itinerary)"
        r"(?:\s+(?i:number|num|no|code|#|ref(?:erence)?|id))?\.?\s*[:#]?\s*(?:(?i:is|was|=)\s+)?([A-Z0-9]{6})(?![\w@])"
    )
    return [
        _regex("BOOKING_REF", context, [1], exclude=six_letter_words),
        _regex(
            "BOOKING_REF",
            r"(?<![\w#@/.\-])(?=[A-Z0-9]{6}(?![\w@]))(?=[A-Z]*\d)(?=\d*[A-Z])"
            # Not a flight number ("BA1551", "AWE474"), a US tail number ("N598JB") or an aircraft type ("ERJ145").
            r"(?![A-Z]{2,3}\d{3,4}(?![\w@])|[A-Z]\d\d{3,4}(?![\w@])|N\d{1,5}[A-Z]{0,2}(?![\w@])|\d{3}[A-Z]{3}(?![\w@]))"
            r"([A-Z0-9]{6})(?![\w@/])",
            [1],
        ),
    ]


def default_patterns(airlines: Sequence[Airline] = DEFAULT_AIRLINES) -> list[dict[str, Any]]:
    """Every rule for the eight labels; pass your own ``airlines`` to brand the AIRLINE and FLIGHT rules."""
    return [*airline_patterns(airlines), *airport_and_city_patterns(airlines), *date_time_money_patterns(), *booking_patterns()]


def write_patterns(patterns: Iterable[dict[str, Any]], directory: str) -> str:
    """Write ``patterns`` as ``<directory>/patterns.jsonl`` (plus a small ``meta.json``) and return the file's path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PATTERNS_FILE)
    count = 0
    with open(path, "w", encoding="utf8") as fh:
        for entry in patterns:
            _check_entry(entry, f"{path} (entry {count + 1})")
            fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    with open(os.path.join(directory, META_FILE), "w", encoding="utf8") as fh:
        json.dump({"format": PATTERN_FORMAT, "patterns": count, "labels": list(LABELS)}, fh, indent=2)
    return path


def patterns_digest(path: str) -> str:
    """SHA-256 of a patterns file (or of the ``patterns.jsonl`` in a directory): equal rules, equal digest."""
    if os.path.isdir(path):
        path = os.path.join(path, PATTERNS_FILE)
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def read_patterns(path: str) -> list[dict[str, Any]]:
    """Read a patterns file, or the ``patterns.jsonl`` inside a directory."""
    if os.path.isdir(path):
        path = os.path.join(path, PATTERNS_FILE)
    if not os.path.isfile(path):
        raise ModelError(f"EntityExtractor patterns file {path} does not exist; write one with sparktweet.ner.write_patterns.")
    out = []
    with open(path, encoding="utf8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ModelError(f"{path} line {number} is not JSON: {exc}") from exc
                _check_entry(entry, f"{path} line {number}")
                out.append(entry)
    return out


def _check_entry(entry: dict[str, Any], where: str) -> None:
    label = entry.get("label")
    if label not in LABEL_PRIORITY:
        raise ModelError(f"{where}: label {label!r} is not one of {sorted(LABEL_PRIORITY)}.")
    if "regex" in entry:
        try:
            re.compile(entry["regex"])
        except re.error as exc:
            raise ModelError(f"{where}: regex {entry['regex']!r} does not compile: {exc}") from exc
    elif not isinstance(entry.get("pattern"), (str, list)):
        raise ModelError(f"{where}: expected a 'regex' or a 'pattern' (phrase or token list), found keys {sorted(entry)}.")


@dataclass
class _CompiledRegex:
    label: str
    regex: re.Pattern[str]
    groups: list[int]
    allowed: frozenset[str] | None
    exclude: frozenset[str]
    atoms: tuple[str, ...] | None = None
    needs_digit: bool = False
    needs_capitals: bool = False


class RegexEntities:
    """Runs the ``regex`` patterns on ``doc.text`` and stores token-aligned spans in ``doc.spans``.

    spaCy's tokenizer keeps "thx!@united" or "conf#ABC12D" as one token; rather than fight it
    with tokenizer exceptions, a token is split wherever a match starts or ends inside it.
    """

    def __init__(self) -> None:
        self.patterns: list[_CompiledRegex] = []
        # Every pattern's required literals, one bit each, for the prefilter (built on first use).
        self.literals: dict[str, int] = {}
        self._spaced: list[tuple[str, int]] = []
        self._digit_bit = 0  # set when the text has a decimal digit
        self._capitals_bit = 0  # set when it has three ASCII capitals in a row
        self._mask_list: list[tuple[int, int]] | None = None

    def add_patterns(self, entries: Iterable[dict[str, Any]]) -> None:
        self._mask_list = None
        for entry in entries:
            self.patterns.append(
                _CompiledRegex(
                    label=entry["label"],
                    regex=re.compile(entry["regex"]),
                    groups=list(entry.get("groups", [0])),
                    allowed=frozenset(entry["allowed"]) if "allowed" in entry else None,
                    exclude=frozenset(e.upper() for e in entry.get("exclude", ())),
                    atoms=required_literals(entry["regex"]),
                    needs_digit=requires_digit(entry["regex"]),
                    needs_capitals=requires_capitals(entry["regex"]),
                )
            )

    def _masks(self) -> list[tuple[int, int]]:
        """Each pattern's required literals as a bit mask over :attr:`literals` (one of them must
        be present; 0: no literal), and the bits all of which must be present (the digit bit)."""
        if self._mask_list is None:
            literals = sorted({a for p in self.patterns for a in p.atoms or ()})
            self.literals = {a: 1 << i for i, a in enumerate(literals)}
            self._digit_bit = 1 << len(literals)
            self._capitals_bit = 2 << len(literals)
            self._spaced = [(a, bit) for a, bit in self.literals.items() if re.search(r"\s", a)]
            self._mask_list = [
                (
                    sum(self.literals[a] for a in p.atoms or ()),
                    (self._digit_bit if p.needs_digit else 0) | (self._capitals_bit if p.needs_capitals else 0),
                )
                for p in self.patterns
            ]
        return self._mask_list

    def literals_in(self, text: str, spaced: bool = True) -> int:
        """Bit mask of the required literals found in ``fold_case(text)``; with ``spaced=False``
        only those without whitespace (which lie inside one whitespace-free chunk)."""
        self._masks()
        folded = fold_case(text)
        found = 0
        for literal, bit in self.literals.items():
            if literal in folded:
                found |= bit
        if _DIGIT.search(text):
            found |= self._digit_bit
        if _CAPITALS.search(text):
            found |= self._capitals_bit
        if not spaced:
            for _, bit in self._spaced:
                found &= ~bit
        return found

    def spaced_literals_in(self, text: str) -> int:
        """Bit mask of the required literals with whitespace found in ``fold_case(text)``."""
        self._masks()
        if not self._spaced:
            return 0
        folded = fold_case(text)
        return sum(bit for literal, bit in self._spaced if literal in folded)

    def matches(self, text: str, prefilter: bool = False, present: int | None = None) -> Iterator[tuple[int, int, str]]:
        """``(start, end, label)`` of every accepted capture, whitespace trimmed.

        With ``allowed``, every group of a match must be allowed ("SYS-CON" is no route). With
        ``prefilter`` (or ``present``, the mask of :meth:`literals_in`), an expression is skipped
        when the text lacks all of its required literals (:func:`required_literals`), which cannot
        change the result, only skip hopeless scans.
        """
        if prefilter and present is None:
            present = self.literals_in(text)
        for pattern, (mask, needed) in zip(self.patterns, self._masks(), strict=True):
            if present is not None and ((mask and not mask & present) or needed & ~present):
                continue
            for match in pattern.regex.finditer(text):
                spans = []
                for group in pattern.groups:
                    start, end = match.span(group)
                    value = text[start:end] if start >= 0 else ""
                    stripped = value.strip()
                    if stripped:
                        spans.append((start + len(value) - len(value.lstrip()), stripped))
                if pattern.allowed is not None and any(v not in pattern.allowed for _, v in spans):
                    continue
                for start, value in spans:
                    if value.upper() not in pattern.exclude:
                        yield start, start + len(value), pattern.label

    def __call__(self, doc: Doc) -> Doc:
        found = sorted(set(self.matches(doc.text)))
        if found:
            _split_tokens_at(doc, sorted({o for s, e, _ in found for o in (s, e)}))
        spans = []
        for start, end, label in found:
            span = doc.char_span(start, end, label=label)
            if span is not None:
                spans.append(span)
        doc.spans[REGEX_SPANS_KEY] = spans
        return doc


def _split_tokens_at(doc: Doc, offsets: list[int]) -> None:
    """Split every token that has one of ``offsets`` strictly inside it."""
    splits = []
    for token in doc:
        lo, hi = token.idx, token.idx + len(token.text)
        i = bisect.bisect_right(offsets, lo)
        cuts = []
        while i < len(offsets) and offsets[i] < hi:
            cuts.append(offsets[i] - lo)
            i += 1
        if cuts:
            bounds = [0, *cuts, len(token.text)]
            splits.append((token, [token.text[a:b] for a, b in itertools.pairwise(bounds)]))
    if splits:  # most tweets need none, and opening a retokenizer is not free
        with doc.retokenize() as retokenizer:
            for token, pieces in splits:
                retokenizer.split(token, pieces, heads=[(token, 0)] * len(pieces))


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Longest spans first (in characters), then :data:`LABEL_PRIORITY`, then leftmost; no overlaps."""
    ranked = sorted(spans, key=lambda s: (-(s.end_char - s.start_char), LABEL_PRIORITY.get(s.label_, 99), s.start))
    taken: set[int] = set()
    chosen = []
    for span in ranked:
        if taken.isdisjoint(range(span.start, span.end)):
            chosen.append(span)
            taken.update(range(span.start, span.end))
    return sorted(chosen, key=lambda s: s.start)


class MergeEntities:
    """Merges the ruler's entities with the regex spans and drops the IGNORE spans.

    A CITY or AIRPORT followed by "airport" becomes an AIRPORT including it ("Denver airport",
    "Logan airport"), which spares the ruler a second phrase per city.
    """

    def __call__(self, doc: Doc) -> Doc:
        spans = [*doc.ents, *doc.spans.get(REGEX_SPANS_KEY, [])]
        merged = []
        for span in resolve_overlaps(spans):
            if span.label_ == IGNORE:
                continue
            if span.label_ in ("CITY", "AIRPORT") and span.end < len(doc) and doc[span.end].lower_ == "airport":
                span = Span(doc, span.start, span.end + 1, label="AIRPORT")
            merged.append(span)
        doc.ents = merged
        return doc


class MapModelLabels:
    """After a statistical NER: keep DATE/TIME/MONEY and our labels; GPE/LOC become CITY and
    FAC becomes AIRPORT only for known names; ORG becomes AIRLINE only for known airlines."""

    def __init__(self) -> None:
        self.known: dict[str, set[str]] = {"CITY": set(), "AIRPORT": set(), "AIRLINE": set()}

    def add_names(self, label: str, names: Iterable[str]) -> None:
        self.known[label].update(n.lower() for n in names)

    def __call__(self, doc: Doc) -> Doc:
        mapped = []
        for ent in doc.ents:
            label = ent.label_
            text = ent.text.lower().lstrip("@#")
            if label in ("GPE", "LOC"):
                label = "CITY" if text in self.known["CITY"] else ""
            elif label == "FAC":
                label = "AIRPORT" if text in self.known["AIRPORT"] else ""
            elif label == "ORG":
                label = "AIRLINE" if text in self.known["AIRLINE"] else ""
            if label in LABELS:
                mapped.append(Span(doc, ent.start, ent.end, label=label))
        doc.ents = mapped
        return doc


@Language.factory("sparktweet_regex")
def _make_regex(nlp: Language, name: str) -> RegexEntities:
    return RegexEntities()


@Language.factory("sparktweet_merge")
def _make_merge(nlp: Language, name: str) -> MergeEntities:
    return MergeEntities()


@Language.factory("sparktweet_model_labels")
def _make_model_labels(nlp: Language, name: str) -> MapModelLabels:
    return MapModelLabels()


# Statistical components entity extraction does not need; excluded for speed.
_UNNEEDED = ["parser", "lemmatizer", "senter", "textcat", "textcat_multilabel", "morphologizer"]


def _missing_model(model: str, detail: str) -> str:
    return (
        f"EntityExtractor: spaCy model {model!r} is not installed on this machine ({detail}). Install it on the "
        f"driver and every executor (python -m spacy download {model}), or set spacyModel='' for the rules alone."
    )


def check_model(model: str) -> None:
    """Raise :class:`ModelError` unless ``model`` is ``""``, an installed spaCy package or an existing path."""
    if model and not (spacy.util.is_package(model) or os.path.exists(model)):
        raise ModelError(_missing_model(model, "no such package or path"))


def build_nlp(patterns: Sequence[dict[str, Any]], model: str = "", max_length: int = DEFAULT_MAX_LENGTH) -> Language:
    """Build the entity pipeline from pattern entries.

    Parameters
    ----------
    patterns
        Entries as written by :func:`write_patterns`.
    model
        ``""`` for the rules alone (tokenizer + rules, no model), or an installed spaCy pipeline
        (package name such as ``"en_core_web_sm"`` or a path). Its entities fill the gaps the rules
        leave; the rules' entities are never overwritten.
    max_length
        Longest text accepted, in characters.
    """
    if model:
        check_model(model)
        try:
            nlp = spacy.load(model, exclude=_UNNEEDED)
        except OSError as exc:
            raise ModelError(_missing_model(model, str(exc))) from exc
    else:
        nlp = spacy.blank("en")
    nlp.max_length = max_length
    regex = [p for p in patterns if "regex" in p]
    phrases = [{k: p[k] for k in ("label", "pattern", "id") if k in p} for p in patterns if "regex" not in p]
    # The rules go first: a statistical NER later in the pipeline keeps entities already set.
    # spaCy's EntityRuler in its SpanRuler implementation: the classic one counts all its
    # patterns on every doc, which with ~16k phrases costs more than the matching itself.
    # It turns its phrases into docs with the components before it, so it gets its patterns
    # while it is still alone at the front.
    if phrases:
        ruler = nlp.add_pipe("future_entity_ruler", name="sparktweet_ruler", first=True, config={"overwrite_ents": True})
        ruler.add_patterns(phrases)
    regex_component = nlp.add_pipe("sparktweet_regex", first=True)
    regex_component.add_patterns(regex)
    nlp.add_pipe("sparktweet_merge", after="sparktweet_ruler" if phrases else "sparktweet_regex")
    if model:
        mapper = nlp.add_pipe("sparktweet_model_labels", last=True)
        for label in ("CITY", "AIRPORT", "AIRLINE"):
            mapper.add_names(label, (p["pattern"] for p in phrases if p["label"] == label and isinstance(p["pattern"], str)))
            mapper.add_names(label, (name for p in regex if p["label"] == label for name in p.get("allowed", ())))
    return nlp


def load_nlp(path: str, model: str = "", max_length: int = DEFAULT_MAX_LENGTH) -> Language:
    """Build the pipeline from a patterns file or a directory holding ``patterns.jsonl``."""
    meta_path = os.path.join(path, META_FILE) if os.path.isdir(path) else None
    if meta_path and os.path.isfile(meta_path):
        with open(meta_path, encoding="utf8") as fh:
            version = json.load(fh).get("format")
        if version != PATTERN_FORMAT:
            raise ModelError(f"{path}: pattern format {version!r} is not supported (expected {PATTERN_FORMAT}); regenerate the patterns.")
    return build_nlp(read_patterns(path), model=model, max_length=max_length)


def entities_of(doc: Doc, labels: Iterable[str] = LABELS) -> list[Entity]:
    """The doc's entities restricted to ``labels``, with offsets into the original text."""
    keep = set(labels)
    return [Entity(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents if e.label_ in keep]


def extract(
    nlp: Language,
    texts: Sequence[str | None],
    batch_size: int = 256,
    labels: Iterable[str] = LABELS,
    max_length: int | None = None,
    fast: bool = True,
) -> list[Extraction]:
    """Entities of each text, never raising for one bad text.

    A ``None`` text gives ``Extraction(None, None)``; a text longer than ``max_length`` (default
    ``nlp.max_length``) or one spaCy fails on gives ``Extraction(None, reason)``. With ``fast``
    (the default) a rules-only pipeline runs through :class:`FastExtractor`, which gives the same
    entities several times faster; ``fast=False`` runs every text through the spaCy pipeline.
    """
    labels = tuple(labels)
    limit = nlp.max_length if max_length is None else max_length
    results: list[Extraction] = [Extraction(None, None)] * len(texts)
    todo: list[int] = []
    for i, text in enumerate(texts):
        if text is None:
            continue
        if isinstance(text, str) and len(text) > limit:
            results[i] = Extraction(None, f"EntityExtractor: text has {len(text)} characters, more than the limit of {limit}.")
        else:
            todo.append(i)
    extractor = fast_extractor(nlp) if fast else None
    if extractor is not None:
        keep = frozenset(labels)
        slow = []
        for i in todo:
            text = texts[i]
            try:
                found = extractor.entities(text) if isinstance(text, str) else None
            except Exception:
                log.debug("fast entity path failed; using the spaCy pipeline", exc_info=True)
                found = None
            if found is None:
                slow.append(i)
            else:
                results[i] = Extraction([Entity(text[s:e], label, s, e) for s, e, label in found if label in keep], None)
        todo = slow
        if not todo:
            return results
    try:
        docs = list(nlp.pipe((texts[i] for i in todo), batch_size=batch_size))
    except Exception:
        log.warning("spaCy failed on a batch of %d texts; retrying them one by one", len(todo), exc_info=True)
        for i in todo:
            try:
                results[i] = Extraction(entities_of(nlp(texts[i]), labels), None)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - reported on the row
                results[i] = Extraction(None, f"EntityExtractor: spaCy failed on this text: {type(exc).__name__}: {exc}"[:500])
        return results
    for i, doc in zip(todo, docs):
        results[i] = Extraction(entities_of(doc, labels), None)
    return results


# --- fast path -----------------------------------------------------------------------------------
#
# The pipeline above costs about 0.7 ms a tweet, mostly spaCy building a Doc and 42 regular
# expressions scanning every text. The fast path gives the same entities for a rules-only pipeline
# without a Doc per text: spaCy's own tokenizer still cuts the text (one whitespace-delimited chunk
# at a time, as its tokenizer does, memoised per chunk), the expressions whose required literals are
# absent are skipped, and the ruler's phrase matching, its overlap filter and the merge are redone on
# (start, end) offsets. ``tests/test_ner_fast.py`` holds it equal to the spaCy pipeline.

try:
    from re import _constants as _sre_c
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

# Non-ASCII characters that ``re.IGNORECASE`` matches to an ASCII letter (found by brute force
# over all of Unicode on CPython 3.11): folding them keeps the literal prefilter exact.
_IGNORECASE_ASCII = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
_MAX_ALTERNATIVES = 64


def fold_case(text: str) -> str:
    """Lower case, with the few non-ASCII letters ``re.IGNORECASE`` equates to ASCII ones folded too."""
    return text.lower() if text.isascii() else text.translate(_IGNORECASE_ASCII).lower()


def _cross(left: set[str] | None, right: set[str] | None) -> set[str] | None:
    if left is None or right is None or len(left) * len(right) > _MAX_ALTERNATIVES:
        return None
    return {a + b for a in left for b in right}


def _exact(op: Any, av: Any) -> set[str] | None:
    """Every string (lower-cased) the node can match, when they are few and ASCII; else None."""
    if op is _sre_c.LITERAL:
        char = chr(av)
        return {char.lower()} if char.isascii() else None
    if op in (_sre_c.AT, _sre_c.ASSERT, _sre_c.ASSERT_NOT):
        return {""}  # zero width: consumes nothing
    if op is _sre_c.IN:
        chars: set[str] = set()
        for item_op, item_av in av:
            if item_op is _sre_c.LITERAL:
                chars.add(chr(item_av))
            elif item_op is _sre_c.RANGE and item_av[1] - item_av[0] < _MAX_ALTERNATIVES:
                chars.update(chr(c) for c in range(item_av[0], item_av[1] + 1))
            else:
                return None
        return {c.lower() for c in chars} if all(c.isascii() for c in chars) and len(chars) <= _MAX_ALTERNATIVES else None
    if op is _sre_c.SUBPATTERN:
        return _exact_seq(av[-1])
    if op is _sre_c.BRANCH:
        out: set[str] = set()
        for alternative in av[1]:
            exact = _exact_seq(alternative)
            if exact is None:
                return None
            out |= exact
        return out if len(out) <= _MAX_ALTERNATIVES else None
    if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
        low, high, item = av
        exact = _exact_seq(item)
        if exact is None:
            return None
        if (low, high) == (0, 1):
            return exact | {""}
        if low == high and low <= 4:
            out = {""}
            for _ in range(low):
                out = _cross(out, exact)  # type: ignore[assignment]
                if out is None:
                    return None
            return out
    return None


def _exact_seq(items: Any) -> set[str] | None:
    out: set[str] | None = {""}
    for op, av in items:
        out = _cross(out, _exact(op, av))
        if out is None:
            return None
    return out


def _better(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    """The more selective of two required sets: longest shortest member, then fewest members."""
    if a is None or "" in a:
        return None if b is None or "" in b else b
    if b is None or "" in b:
        return a
    return a if (min(map(len, a)), -len(a)) >= (min(map(len, b)), -len(b)) else b


def _required(op: Any, av: Any) -> set[str] | None:
    """Strings (lower-cased) one of which every match of the node contains; None if unknown."""
    exact = _exact(op, av)
    if exact is not None:
        return exact if "" not in exact else None
    if op is _sre_c.SUBPATTERN:
        return _required_seq(av[-1])
    if op is _sre_c.BRANCH:
        out: set[str] = set()
        for alternative in av[1]:
            required = _required_seq(alternative)
            if required is None or "" in required:
                return None
            out = _minimal(out | required)
        return out if len(out) <= _MAX_ALTERNATIVES else None
    if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT) and av[0] >= 1:
        return _required_seq(av[2])
    return None


def _required_seq(items: Any) -> set[str] | None:
    best: set[str] | None = None
    run: set[str] | None = {""}  # exact strings of the consecutive exact nodes so far
    for op, av in items:
        exact = _exact(op, av)
        joined = _cross(run, exact) if exact is not None else None
        if joined is not None:
            run = joined
            continue
        best = _better(best, run)
        if exact is not None:
            # Too many strings to join: keep the last character of the run ("1st", "2nd").
            run = _cross({r[-1:] for r in run}, exact) or exact  # type: ignore[union-attr]
        else:
            best = _better(best, _required(op, av))
            run = {""}
    return _better(best, run)


def _minimal(strings: set[str]) -> set[str]:
    """Drop the strings that contain a shorter one: requiring "hr" already admits "hrs"."""
    return {a for a in strings if not any(b != a and b in a for b in strings)}


def required_literals(regex: str) -> tuple[str, ...] | None:
    """Lower-case strings one of which occurs in ``fold_case(text)`` whenever ``regex`` matches
    ``text`` (case-sensitive or not), or None when the expression has no such literals.

    >>> required_literals(r"\\b(?i:today|tomorrow)\\b")
    ('today', 'tomorrow')
    >>> required_literals(r"[A-Z]{3}") is None
    True
    """
    try:
        parsed = _sre_parse.parse(regex)
    except Exception:  # noqa: BLE001 - an exotic expression simply gets no prefilter
        return None
    try:
        atoms = _required_seq(list(parsed))
    except Exception:  # noqa: BLE001 - same
        return None
    if not atoms or "" in atoms or sum(len(a) == 1 for a in atoms) > 8:
        return None  # nothing required, or only one of many letters: no cheaper than the scan
    return tuple(sorted(_minimal(atoms)))


def _needs_digit(op: Any, av: Any) -> bool:
    """Whether every match of the node contains a decimal digit (``\\d`` in the text)."""
    if op is _sre_c.LITERAL:
        return chr(av) in "0123456789"
    if op is _sre_c.IN:
        return bool(av) and all(
            (o is _sre_c.LITERAL and chr(a) in "0123456789")
            or (o is _sre_c.RANGE and 0x30 <= a[0] <= a[1] <= 0x39)
            or (o is _sre_c.CATEGORY and a is _sre_c.CATEGORY_DIGIT)
            for o, a in av
        )
    if op is _sre_c.SUBPATTERN:
        return _needs_digit_seq(av[-1])
    if op is _sre_c.BRANCH:
        return all(_needs_digit_seq(alternative) for alternative in av[1])
    if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
        return av[0] >= 1 and _needs_digit_seq(av[2])
    if op is _sre_c.ASSERT:  # a positive lookaround must match too
        return _needs_digit_seq(av[1])
    return False


def _needs_digit_seq(items: Any) -> bool:
    return any(_needs_digit(op, av) for op, av in items)


def requires_digit(regex: str) -> bool:
    """Whether every match of ``regex`` contains a decimal digit (False when unsure).

    >>> requires_digit("flight [0-9]+"), requires_digit("[0-9]*h")
    (True, False)
    """
    try:
        return _needs_digit_seq(list(_sre_parse.parse(regex)))
    except Exception:  # noqa: BLE001 - an exotic expression simply gets no prefilter
        return False


def _capitals_run(op: Any, av: Any, ignorecase: bool) -> bool:
    """Whether every match of the node contains three ASCII capitals in a row (``[A-Z]{3}``)."""
    if op is _sre_c.SUBPATTERN:
        _, add, remove, items = av
        ignorecase = (ignorecase or bool(add & _sre_c.SRE_FLAG_IGNORECASE)) and not remove & _sre_c.SRE_FLAG_IGNORECASE
        return _capitals_run_seq(items, ignorecase)
    if op is _sre_c.BRANCH:
        return all(_capitals_run_seq(alternative, ignorecase) for alternative in av[1])
    if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
        low, _, items = av
        if low >= 3 and not ignorecase and len(items) == 1 and items[0][0] is _sre_c.IN:
            members = items[0][1]
            return bool(members) and all(
                (o is _sre_c.LITERAL and 65 <= a <= 90) or (o is _sre_c.RANGE and 65 <= a[0] <= a[1] <= 90) for o, a in members
            )
        return low >= 1 and _capitals_run_seq(items, ignorecase)
    if op is _sre_c.ASSERT:
        return _capitals_run_seq(av[1], ignorecase)
    return False


def _capitals_run_seq(items: Any, ignorecase: bool) -> bool:
    return any(_capitals_run(op, av, ignorecase) for op, av in items)


def requires_capitals(regex: str) -> bool:
    """Whether every match of ``regex`` contains three ASCII capitals in a row (False when unsure).

    >>> requires_capitals("to ([A-Z]{3})"), requires_capitals("(?i:[A-Z]{3})")
    (True, False)
    """
    try:
        parsed = _sre_parse.parse(regex)
        return _capitals_run_seq(list(parsed), bool(parsed.state.flags & _sre_c.SRE_FLAG_IGNORECASE))
    except Exception:  # noqa: BLE001 - an exotic expression simply gets no prefilter
        return False


_DIGIT = re.compile(r"\d")
_CAPITALS = re.compile(r"[A-Z]{3}")
_CHUNKS = re.compile(r"\S+|\s+")
_UNUSUAL_SPACE = re.compile(r"[^\S ]|  |^ ")
_MAX_CHUNK_MEMO = 100_000


class FastExtractor:
    """The rules-only pipeline's entities without building a spaCy ``Doc`` per text.

    Build it with :func:`fast_extractor`; ``None`` comes back for a pipeline it does not mirror
    (a statistical model, token patterns, other components), which then runs as before.
    """

    def __init__(self, nlp: Language) -> None:
        self.tokenizer = nlp.tokenizer
        self.regex: RegexEntities = nlp.get_pipe("sparktweet_regex")
        self.phrases: dict[str, list[tuple[tuple[str, ...], str, int, int]]] = {}
        strings = nlp.vocab.strings
        if "sparktweet_ruler" in nlp.pipe_names:
            for entry in nlp.get_pipe("sparktweet_ruler").patterns:
                words = tuple(t.text for t in self.tokenizer(entry["pattern"]))
                if words:
                    # The ruler's spans sort by (start, end, label hash, kb id, id hash): the same
                    # phrase under two labels keeps the smaller label hash.
                    label, id_ = entry["label"], entry.get("id", "")
                    self.phrases.setdefault(words[0], []).append((words, label, strings.add(label), strings.add(id_)))
        self._memo: dict[str, tuple[tuple[tuple[int, int], ...], int]] = {}

    def _chunk(self, chunk: str) -> tuple[tuple[tuple[int, int], ...], int]:
        """The chunk's token offsets and the mask of the regex literals inside it, memoised."""
        done = self._memo.get(chunk)
        if done is None:
            if len(self._memo) >= _MAX_CHUNK_MEMO:
                self._memo.clear()
            offsets = tuple((t.idx, t.idx + len(t.text)) for t in self.tokenizer(chunk))
            done = (offsets, self.regex.literals_in(chunk, spaced=False))
            self._memo[chunk] = done
        return done

    def tokens(self, text: str) -> tuple[list[tuple[int, int]], int]:
        """spaCy's token offsets, and the mask of the regex literals in the text.

        spaCy's tokenizer cuts whitespace and non-whitespace runs apart, gives a single space
        after a token to that token, and tokenizes each run on its own; so does this, with each
        run's tokens memoised. A literal without whitespace lies inside one run.
        """
        out: list[tuple[int, int]] = []
        present = self.regex.spaced_literals_in(text)
        if not _UNUSUAL_SPACE.search(text):
            # The common case: single spaces between chunks, none leading.
            pos = 0
            memo = self._memo
            append = out.append
            for chunk in text.split(" "):
                if chunk:
                    offsets, mask = memo.get(chunk) or self._chunk(chunk)
                    present |= mask
                    if len(offsets) == 1:  # most chunks are one token
                        append((pos, pos + len(chunk)))
                    else:
                        out.extend([(pos + a, pos + b) for a, b in offsets])
                pos += len(chunk) + 1
            return out, present
        after_token = False
        for match in _CHUNKS.finditer(text):
            start, chunk = match.start(), match.group()
            if chunk[0].isspace():
                if after_token and chunk[0] == " ":
                    start, chunk = start + 1, chunk[1:]
                after_token = False
                if not chunk:
                    continue
            else:
                after_token = True
            offsets, mask = self._chunk(chunk)
            present |= mask
            out.extend((start + a, start + b) for a, b in offsets)
        return out, present

    def entities(self, text: str) -> list[tuple[int, int, str]] | None:
        """``(start, end, label)`` of the entities, or None where only the spaCy pipeline can tell."""
        tokens, present = self.tokens(text)
        found = sorted(set(self.regex.matches(text, present=present)))
        if found:
            # Split the tokens a match starts or ends inside, as RegexEntities does on the Doc.
            firsts = [a for a, _ in tokens]
            cuts: dict[int, list[int]] = {}
            for offset in sorted({o for s, e, _ in found for o in (s, e)}):
                k = bisect.bisect_right(firsts, offset) - 1
                if k >= 0 and tokens[k][0] < offset < tokens[k][1]:
                    cuts.setdefault(k, []).append(offset)
            for k in sorted(cuts, reverse=True):
                lo, hi = tokens[k]
                bounds = [lo, *cuts[k], hi]
                tokens[k : k + 1] = list(itertools.pairwise(bounds))
        words = [text[a:b] for a, b in tokens]
        # Phrase matches, deduplicated and ordered as the ruler orders its spans.
        matches = set()
        phrases = self.phrases
        for i in [i for i, word in enumerate(words) if word in phrases]:
            for pattern, label, label_hash, id_hash in phrases[words[i]]:
                j = i + len(pattern)
                if tuple(words[i:j]) == pattern:
                    matches.add((tokens[i][0], tokens[j - 1][1], label_hash, id_hash, i, j, label))
        # The ruler's filter (prioritize_new_ents_filter): most tokens first, then leftmost.
        ranked = sorted(sorted(matches), key=lambda m: (m[5] - m[4], -m[4]), reverse=True)
        seen: set[int] = set()
        spans = []  # (start token, end token, label, start char, end char)
        for _, _, _, _, i, j, label in ranked:
            if seen.isdisjoint(range(i, j)):
                spans.append((i, j, label, tokens[i][0], tokens[j - 1][1]))
                seen.update(range(i, j))
        spans.sort(key=lambda s: (s[3], s[4]))
        if found:
            firsts = [a for a, _ in tokens]
            lasts = [b for _, b in tokens]
            for start, end, label in found:
                i = bisect.bisect_left(firsts, start)
                j = bisect.bisect_left(lasts, end)
                if i == len(firsts) or j == len(lasts) or firsts[i] != start or lasts[j] != end:
                    return None  # not token-aligned after all: let spaCy decide
                spans.append((i, j + 1, label, start, end))
        # MergeEntities: longest in characters, then label priority, then leftmost; no overlaps.
        spans.sort(key=lambda s: (-(s[4] - s[3]), LABEL_PRIORITY.get(s[2], 99), s[0]))
        taken: set[int] = set()
        chosen = []
        for span in spans:
            if taken.isdisjoint(range(span[0], span[1])):
                chosen.append(span)
                taken.update(range(span[0], span[1]))
        chosen.sort(key=lambda s: s[0])
        out = []
        last = 0
        for i, j, label, start, end in chosen:
            if label == IGNORE:
                continue
            if i < last:
                return None  # an "airport" taken into the previous entity overlaps this one
            if label in ("CITY", "AIRPORT") and j < len(words) and words[j].lower() == "airport":
                j, label, end = j + 1, "AIRPORT", tokens[j][1]
            out.append((start, end, label))
            last = j
        return out


_FAST: weakref.WeakKeyDictionary[Language, FastExtractor | None] = weakref.WeakKeyDictionary()


def fast_extractor(nlp: Language) -> FastExtractor | None:
    """The :class:`FastExtractor` of a pipeline built by :func:`build_nlp` without a model, else None."""
    if nlp in _FAST:
        return _FAST[nlp]
    fast = None
    names = nlp.pipe_names
    if names in (["sparktweet_regex", "sparktweet_ruler", "sparktweet_merge"], ["sparktweet_regex", "sparktweet_merge"]):
        ruler = nlp.get_pipe("sparktweet_ruler") if "sparktweet_ruler" in names else None
        if ruler is None or (
            all(isinstance(p["pattern"], str) for p in ruler.patterns)
            and getattr(ruler, "phrase_matcher_attr", None) in (None, "ORTH")
            # No entity precedes the ruler, so its filter sees only its own matches.
            and ruler.annotate_ents
            and ruler.ents_filter is prioritize_new_ents_filter
            and not ruler.key
        ):
            fast = FastExtractor(nlp)
    _FAST[nlp] = fast
    return fast

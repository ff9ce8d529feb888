from __future__ import annotations

import random
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import pytest

from sparktweet.categories import load_categories
from sparktweet.errors import TicketIdError
from sparktweet.ticket_ids import (
    ALPHABET,
    TicketIdParts,
    is_valid_ticket_id,
    make_ticket_id,
    parse_ticket_id,
    snowflake_date,
    ticket_code,
    validate_ticket_id,
)

PREFIXES = [c.prefix for c in load_categories()]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _random_ids(n: int, seed: int = 7) -> list[tuple[str, str, date, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tweet_id = str(rng.randrange(5 * 10**17, 2 * 10**18))
        prefix = rng.choice(PREFIXES + ["A", "QQQQQ", "LOUIS"])
        day = date(2000, 1, 1) + timedelta(days=rng.randrange(36500))
        out.append((tweet_id, prefix, day, make_ticket_id(tweet_id, prefix, day)))
    return out


SAMPLE = _random_ids(300, seed=11)


def _gf32_mul(x: int, y: int) -> int:
    """Carry-less multiply then reduce by x^5 + x^2 + 1: an implementation independent of the module's."""
    product = 0
    for bit in range(5):
        if y >> bit & 1:
            product ^= x << bit
    for bit in range(9, 4, -1):
        if product >> bit & 1:
            product ^= 0b100101 << (bit - 5)
    return product


def _reference_is_valid(ticket_id: str) -> bool:
    """sum(v_k * a^(n-k)) over payload and check, with a = 2, must be 0 in GF(32)."""
    prefix, yymmdd, tail = ticket_id.split("-")
    values = [ord(c) % 32 for c in prefix] + [ALPHABET.index(c) for c in yymmdd + tail]
    total = 0
    for k, value in enumerate(reversed(values)):
        weight = 1
        for _ in range(k):
            weight = _gf32_mul(weight, 2)
        total ^= _gf32_mul(value, weight)
    return total == 0


def test_known_vectors():
    assert make_ticket_id("570306133677760513", "BAG", "2015-02-24 11:35:52 -0800") == "BAG-150224-0JK4HW2"
    assert make_ticket_id("570306133677760513", "DLY", "2015-02-24 11:35:52 -0800") == "DLY-150224-C8Y5XHP"
    assert make_ticket_id("1", "SEAT", date(2026, 1, 31)) == "SEAT-260131-JB4XF09"
    # The code is the first 30 bits of sha256("570306133677760513:BAG") starts 04a648f3 (hex).
    assert ticket_code("570306133677760513", "BAG") == "0JK4HW"


def test_known_vectors_pass_an_independent_check():
    for vector in ["BAG-150224-0JK4HW2", "DLY-150224-C8Y5XHP", "SEAT-260131-JB4XF09"]:
        assert _reference_is_valid(vector)
    assert not _reference_is_valid("BAG-150224-0JK4HW3")


def test_round_trip_on_thousands_of_random_ids():
    for tweet_id, prefix, day, ticket_id in _random_ids(3000):
        assert _reference_is_valid(ticket_id), ticket_id
        assert validate_ticket_id(ticket_id) == ticket_id
        assert validate_ticket_id(f"  {ticket_id.lower()}\n") == ticket_id
        parts = parse_ticket_id(ticket_id)
        assert parts == TicketIdParts(prefix=prefix, date=day, code=ticket_code(tweet_id, prefix), check=ticket_id[-1])
        assert str(parts) == ticket_id


def test_format_is_prefix_date_six_code_chars_and_check():
    for _tweet_id, prefix, day, ticket_id in SAMPLE:
        head, yymmdd, tail = ticket_id.split("-")
        assert head == prefix and yymmdd == f"{day:%y%m%d}"
        assert len(tail) == 7 and set(tail) <= set(ALPHABET)


def test_deterministic_and_keyed_by_tweet_and_prefix():
    first = [make_ticket_id(t, p, d) for t, p, d, _ in SAMPLE]
    assert first == [make_ticket_id(t, p, d) for t, p, d, _ in SAMPLE]
    codes = {ticket_code(t, "BAG") for t, _, _, _ in SAMPLE}
    assert len(codes) == len({t for t, _, _, _ in SAMPLE})
    assert all(ticket_code(t, "BAG") != ticket_code(t, "RFD") for t, _, _, _ in SAMPLE)
    assert make_ticket_id(570306133677760513, "bag", "2015-02-24") == make_ticket_id("570306133677760513", "BAG", "2015-02-24")


def _substitutes(ticket_id: str, i: int) -> str:
    """Characters another person could have typed at position i that are not an alias of the original."""
    head_len = ticket_id.index("-")
    if ticket_id[i] == "-":
        return ""
    if i < head_len:
        return LETTERS
    if i < head_len + 7:
        return "0123456789"
    return ALPHABET


def test_every_single_character_substitution_is_rejected():
    checked = 0
    for _t, _p, _d, ticket_id in SAMPLE:
        for i, original in enumerate(ticket_id):
            for ch in _substitutes(ticket_id, i):
                if ch == original:
                    continue
                typo = ticket_id[:i] + ch + ticket_id[i + 1 :]
                with pytest.raises(TicketIdError):
                    parse_ticket_id(typo)
                checked += 1
    assert checked > 100_000


def test_every_adjacent_transposition_is_rejected():
    checked = 0
    for _t, _p, _d, ticket_id in SAMPLE:
        for i in range(len(ticket_id) - 1):
            a, b = ticket_id[i], ticket_id[i + 1]
            if a == b:
                continue
            typo = ticket_id[:i] + b + a + ticket_id[i + 2 :]
            with pytest.raises(TicketIdError):
                parse_ticket_id(typo)
            checked += 1
    assert checked > 3000


def test_zero_and_z_transposition_that_luhn_mod_32_misses_is_rejected():
    # Find an ID whose code holds "0Z" or "Z0" next to each other and swap them.
    for n in range(200_000):
        ticket_id = make_ticket_id(str(10**18 + n), "BAG", "2015-02-24")
        for pair in ("0Z", "Z0"):
            i = ticket_id.find(pair, 11)
            if i >= 0:
                with pytest.raises(TicketIdError, match="check character mismatch"):
                    parse_ticket_id(ticket_id[:i] + pair[::-1] + ticket_id[i + 2 :])
                return
    pytest.fail("no ID with 0 next to Z found")


def test_every_transposition_within_date_and_code_is_rejected():
    for _t, _p, _d, ticket_id in SAMPLE[:100]:
        start = ticket_id.index("-") + 1
        positions = [i for i in range(start, len(ticket_id)) if ticket_id[i] != "-"]
        for x, i in enumerate(positions):
            for j in positions[x + 1 :]:
                if ticket_id[i] == ticket_id[j]:
                    continue
                chars = list(ticket_id)
                chars[i], chars[j] = chars[j], chars[i]
                with pytest.raises(TicketIdError):
                    parse_ticket_id("".join(chars))


def test_crockford_aliases_are_normalised_in_the_code_part():
    ticket_id = make_ticket_id("570306133677760513", "BAG", "2015-02-24")
    assert ticket_id == "BAG-150224-0JK4HW2"
    assert validate_ticket_id("bag-150224-ojk4hw2") == ticket_id
    one = next(t for _, _, _, t in SAMPLE if "1" in t.split("-")[2])
    head, day, tail = one.split("-")
    assert validate_ticket_id(f"{head}-{day}-{tail.replace('1', 'I')}") == one
    assert validate_ticket_id(f"{head}-{day}-{tail.replace('1', 'l')}") == one


def test_prefix_letters_outside_crockford_are_kept():
    ticket_id = make_ticket_id("570306133677760513", "DLY", "2015-02-24")
    assert ticket_id.startswith("DLY-")
    assert validate_ticket_id(ticket_id) == ticket_id
    with pytest.raises(TicketIdError, match="check character mismatch"):
        validate_ticket_id("DIY" + ticket_id[3:])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "BAG",
        "BAG-150224",
        "BAG-150224-0JK4HW",
        "BAG-150224-0JK4HW22",
        "BAG150224-0JK4HW2",
        "BAG_150224_0JK4HW2",
        "BAGGGG-150224-0JK4HW2",
        "B4G-150224-0JK4HW2",
        "BAG-15022A-0JK4HW2",
        "BAG-150224-0JK4H W2",
        "BAG-150224-0JK4HW2 extra",
    ],
)
def test_bad_format_is_rejected_with_the_expected_shape(text):
    with pytest.raises(TicketIdError, match="bad format: expected PREFIX-YYMMDD-XXXXXXC"):
        validate_ticket_id(text)
    assert not is_valid_ticket_id(text)


def test_impossible_date_and_u_are_bad_format():
    with pytest.raises(TicketIdError, match="bad format: '150230'.*not a real date"):
        validate_ticket_id("BAG-150230-0JK4HW2")
    with pytest.raises(TicketIdError, match="bad format: 'U' is not a Crockford base32 character"):
        validate_ticket_id("BAG-150224-0JK4HU2")
    with pytest.raises(TicketIdError, match="bad format"):
        validate_ticket_id(None)  # type: ignore[arg-type]


def test_mistyped_check_says_so():
    with pytest.raises(TicketIdError, match="check character mismatch: did you mistype the ID"):
        validate_ticket_id("BAG-150224-0JK4HW3")


def test_date_is_the_utc_creation_date():
    tid = "570306133677760513"
    assert make_ticket_id(tid, "BAG", "2015-02-24 23:30:00 -0800").split("-")[1] == "150225"
    assert make_ticket_id(tid, "BAG", "2015-02-24T23:30:00Z").split("-")[1] == "150224"
    assert make_ticket_id(tid, "BAG", "2015-02-24T23:30:00.000+00:00").split("-")[1] == "150224"
    assert make_ticket_id(tid, "BAG", "2015-02-25T01:30:00+05:00").split("-")[1] == "150224"
    assert make_ticket_id(tid, "BAG", datetime(2015, 2, 25, 1, 30, tzinfo=timezone(timedelta(hours=5)))).split("-")[1] == "150224"
    assert make_ticket_id(tid, "BAG", datetime(2015, 2, 25, 1, 30)).split("-")[1] == "150225"
    assert make_ticket_id(tid, "BAG", date(2031, 12, 1)).split("-")[1] == "311201"


def test_missing_or_garbage_created_at_falls_back_to_the_snowflake_date():
    tid = "570306133677760513"  # created 2015-02-24 19:35:52 UTC
    assert snowflake_date(tid) == date(2015, 2, 24)
    expected = make_ticket_id(tid, "BAG", "2015-02-24")
    assert make_ticket_id(tid, "BAG", None) == expected
    assert make_ticket_id(tid, "BAG", "not a date") == expected
    assert make_ticket_id(tid, "BAG", "  ") == expected


def test_no_date_at_all_is_an_error():
    with pytest.raises(TicketIdError, match="created_at None is missing or not ISO-8601"):
        make_ticket_id("12345", "BAG", None)
    assert snowflake_date("abc") is None and snowflake_date("12345") is None


@pytest.mark.parametrize(
    ("tweet_id", "prefix", "created", "message"),
    [
        ("", "BAG", "2015-02-24", "non-empty tweet id"),
        (None, "BAG", "2015-02-24", "non-empty tweet id"),
        ("1", "", "2015-02-24", "1-5 letters"),
        ("1", "BAG1", "2015-02-24", "1-5 letters"),
        ("1", "TOOLONG", "2015-02-24", "1-5 letters"),
        ("1", "BAG", "1999-12-31", "outside 2000-2099"),
    ],
)
def test_make_rejects_bad_arguments(tweet_id, prefix, created, message):
    with pytest.raises(TicketIdError, match=message):
        make_ticket_id(tweet_id, prefix, created)


def test_module_imports_no_pyspark():
    code = "import sys, sparktweet.ticket_ids; assert 'pyspark' not in sys.modules, 'pyspark imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

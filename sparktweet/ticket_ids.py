"""Ticket IDs: ``<PREFIX>-<YYMMDD>-<6 Crockford base32 chars><check char>``, e.g. ``BAG-150224-0JK4HW2``.

Pure Python (no Spark, no TensorFlow): the Spark stage, the reply dispatcher and the Flask app
all import this one module, so there is exactly one implementation of the scheme.

The scheme
----------
- ``PREFIX`` is the category's ticket prefix (1-5 letters, ``conf/categories.yaml``).
- ``YYMMDD`` is the UTC date the tweet was created (years 2000-2099).
- The 6-character code is the first 30 bits of ``sha256(f"{tweet_id}:{PREFIX}")`` written in
  Crockford base32 (alphabet ``0123456789ABCDEFGHJKMNPQRSTVWXYZ``), so replaying a tweet gives
  the same ID and no state is needed to make one.
- The check character covers prefix, date and code (the hyphens carry no information).

The check character
-------------------
Every character of ``PREFIX + YYMMDD + CODE`` becomes a value in 0..31: digits and code
characters take their Crockford value; prefix letters take ``ord(c) % 32`` (A=1 ... Z=26),
because prefixes such as ``DLY`` or ``SEAT`` may use letters (I, L, O, U) that Crockford's
alphabet lacks. Prefix letters always sit in prefix positions, so the two mappings never
compete for one position.

The values ``v1..vn`` and the check value ``c`` are taken as elements of the field GF(32)
(polynomial ``x^5 + x^2 + 1``), and ``c`` is chosen so that
``v1*a^n + v2*a^(n-1) + ... + vn*a + c = 0`` with ``a = x`` (the element 2), a generator of the
field's multiplicative group, whose order is 31. This is Damm's construction over the field
(``i*v = a*i + v``) and it detects:

- every single-character substitution, the check character included (``a^k`` is never 0);
- every transposition of two adjacent characters, and of any two characters of the prefix or
  any two of the date and code, adjacent or not (``a^j != a^k`` whenever ``0 < |j - k| < 31``,
  and an ID has at most 18 payload characters). A swap between the prefix and the rest is two
  substitutions under two mappings, so it is caught by the format rule (a digit in the
  prefix) or, for two letters, only with probability 31/32.

Luhn mod 32, the obvious alternative, misses the transposition of ``0`` and ``Z`` (the
analogue of decimal Luhn's ``09``/``90`` blind spot), so it is not used.

Parsing is lenient where it cannot hide a typo: case and surrounding whitespace are ignored,
and in the code part ``O`` reads as ``0`` and ``I``/``L`` as ``1`` (Crockford's decoding rules).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

from sparktweet.errors import TicketIdError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 6
CODE_BITS = 5 * CODE_LENGTH
FORMAT = "PREFIX-YYMMDD-XXXXXXC"

# X ("snowflake") ids carry their creation time: milliseconds since this epoch, shifted left 22 bits.
SNOWFLAKE_EPOCH_MS = 1288834974657
# Ids below this predate snowflake (sequential ids, all < 1e11) and carry no timestamp.
SNOWFLAKE_MIN_ID = 1 << 40

_VALUES = {ch: i for i, ch in enumerate(ALPHABET)}
_CROCKFORD_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_GF32_MODULUS = 0b100101  # x^5 + x^2 + 1, primitive, so x generates all 31 non-zero elements
_PREFIX_RE = re.compile(r"[A-Z]{1,5}")
_ID_RE = re.compile(r"([A-Z]{1,5})-([0-9]{6})-([0-9A-Z]{7})")


@dataclass(frozen=True)
class TicketIdParts:
    """The parts of a canonical ticket ID; ``str(parts)`` gives the ID back."""

    prefix: str
    date: date
    code: str
    check: str

    def __str__(self) -> str:
        return f"{self.prefix}-{self.date:%y%m%d}-{self.code}{self.check}"


def _times_a(value: int) -> int:
    """Multiply by the generator ``x`` in GF(32)."""
    value <<= 1
    if value & 0b100000:
        value ^= _GF32_MODULUS
    return value


def _payload_values(prefix: str, yymmdd: str, code: str) -> list[int]:
    return [ord(c) % 32 for c in prefix] + [_VALUES[c] for c in yymmdd + code]


def check_character(prefix: str, yymmdd: str, code: str) -> str:
    """The check character for canonical (uppercase) ``prefix``, ``yymmdd`` and ``code``.

    Examples
    --------
    >>> check_character("BAG", "150224", "000000")
    'W'
    """
    acc = 0
    for value in _payload_values(prefix, yymmdd, code):
        acc = _times_a(acc) ^ value
    # The check value c makes a*acc + c == 0; in characteristic 2, minus is plus.
    return ALPHABET[_times_a(acc)]


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix.upper()):
        raise TicketIdError(f"Ticket prefix must be 1-5 letters A-Z, found {prefix!r}.")
    return prefix.upper()


def snowflake_date(tweet_id: str) -> date | None:
    """UTC creation date encoded in an X (snowflake) tweet id, or None when the id carries none.

    Examples
    --------
    >>> snowflake_date("570306133677760513")
    datetime.date(2015, 2, 24)
    >>> snowflake_date("12345") is None
    True
    """
    text = str(tweet_id).strip()
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    if number < SNOWFLAKE_MIN_ID:
        return None
    millis = (number >> 22) + SNOWFLAKE_EPOCH_MS
    try:
        return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).date()
    except (OverflowError, OSError, ValueError):
        return None


def created_date(created: datetime | date | str | None) -> date | None:
    """UTC date of a tweet's creation time, or None when ``created`` is missing or unparseable.

    Strings are ISO-8601 (``2015-02-24T19:35:52Z``, ``2015-02-24T11:35:52-08:00``, ``2015-02-24``)
    or the Tweets.csv form ``2015-02-24 11:35:52 -0800``. A datetime without a time zone is
    taken as UTC.
    """
    if created is None:
        return None
    if isinstance(created, datetime):
        if created.tzinfo is None:
            return created.date()
        return created.astimezone(timezone.utc).date()
    if isinstance(created, date):
        return created
    if isinstance(created, str):
        text = created.strip()
        if not text:
            return None
        try:
            return created_date(datetime.fromisoformat(text))
        except ValueError:
            return None
    return None


def ticket_date(tweet_id: str, created: datetime | date | str | None) -> date:
    """The date a ticket ID carries: the tweet's UTC creation date.

    When ``created`` is missing or unparseable the date encoded in the snowflake tweet id is
    used, so the rule needs no clock and a replay gives the same date.

    Raises
    ------
    TicketIdError
        When neither ``created`` nor the tweet id gives a date, or the date is outside 2000-2099.
    """
    day = created_date(created)
    if day is None:
        day = snowflake_date(tweet_id)
    if day is None:
        raise TicketIdError(
            f"Tweet {tweet_id!r}: created_at {created!r} is missing or not ISO-8601, and the tweet id is not an "
            "X snowflake id that carries a date; pass an ISO-8601 created_at."
        )
    if not 2000 <= day.year <= 2099:
        raise TicketIdError(f"Tweet {tweet_id!r}: creation date {day} is outside 2000-2099, which YYMMDD cannot hold.")
    return day


def ticket_code(tweet_id: str, prefix: str) -> str:
    """The 6-character Crockford base32 code: the first 30 bits of ``sha256(f"{tweet_id}:{prefix}")``."""
    digest = hashlib.sha256(f"{tweet_id}:{prefix}".encode("utf-8")).digest()
    bits = int.from_bytes(digest[:4], "big") >> (32 - CODE_BITS)
    return "".join(ALPHABET[(bits >> (5 * (CODE_LENGTH - 1 - i))) & 31] for i in range(CODE_LENGTH))


def make_ticket_id(tweet_id: str, prefix: str, created: datetime | date | str | None) -> str:
    """Deterministic ticket ID for a tweet in the category with ticket prefix ``prefix``.

    Parameters
    ----------
    tweet_id
        The tweet id as a string (X ids exceed 2^53, so never a float).
    prefix
        The category's ticket prefix, 1-5 letters (case-insensitive).
    created
        The tweet's creation time (ISO-8601 string, datetime or date); its UTC date becomes
        YYMMDD. None or unparseable falls back to the date inside a snowflake tweet id.

    Returns
    -------
    str
        The canonical ID, e.g. ``BAG-150224-0JK4HW2``.

    Raises
    ------
    TicketIdError
        When the tweet id is empty, the prefix is not 1-5 letters, or no date can be found.

    Examples
    --------
    >>> make_ticket_id("570306133677760513", "BAG", "2015-02-24 11:35:52 -0800")
    'BAG-150224-0JK4HW2'
    >>> make_ticket_id("570306133677760513", "bag", None)
    'BAG-150224-0JK4HW2'
    """
    if isinstance(tweet_id, int) and not isinstance(tweet_id, bool):
        tweet_id = str(tweet_id)
    if not isinstance(tweet_id, str) or not tweet_id.strip():
        raise TicketIdError(f"A ticket ID needs a non-empty tweet id string, found {tweet_id!r}.")
    canonical_prefix = _check_prefix(prefix)
    yymmdd = f"{ticket_date(tweet_id, created):%y%m%d}"
    code = ticket_code(tweet_id, canonical_prefix)
    return f"{canonical_prefix}-{yymmdd}-{code}{check_character(canonical_prefix, yymmdd, code)}"


def parse_ticket_id(text: str) -> TicketIdParts:
    """Split a ticket ID into its parts after validating it.

    Case and surrounding whitespace are ignored; in the code part ``O`` reads as ``0`` and
    ``I``/``L`` as ``1``.

    Raises
    ------
    TicketIdError
        ``bad format: ...`` when the text is not ``PREFIX-YYMMDD-XXXXXXC`` or the date is not a
        real day; ``check character mismatch: ...`` when a character was mistyped.

    Examples
    --------
    >>> parse_ticket_id(" bag-150224-0jk4hw2 ")
    TicketIdParts(prefix='BAG', date=datetime.date(2015, 2, 24), code='0JK4HW', check='2')
    """
    if not isinstance(text, str):
        raise TicketIdError(f"bad format: expected {FORMAT} as a string, found {type(text).__name__}.")
    shown = text.strip()
    match = _ID_RE.fullmatch(shown.upper())
    if match is None:
        raise TicketIdError(f"bad format: expected {FORMAT} (e.g. BAG-150224-0JK4HW2), found {shown[:40]!r}.")
    prefix, yymmdd, tail = match.groups()
    tail = tail.translate(_CROCKFORD_ALIASES)
    bad = sorted({c for c in tail if c not in _VALUES})
    if bad:
        raise TicketIdError(
            f"bad format: {''.join(bad)!r} is not a Crockford base32 character (ticket codes use {ALPHABET}); found {shown[:40]!r}."
        )
    try:
        # YY is always 20YY: strptime's %y would read 69-99 as 19YY.
        day = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    except ValueError:
        raise TicketIdError(f"bad format: {yymmdd!r} in {shown[:40]!r} is not a real date (YYMMDD).") from None
    code, check = tail[:CODE_LENGTH], tail[CODE_LENGTH:]
    if check_character(prefix, yymmdd, code) != check:
        raise TicketIdError(f"check character mismatch: did you mistype the ID? {shown[:40]!r} is not a valid ticket ID.")
    return TicketIdParts(prefix=prefix, date=day, code=code, check=check)


def validate_ticket_id(text: str) -> str:
    """Canonical form of a ticket ID (uppercase, Crockford-normalised, trimmed), or TicketIdError.

    Examples
    --------
    >>> validate_ticket_id("bag-150224-0jk4hw2")
    'BAG-150224-0JK4HW2'
    """
    return str(parse_ticket_id(text))


def is_valid_ticket_id(text: str) -> bool:
    """True when ``text`` is a valid ticket ID (in any accepted spelling)."""
    try:
        parse_ticket_id(text)
    except TicketIdError:
        return False
    return True

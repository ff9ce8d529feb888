"""``TicketGenerator``: decides which tweets need a ticket and writes the ticket ID, priority and reply.

Rules (all in Spark Column expressions except the ID and reply, see :func:`_ticket_udf`):

needs_ticket
    True for a complaint or a question about the brand: negative sentiment, or a question (a
    ``?`` outside URLs, or a question word such as how/when/where/why/what/can/could/will/would/
    is/are/do/does/did/should at the start, after any leading @mentions) that is not positive.
    Positive and neutral chatter gives False; a row with an error gives null.
priority (null when no ticket)
    ``high``  an urgency word (``urgencyWords``: now, urgent, asap, stuck, stranded, missed
    connection, tonight, cancelled...) in a negative tweet or in an urgent category
    (``urgentCategories``: delays and rebooking/refunds by default), or a negative tweet in an
    urgent category with ``sentiment_score >= highPriorityScore``;
    ``medium`` any other negative tweet, urgency word or urgent category;
    ``low``   the rest: a calm question in a routine category.
ticket_id
    :func:`sparktweet.ticket_ids.make_ticket_id` of the tweet id, the category's prefix and the
    tweet's creation time. When ``created_at`` is null or unparseable the date comes from the
    snowflake tweet id (deterministic, no clock); when neither gives a date the row gets an error.
reply_text
    The category's template with the slots ``{ticket_id}``, ``{tracking_url}``, ``{name}`` (the
    category's display name), ``{flight}`` (`` on flight UA123`` from the first FLIGHT entity that
    looks like a flight number, else empty) and ``{airport}`` (`` at DEN`` from the first AIRPORT
    entity that is a 3-letter code, else empty). The tweet's own text is never echoed, and the
    reply is at most 280 characters: the optional slots are dropped if needed, and a template
    that cannot fit is rejected when ``transform`` is called.
errors
    A null or empty tweet id is an error on every row. A null or unknown category code is an
    error only on a row that needs a ticket (the category is not used otherwise). A row that
    already carries an error keeps it (first error wins) and gets null outputs; ``model_version``
    is always stamped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import string
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparktweet.categories import DEFAULT_CATEGORIES, Category, load_categories, parse_categories
from sparktweet.errors import ConfigError, InputError, TicketIdError
from sparktweet.fusion import FusionStep
from sparktweet.params import HasErrorCol, HasModelVersion, HasTextCol
from sparktweet.ticket_ids import make_ticket_id
from sparktweet.workers import error_column, with_struct_outputs

NEEDS_TICKET = "needs_ticket"
TICKET_ID = "ticket_id"
PRIORITY = "priority"
REPLY_TEXT = "reply_text"
MODEL_VERSION = "model_version"

MAX_REPLY_CHARS = 280
DEFAULT_TEMPLATE = "We've opened ticket {ticket_id} for you{flight}. Track it at {tracking_url}"
TEMPLATE_SLOTS = frozenset({"ticket_id", "flight", "airport", "name", "tracking_url"})
DEFAULT_TRACKING_URL = "http://127.0.0.1:8080/tickets/{ticket_id}"
DEFAULT_URGENCY_WORDS = [
    "now",
    "urgent",
    "asap",
    "stuck",
    "stranded",
    "missed connection",
    "missed my connection",
    "tonight",
    "cancelled",
    "canceled",
    "emergency",
]
DEFAULT_URGENT_CATEGORIES = ["delay_customer_service", "reschedule_refund"]
QUESTION_WORDS = ("how", "when", "where", "why", "what", "can", "could", "will", "would", "is", "are", "do", "does", "did", "should")

# The longest ID a prefix can give: PREFIX-YYMMDD-XXXXXXC.
_ID_TAIL = "-000000-0000000"
_LEADING_MENTIONS = r"^(\s*\.?@\w+[:,]?)+\s*"
_URLS = r"https?://\S+"
_FLIGHT_NUMBER = r"^([A-Z]{2}|[A-Z][0-9]|[0-9][A-Z])?[0-9]{1,4}$"
_RESULT_TYPE = T.StructType(
    [T.StructField(TICKET_ID, T.StringType()), T.StructField(REPLY_TEXT, T.StringType()), T.StructField("error", T.StringType())]
)


def categories_to_json(categories: list[Category]) -> str:
    """The ``categoriesJson`` value for a list of categories."""
    return json.dumps([dict(dataclasses.asdict(c), keywords=list(c.keywords)) for c in categories], ensure_ascii=False)


def _default_categories_json(path: Path = DEFAULT_CATEGORIES) -> str:
    """conf/categories.yaml as JSON, or empty when the file is absent.

    A saved pipeline carries its categories, but loading it first builds the stage with no
    arguments; on a host that has the package without ``conf/`` (an installed wheel on a
    cluster) that must not fail, since the saved value replaces this default right after.
    """
    if not path.exists():
        return ""
    return categories_to_json(load_categories(path))


def _tracking_url(url_template: str, ticket_id: str) -> str:
    return url_template.format(ticket_id=ticket_id)


def render_reply(template: str, *, ticket_id: str, name: str, tracking_url: str, flight: str = "", airport: str = "") -> str:
    """Fill a reply template; drops ``{flight}``/``{airport}`` when the reply would exceed 280 characters.

    Examples
    --------
    >>> render_reply("Ticket {ticket_id}{flight}: {tracking_url}", ticket_id="BAG-150224-0JK4HW2",
    ...              name="Baggage Issue", tracking_url="http://t/1", flight=" on flight UA1")
    'Ticket BAG-150224-0JK4HW2 on flight UA1: http://t/1'
    """
    template = template or DEFAULT_TEMPLATE
    slots = {"ticket_id": ticket_id, "name": name, "tracking_url": tracking_url}
    text = template.format(flight=flight, airport=airport, **slots)
    if len(text) > MAX_REPLY_CHARS:
        text = template.format(flight="", airport="", **slots)
    return text


def validate_templates(categories: list[Category], tracking_url: str) -> None:
    """Raise ConfigError when a template or the tracking URL has unknown slots or cannot fit 280 characters."""
    fields = {f for _, f, _, _ in string.Formatter().parse(tracking_url) if f is not None}
    if fields - {"ticket_id"}:
        raise ConfigError(f"TicketGenerator.trackingUrl may only use the slot {{ticket_id}}, found {sorted(fields)} in {tracking_url!r}.")
    for cat in categories:
        template = cat.template or DEFAULT_TEMPLATE
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ConfigError(f"Category {cat.code!r}: reply template {template!r} is not a valid format string: {exc}.") from exc
        unknown = fields - TEMPLATE_SLOTS
        if unknown:
            raise ConfigError(
                f"Category {cat.code!r}: reply template uses unknown slots {sorted(unknown)}; allowed slots are {sorted(TEMPLATE_SLOTS)}."
            )
        longest_id = cat.prefix + _ID_TAIL
        shortest = render_reply(template, ticket_id=longest_id, name=cat.name, tracking_url=_tracking_url(tracking_url, longest_id))
        if len(shortest) > MAX_REPLY_CHARS:
            raise ConfigError(
                f"Category {cat.code!r}: the reply is {len(shortest)} characters even without flight and airport; "
                f"shorten the template or trackingUrl to fit {MAX_REPLY_CHARS}."
            )


def _word_regex(words: list[str]) -> str:
    """Case-insensitive Java regex matching any of ``words`` as whole words; spaces match any whitespace."""
    alternatives = [r"\s+".join(re.escape(part) for part in w.split()) for w in words if w.strip()]
    return r"(?i)\b(" + "|".join(alternatives) + r")\b"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _ticket_row(
    categories: dict[str, tuple[str, str, str]],
    tracking_url: str,
    needs: Any,
    tweet_id: str,
    category: str,
    created_text: Any,
    created_epoch: Any,
    flight: Any,
    airport: Any,
) -> tuple[str | None, str | None, str | None]:
    """(ticket_id, reply_text, error) of one row; all null when the row needs no ticket."""
    if _is_missing(needs) or not bool(needs):
        return (None, None, None)
    prefix, name, template = categories[category]
    if not _is_missing(created_epoch):
        created: Any = datetime.fromtimestamp(int(created_epoch), tz=timezone.utc)
    else:
        created = created_text if isinstance(created_text, str) else None
    try:
        ticket_id = make_ticket_id(tweet_id, prefix, created)
    except TicketIdError as exc:
        return (None, None, f"TicketGenerator: {exc}")
    reply = render_reply(
        template,
        ticket_id=ticket_id,
        name=name,
        tracking_url=_tracking_url(tracking_url, ticket_id),
        flight=flight if isinstance(flight, str) else "",
        airport=airport if isinstance(airport, str) else "",
    )
    return (ticket_id, reply, None)


def _ticket_udf(categories: dict[str, tuple[str, str, str]], tracking_url: str) -> Callable[..., Column]:
    """The one Python UDF of the stage when it runs alone: ticket ID and reply text.

    It exists so that the ID scheme has a single implementation, ``ticket_ids.make_ticket_id``,
    shared with the dispatcher and web app; a Column-expression copy of sha256 + GF(32) arithmetic
    would be a second one that could drift. The reply is rendered here because it embeds the ID.
    The closure captures plain config: code -> (prefix, name, template) and the URL template.
    In a fused pipeline the same function runs inside the shared pass (:func:`_ticket_kernel`).
    """

    @F.pandas_udf(_RESULT_TYPE)  # type: ignore[call-overload]
    def tickets(
        needs: pd.Series,
        tweet_id: pd.Series,
        category: pd.Series,
        created_text: pd.Series,
        created_epoch: pd.Series,
        flight: pd.Series,
        airport: pd.Series,
    ) -> pd.DataFrame:
        columns = (needs, tweet_id, category, created_text, created_epoch, flight, airport)
        rows = [_ticket_row(categories, tracking_url, *args) for args in zip(*columns, strict=True)]
        return pd.DataFrame(rows, columns=[TICKET_ID, REPLY_TEXT, "error"], dtype=object)

    return tickets


# The flight and airport slots in Python, for the fused pass: the same values as the Column
# expressions of ``TicketGenerator._entity_slot`` (Spark's trim strips spaces only, and a Java
# ``$`` also matches before one final line terminator).
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")
_FLIGHT_WORD = re.compile(r"^(FLIGHT|FLT)")
_FLIGHT_RE = re.compile(_FLIGHT_NUMBER)
_AIRPORT_RE = re.compile(r"^[A-Z]{3}(?:\r\n|[\n\r\u0085\u2028\u2029])?\Z")


def _flight_text(text: str) -> str:
    return _FLIGHT_WORD.sub("", _NOT_ALNUM.sub("", text.upper()), count=1)


def _airport_text(text: str) -> str:
    return text.strip(" ").upper()


def _first_slot(entities: Any, label: str, normalise: Callable[[str], str], valid: re.Pattern[str], prefix: str) -> str:
    if _is_missing(entities):
        return ""
    for entity in entities:
        if entity is None:
            continue
        text = entity["text"]
        if entity["label"] == label and isinstance(text, str):
            value = normalise(text)
            if valid.search(value):
                return prefix + value
    return ""


_TICKET_TMP = "__sparktweet_ticket_"
_WANTS, _URGENT = f"{_TICKET_TMP}wants", f"{_TICKET_TMP}urgent"
_QUESTION = r"(?i)^(" + "|".join(QUESTION_WORDS) + r")\b"
_TMP_TWEET_ID = _TICKET_TMP + "tweet_id"
_TMP_CREATED_TEXT = _TICKET_TMP + "created_text"
_TMP_CREATED_EPOCH = _TICKET_TMP + "created_epoch"
_CANDIDATES = (_TICKET_TMP + "id", _TICKET_TMP + "reply", _TICKET_TMP + "error")


def _ticket_kernel(
    categories: dict[str, tuple[str, str, str]],
    tracking_url: str,
    sentiment_col: str,
    category_col: str,
    entities_col: str | None,
    error_col: str,
    frame: pd.DataFrame,
) -> dict[str, Any]:
    """The stage's Python part inside a fused pass: a candidate ticket for every row that may need one.

    Whether a row needs a ticket is decided afterwards by the stage's Column expressions
    (``finish``), which keep a candidate only where ``needs_ticket`` is true; so a candidate is
    made for every row that could qualify (no error yet, not positive, a known category) and
    is the value the stage alone would give that row if it needs a ticket.
    """
    entities = frame[entities_col] if entities_col is not None else [None] * len(frame)
    columns = (
        frame[error_col], frame[sentiment_col], frame[category_col], frame[_TMP_TWEET_ID],
        frame[_TMP_CREATED_TEXT], frame[_TMP_CREATED_EPOCH], entities,
    )
    rows: list[tuple[str | None, str | None, str | None]] = []
    for error, sentiment, category, tweet_id, created_text, created_epoch, ents in zip(*columns, strict=True):
        if not _is_missing(error) or sentiment == "positive" or category not in categories or not isinstance(tweet_id, str):
            rows.append((None, None, None))
            continue
        flight = _first_slot(ents, "FLIGHT", _flight_text, _FLIGHT_RE, " on flight ")
        airport = _first_slot(ents, "AIRPORT", _airport_text, _AIRPORT_RE, " at ")
        rows.append(_ticket_row(categories, tracking_url, True, tweet_id, category, created_text, created_epoch, flight, airport))
    values = list(zip(*rows, strict=True)) if rows else [(), (), ()]
    return {name: pd.Series(list(v), dtype=object, index=frame.index) for name, v in zip(_CANDIDATES, values, strict=True)}


class TicketGenerator(Transformer, HasTextCol, HasErrorCol, HasModelVersion, DefaultParamsReadable, DefaultParamsWritable):
    """Decides which tweets need a support ticket and adds ``needs_ticket``, ``ticket_id``, ``priority``,
    ``reply_text`` and ``model_version``.

    The rules are in the module docstring of :mod:`sparktweet.tickets`. The categories (code, name,
    prefix, template) are stored in the ``categoriesJson`` param, so a saved pipeline carries them.

    Parameters
    ----------
    tweetIdCol, textCol, createdAtCol, sentimentCol, sentimentScoreCol, categoryCol, entitiesCol : str
        Input column names. ``created_at`` is an ISO-8601 string, a timestamp or a date;
        ``entities`` (array<struct<text, label, start, end>>) may be absent.
    categoriesJson : str
        JSON list of categories; defaults to ``conf/categories.yaml``. See :meth:`setCategories`.
    trackingUrl : str
        URL template of the public tracking page, with the slot ``{ticket_id}``.
    urgencyWords, urgentCategories, highPriorityScore
        Priority rules.

    Examples
    --------
    >>> from sparktweet.tickets import TicketGenerator
    >>> df = spark.createDataFrame(
    ...     [("570306133677760513", "@united my bag never arrived, stuck at DEN", "2015-02-24 11:35:52 -0800",
    ...       "negative", 0.97, "baggage")],
    ...     "tweet_id string, text string, created_at string, sentiment string, sentiment_score double, category string")
    >>> row = TicketGenerator(modelVersion="2026.1").transform(df).first()
    >>> row.needs_ticket, row.ticket_id, row.priority
    (True, 'BAG-150224-0JK4HW2', 'high')
    >>> row.reply_text
    "Sorry about your bag. We've opened ticket BAG-150224-0JK4HW2 and our baggage team is on it. Track it at http://127.0.0.1:8080/tickets/BAG-150224-0JK4HW2"
    """

    tweetIdCol: Param[str] = Param(
        Params._dummy(),
        "tweetIdCol",
        "Name of the input column holding the tweet id (string or integer).",
        typeConverter=TypeConverters.toString,
    )
    createdAtCol: Param[str] = Param(
        Params._dummy(),
        "createdAtCol",
        "Name of the input column holding the tweet's creation time (ISO-8601 string, timestamp or date).",
        typeConverter=TypeConverters.toString,
    )
    sentimentCol: Param[str] = Param(
        Params._dummy(),
        "sentimentCol",
        "Name of the input column holding the sentiment label (negative, neutral, positive).",
        typeConverter=TypeConverters.toString,
    )
    sentimentScoreCol: Param[str] = Param(
        Params._dummy(),
        "sentimentScoreCol",
        "Name of the input column holding the probability of the chosen sentiment.",
        typeConverter=TypeConverters.toString,
    )
    categoryCol: Param[str] = Param(
        Params._dummy(), "categoryCol", "Name of the input column holding the category code.", typeConverter=TypeConverters.toString
    )
    entitiesCol: Param[str] = Param(
        Params._dummy(),
        "entitiesCol",
        "Name of the optional input column of entities, array<struct<text, label, start, end>>; "
        "when absent the flight and airport slots stay empty.",
        typeConverter=TypeConverters.toString,
    )
    categoriesJson: Param[str] = Param(
        Params._dummy(),
        "categoriesJson",
        "JSON list of categories (code, name, prefix, keywords, template), so a saved pipeline is self-contained; "
        "defaults to conf/categories.yaml.",
        typeConverter=TypeConverters.toString,
    )
    trackingUrl: Param[str] = Param(
        Params._dummy(),
        "trackingUrl",
        "URL template of the public ticket tracking page, with the slot {ticket_id}.",
        typeConverter=TypeConverters.toString,
    )
    urgencyWords: Param[list[str]] = Param(
        Params._dummy(),
        "urgencyWords",
        "Words and phrases (case-insensitive, whole words) that mark a tweet as urgent and raise its priority.",
        typeConverter=TypeConverters.toListString,
    )
    urgentCategories: Param[list[str]] = Param(
        Params._dummy(),
        "urgentCategories",
        "Category codes whose tickets are time-critical and get at least medium priority.",
        typeConverter=TypeConverters.toListString,
    )
    highPriorityScore: Param[float] = Param(
        Params._dummy(),
        "highPriorityScore",
        "Negative sentiment score at or above which a ticket in an urgent category gets high priority.",
        typeConverter=TypeConverters.toFloat,
    )

    _udf_key: tuple[str, str] | None = None
    _udf: Callable[..., Column] | None = None

    @keyword_only
    def __init__(
        self,
        *,
        tweetIdCol: str = "tweet_id",
        textCol: str = "text",
        createdAtCol: str = "created_at",
        sentimentCol: str = "sentiment",
        sentimentScoreCol: str = "sentiment_score",
        categoryCol: str = "category",
        entitiesCol: str = "entities",
        categoriesJson: str | None = None,
        trackingUrl: str = DEFAULT_TRACKING_URL,
        urgencyWords: list[str] | None = None,
        urgentCategories: list[str] | None = None,
        highPriorityScore: float = 0.9,
        errorCol: str = "error",
        modelVersion: str = "unversioned",
    ) -> None:
        super().__init__()
        self._setDefault(
            tweetIdCol="tweet_id",
            createdAtCol="created_at",
            sentimentCol="sentiment",
            sentimentScoreCol="sentiment_score",
            categoryCol="category",
            entitiesCol="entities",
            categoriesJson=_default_categories_json(),
            trackingUrl=DEFAULT_TRACKING_URL,
            urgencyWords=list(DEFAULT_URGENCY_WORDS),
            urgentCategories=list(DEFAULT_URGENT_CATEGORIES),
            highPriorityScore=0.9,
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        tweetIdCol: str = "tweet_id",
        textCol: str = "text",
        createdAtCol: str = "created_at",
        sentimentCol: str = "sentiment",
        sentimentScoreCol: str = "sentiment_score",
        categoryCol: str = "category",
        entitiesCol: str = "entities",
        categoriesJson: str | None = None,
        trackingUrl: str = DEFAULT_TRACKING_URL,
        urgencyWords: list[str] | None = None,
        urgentCategories: list[str] | None = None,
        highPriorityScore: float = 0.9,
        errorCol: str = "error",
        modelVersion: str = "unversioned",
    ) -> TicketGenerator:
        """Sets params for this TicketGenerator."""
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        if kwargs.get("categoriesJson"):
            parse_categories(json.loads(kwargs["categoriesJson"]))
        return self._set(**kwargs)

    def setTweetIdCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`tweetIdCol`."""
        return self._set(tweetIdCol=value)

    def getTweetIdCol(self) -> str:
        """Gets the value of tweetIdCol or its default value."""
        return self.getOrDefault(self.tweetIdCol)

    def setTextCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`textCol`."""
        return self._set(textCol=value)

    def setCreatedAtCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`createdAtCol`."""
        return self._set(createdAtCol=value)

    def getCreatedAtCol(self) -> str:
        """Gets the value of createdAtCol or its default value."""
        return self.getOrDefault(self.createdAtCol)

    def setSentimentCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`sentimentCol`."""
        return self._set(sentimentCol=value)

    def getSentimentCol(self) -> str:
        """Gets the value of sentimentCol or its default value."""
        return self.getOrDefault(self.sentimentCol)

    def setSentimentScoreCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`sentimentScoreCol`."""
        return self._set(sentimentScoreCol=value)

    def getSentimentScoreCol(self) -> str:
        """Gets the value of sentimentScoreCol or its default value."""
        return self.getOrDefault(self.sentimentScoreCol)

    def setCategoryCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`categoryCol`."""
        return self._set(categoryCol=value)

    def getCategoryCol(self) -> str:
        """Gets the value of categoryCol or its default value."""
        return self.getOrDefault(self.categoryCol)

    def setEntitiesCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`entitiesCol`."""
        return self._set(entitiesCol=value)

    def getEntitiesCol(self) -> str:
        """Gets the value of entitiesCol or its default value."""
        return self.getOrDefault(self.entitiesCol)

    def setCategoriesJson(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`categoriesJson` (validated like conf/categories.yaml)."""
        parse_categories(json.loads(value))
        return self._set(categoriesJson=value)

    def getCategoriesJson(self) -> str:
        """Gets the value of categoriesJson or its default value."""
        return self.getOrDefault(self.categoriesJson)

    def setCategories(self, categories: list[Category]) -> TicketGenerator:
        """Sets the categories from :class:`~sparktweet.categories.Category` objects (e.g. ``load_categories(path)``)."""
        return self.setCategoriesJson(categories_to_json(list(categories)))

    def getCategories(self) -> list[Category]:
        """The categories held in :py:attr:`categoriesJson`."""
        value = self.getCategoriesJson()
        if not value:
            raise ConfigError(
                "TicketGenerator has no categories: conf/categories.yaml was not found when it was built; "
                "call setCategories(load_categories(path)) or load a saved pipeline, which carries them."
            )
        return parse_categories(json.loads(value))

    def setTrackingUrl(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`trackingUrl`."""
        return self._set(trackingUrl=value)

    def getTrackingUrl(self) -> str:
        """Gets the value of trackingUrl or its default value."""
        return self.getOrDefault(self.trackingUrl)

    def setUrgencyWords(self, value: list[str]) -> TicketGenerator:
        """Sets the value of :py:attr:`urgencyWords`."""
        return self._set(urgencyWords=value)

    def getUrgencyWords(self) -> list[str]:
        """Gets the value of urgencyWords or its default value."""
        return self.getOrDefault(self.urgencyWords)

    def setUrgentCategories(self, value: list[str]) -> TicketGenerator:
        """Sets the value of :py:attr:`urgentCategories`."""
        return self._set(urgentCategories=value)

    def getUrgentCategories(self) -> list[str]:
        """Gets the value of urgentCategories or its default value."""
        return self.getOrDefault(self.urgentCategories)

    def setHighPriorityScore(self, value: float) -> TicketGenerator:
        """Sets the value of :py:attr:`highPriorityScore`."""
        return self._set(highPriorityScore=value)

    def getHighPriorityScore(self) -> float:
        """Gets the value of highPriorityScore or its default value."""
        return self.getOrDefault(self.highPriorityScore)

    def setErrorCol(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`errorCol`."""
        return self._set(errorCol=value)

    def setModelVersion(self, value: str) -> TicketGenerator:
        """Sets the value of :py:attr:`modelVersion`."""
        return self._set(modelVersion=value)

    def _required(self, df: DataFrame, name: str, kinds: tuple[type, ...], what: str) -> T.DataType:
        if name not in df.columns:
            raise InputError(f"TicketGenerator: input column {name!r} is missing; found {df.columns}.")
        dtype = df.schema[name].dataType
        if not isinstance(dtype, kinds):
            raise InputError(f"TicketGenerator: column {name!r} must be {what}, found {dtype.simpleString()}.")
        return dtype

    def _created_columns(self, df: DataFrame) -> tuple[Column, Column]:
        """(text, epoch seconds) for the UDF: an instant travels as epoch seconds, so no time zone can shift it."""
        name = self.getCreatedAtCol()
        dtype = self._required(df, name, (T.StringType, T.TimestampType, T.TimestampNTZType, T.DateType), "a string, timestamp or date")
        col = F.col(name)
        if isinstance(dtype, T.TimestampType):
            return F.lit(None).cast("string"), F.unix_seconds(col)
        # A local timestamp or a date is read as UTC wall-clock time, like a naive ISO string.
        return col.cast("string"), F.lit(None).cast("long")

    def _check_entities(self, df: DataFrame) -> bool:
        """Whether the entities column is there; raises InputError when it has the wrong type."""
        name = self.getEntitiesCol()
        if name not in df.columns:
            return False
        dtype = df.schema[name].dataType
        element = dtype.elementType if isinstance(dtype, T.ArrayType) else None
        if not isinstance(element, T.StructType) or not {"text", "label"} <= set(element.fieldNames()):
            raise InputError(
                f"TicketGenerator: column {name!r} must be array<struct<text, label, start, end>>, found {dtype.simpleString()}."
            )
        return True

    def _entity_slot(self, df: DataFrame, label: str, normalise: Callable[[Column], Column], valid: str, prefix: str) -> Column:
        if not self._check_entities(df):
            return F.lit("")
        name = self.getEntitiesCol()
        matches = F.filter(F.col(name), lambda e: (e["label"] == label) & normalise(e["text"]).rlike(valid))
        return F.coalesce(F.concat(F.lit(prefix), normalise(F.get(matches, 0)["text"])), F.lit(""))

    def _get_udf(self, categories: list[Category]) -> Callable[..., Column]:
        key = (self.getCategoriesJson(), self.getTrackingUrl())
        if self._udf is None or self._udf_key != key:
            self._udf = _ticket_udf(self._by_code(categories), self.getTrackingUrl())
            self._udf_key = key
        return self._udf

    @staticmethod
    def _by_code(categories: list[Category]) -> dict[str, tuple[str, str, str]]:
        return {c.code: (c.prefix, c.name, c.template) for c in categories}

    def _tweet_id(self, dataset: DataFrame) -> Column:
        """The tweet id column as text (a string or integer column; anything else is an InputError)."""
        tweet_type = self._required(dataset, self.getTweetIdCol(), (T.StringType, T.IntegralType), "a string or integer")
        tweet_id = F.col(self.getTweetIdCol())
        return tweet_id if isinstance(tweet_type, T.StringType) else tweet_id.cast("string")

    def _prepare_fused(self, dataset: DataFrame) -> DataFrame:
        """Before a fused pass: the tweet id as text and the creation time as the ticket kernel reads them."""
        created_text, created_epoch = self._created_columns(dataset)
        return dataset.withColumns({_TMP_TWEET_ID: self._tweet_id(dataset), _TMP_CREATED_TEXT: created_text, _TMP_CREATED_EPOCH: created_epoch})

    def _fusion_step(self, columns: list[str]) -> FusionStep:
        """This stage as the last step of a fused pass (:func:`sparktweet.fusion.fuse`).

        The kernel makes the candidate ticket ID and reply inside the pass; ``finish`` applies the
        same Column expressions as :meth:`_transform` and keeps a candidate only where a ticket is
        needed, so the stage adds no Python UDF of its own to the pipeline.
        """
        categories = self.getCategories()
        validate_templates(categories, self.getTrackingUrl())
        entities_col = self.getEntitiesCol() if self.getEntitiesCol() in columns else None
        inputs = [self.getErrorCol(), self.getSentimentCol(), self.getCategoryCol(), _TMP_TWEET_ID, _TMP_CREATED_TEXT, _TMP_CREATED_EPOCH]
        if entities_col is not None:
            inputs.append(entities_col)
        kernel = functools.partial(
            _ticket_kernel,
            self._by_code(categories),
            self.getTrackingUrl(),
            self.getSentimentCol(),
            self.getCategoryCol(),
            entities_col,
            self.getErrorCol(),
        )
        return FusionStep(
            inputs=tuple(inputs),
            outputs=tuple((name, T.StringType()) for name in _CANDIDATES),
            kernel=kernel,
            text_inputs=frozenset({self.getSentimentCol(), self.getCategoryCol()}),
            prepare=self._prepare_fused,
            finish=lambda df: self._apply_rules(df, fused=True),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self._apply_rules(dataset, fused=False)

    def _apply_rules(self, dataset: DataFrame, *, fused: bool) -> DataFrame:
        """The stage's Column expressions; the ticket ID and reply come from the UDF, or from the
        candidates a fused pass computed (``fused``), kept only where a ticket is needed."""
        categories = self.getCategories()
        validate_templates(categories, self.getTrackingUrl())
        codes = [c.code for c in categories]
        error_col = self.getErrorCol()

        tweet_id = self._tweet_id(dataset)
        self._required(dataset, self.getTextCol(), (T.StringType,), "a string")
        self._required(dataset, self.getSentimentCol(), (T.StringType,), "a string")
        self._required(dataset, self.getSentimentScoreCol(), (T.NumericType,), "numeric")
        self._required(dataset, self.getCategoryCol(), (T.StringType,), "a string")
        created_text, created_epoch = self._created_columns(dataset)

        text = F.coalesce(F.col(self.getTextCol()), F.lit(""))
        sentiment = F.col(self.getSentimentCol())
        score = F.col(self.getSentimentScoreCol()).cast("double")
        category = F.col(self.getCategoryCol())

        is_negative = F.coalesce(sentiment == "negative", F.lit(False))
        is_positive = F.coalesce(sentiment == "positive", F.lit(False))
        # The regex-heavy conditions are columns of their own, referenced by name: the optimizer keeps a
        # non-cheap expression used more than once in its own projection, so each is computed (and
        # its code generated, once per micro-batch in a stream) once instead of once per use.
        body = F.regexp_replace(F.regexp_replace(text, _URLS, ""), _LEADING_MENTIONS, "")
        dataset = dataset.withColumn(_WANTS, is_negative | ((body.contains("?") | body.rlike(_QUESTION)) & ~is_positive))
        wants_ticket = F.col(_WANTS)

        own_error = (
            F.when(
                tweet_id.isNull() | (F.trim(tweet_id) == ""),
                F.lit(f"TicketGenerator: {self.getTweetIdCol()} is null or empty; every row needs the tweet id."),
            )
            .when(
                wants_ticket & category.isNull(),
                F.lit(f"TicketGenerator: {self.getCategoryCol()} is null; a tweet that needs a ticket needs a category code."),
            )
            .when(
                wants_ticket & ~category.isin(codes),
                F.concat(
                    F.lit(f"TicketGenerator: unknown {self.getCategoryCol()} code '"),
                    category,
                    F.lit(f"'; expected one of {', '.join(codes)} (categoriesJson)."),
                ),
            )
        )
        out = dataset.withColumn(error_col, F.coalesce(error_column(dataset, error_col), own_error))
        out = out.withColumn(NEEDS_TICKET, F.when(F.col(error_col).isNull(), wants_ticket))

        if fused:
            self._check_entities(dataset)
            # The candidates were made for every row that might need a ticket; keep them where one is needed.
            needs = F.col(NEEDS_TICKET)
            cand_id, cand_reply, cand_error = _CANDIDATES
            out = out.withColumns({TICKET_ID: F.when(needs, F.col(cand_id)), REPLY_TEXT: F.when(needs, F.col(cand_reply))})
            out = out.withColumn(error_col, F.coalesce(F.col(error_col), F.when(needs, F.col(cand_error))))
        else:
            flight = self._entity_slot(
                dataset,
                "FLIGHT",
                lambda c: F.regexp_replace(F.regexp_replace(F.upper(c), "[^A-Z0-9]", ""), "^(FLIGHT|FLT)", ""),
                _FLIGHT_NUMBER,
                " on flight ",
            )
            airport = self._entity_slot(dataset, "AIRPORT", lambda c: F.upper(F.trim(c)), "^[A-Z]{3}$", " at ")
            result = self._get_udf(categories)(F.col(NEEDS_TICKET), tweet_id, category, created_text, created_epoch, flight, airport)
            out = with_struct_outputs(out, result, [TICKET_ID, REPLY_TEXT], error_col)

        # The ticket ID may add an error (no usable date); such a row must not claim a ticket either.
        ok = F.col(error_col).isNull()
        urgent = F.lit(False)
        if any(w.strip() for w in self.getUrgencyWords()):
            out = out.withColumn(_URGENT, text.rlike(_word_regex(self.getUrgencyWords())))
            urgent = F.col(_URGENT)
        urgent_category = F.coalesce(category.isin(self.getUrgentCategories()), F.lit(False))
        strong_negative = is_negative & F.coalesce(score >= F.lit(self.getHighPriorityScore()), F.lit(False))
        high = (urgent & (is_negative | urgent_category)) | (strong_negative & urgent_category)
        medium = is_negative | urgent | urgent_category
        priority = F.when(high, "high").when(medium, "medium").otherwise("low")
        outputs = {
            NEEDS_TICKET: F.when(ok, F.col(NEEDS_TICKET)),
            TICKET_ID: F.when(ok, F.col(TICKET_ID)),
            PRIORITY: F.when(ok & F.col(NEEDS_TICKET), priority),
            REPLY_TEXT: F.when(ok, F.col(REPLY_TEXT)),
            MODEL_VERSION: F.lit(self.getModelVersion()),
        }
        out = out.withColumns(outputs)
        kept = [c for c in dataset.columns if not c.startswith(_TICKET_TMP)]
        order = kept + [c for c in [*outputs, error_col] if c not in kept]
        return out.select(*order)

"""``TweetPreprocessor``: tweet text to ``tokens: array<string>``, in Python workers or in the JVM.

Both backends run the same steps (:mod:`sparktweet.text`) on the same resource files and give
the same tokens:

- ``pandas`` (default): a pandas UDF calling :class:`sparktweet.text.TextPreprocessor`, loaded
  once per Python worker;
- ``jvm``: the Java UDF ``sparktweet.jvm.TweetPreprocess`` from ``jars/sparktweet-jvm.jar``
  (built by ``bash jvm/preprocess/build.sh``), with no Python round trip.

Rows the stage cannot tokenise (null, blank or over-long text, too few tokens) get null tokens
and a reason in the error column; the checks are Spark SQL expressions shared by both backends,
so over-long texts never reach the tokeniser.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType

from sparktweet.errors import ConfigError, InputError
from sparktweet.fusion import FusionStep
from sparktweet.params import HasErrorCol, HasTextCol, HasTokensCol
from sparktweet.session import JARS_DIR
from sparktweet.text import TextPreprocessor
from sparktweet.workers import cached, error_column

BACKENDS = ("pandas", "jvm")
JVM_CLASS = "sparktweet.jvm.TweetPreprocess"
JVM_FUNCTION = "sparktweet_tweet_tokens"
JVM_JAR = JARS_DIR / "sparktweet-jvm.jar"
JVM_BUILD_SCRIPT = "jvm/preprocess/build.sh"
TOKENS_TYPE = ArrayType(StringType())

_SPARK_NLP_NAMES = {"sparknlp", "spark-nlp", "spark_nlp"}


def _to_backend(value: Any) -> str:
    backend = TypeConverters.toString(value).strip().lower()
    if backend in _SPARK_NLP_NAMES:
        raise ConfigError(
            "TweetPreprocessor backend 'sparknlp' is not available: Spark NLP publishes no build for "
            "Scala 2.13 / Spark 4 on Maven Central (only spark-nlp_2.12, which cannot load on Spark 4). "
            "Use backend 'jvm', the Java UDF with the same tokens and no Python round trip "
            f"(build it with `bash {JVM_BUILD_SCRIPT}`)."
        )
    if backend not in BACKENDS:
        raise ConfigError(f"TweetPreprocessor backend must be one of {', '.join(BACKENDS)}; found {value!r}.")
    return backend


def _to_count(name: str, minimum: int) -> Any:
    def convert(value: Any) -> int:
        number = TypeConverters.toInt(value)
        if number < minimum:
            raise ConfigError(f"TweetPreprocessor param {name} must be an integer >= {minimum}; found {value!r}.")
        return number

    return convert


def _load_preprocessor(_: str) -> TextPreprocessor:
    return TextPreprocessor.load()


@F.pandas_udf(TOKENS_TYPE)  # type: ignore[call-overload]
def _pandas_tokens(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
    """Tokens of each text; null in, null out. Runs in Python workers."""
    pre = cached("text-preprocessor", "sparktweet/resources", _load_preprocessor)
    for texts in batches:
        yield pd.Series([pre.tokenize(t) if isinstance(t, str) else None for t in texts], dtype=object)


# Spark's rlike("^\\s*$") in Python: Java's \\s is ASCII whitespace only, and its $ also matches
# before one final line terminator, of which U+0085, U+2028 and U+2029 are not \\s.
_BLANK = re.compile(r"[ \t\n\x0b\f\r]*[\u0085\u2028\u2029]?")


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _tokens_kernel(text_col: str, tokens_col: str, error_col: str, max_chars: int, min_tokens: int, frame: pd.DataFrame) -> dict[str, Any]:
    """The stage as a pandas function for :mod:`sparktweet.fusion`: the same tokens and errors as ``_transform``."""
    pre = cached("text-preprocessor", "sparktweet/resources", _load_preprocessor)
    tokens: list[Any] = []
    errors: list[Any] = []
    for text, incoming in zip(frame[text_col], frame[error_col], strict=True):
        got, error = None, None
        if not _is_null(incoming):
            error = incoming
        elif _is_null(text):
            error = "missing text"
        elif _BLANK.fullmatch(text):
            error = "empty text"
        elif len(text) > max_chars:
            error = f"text too long ({len(text)} chars > maxChars {max_chars})"
        else:
            got = pre.tokenize(text)
            if len(got) < min_tokens:
                got, error = None, f"too few tokens ({len(got)} < minTokens {min_tokens})"
        tokens.append(got)
        errors.append(error)
    return {tokens_col: pd.Series(tokens, dtype=object, index=frame.index), error_col: pd.Series(errors, dtype=object, index=frame.index)}


def register_jvm_function(spark: SparkSession, name: str = JVM_FUNCTION, class_name: str = JVM_CLASS) -> None:
    """Register the JVM backend's Java UDF as the SQL function ``name`` (once per session).

    Raises
    ------
    ConfigError
        When the session cannot load ``class_name``: the jar is not built or not on spark.jars.
    """
    try:
        if not spark.catalog.functionExists(name):
            spark.udf.registerJavaFunction(name, class_name, TOKENS_TYPE)
    except Exception as exc:  # py4j and Spark Connect raise different types for a missing class
        if class_name not in str(exc):
            raise
        hint = (
            f"{JVM_JAR} exists, so this SparkSession was started before it was built: start a new one."
            if JVM_JAR.exists()
            else f"Run `bash {JVM_BUILD_SCRIPT}` to build {JVM_JAR}, then start a new SparkSession."
        )
        raise ConfigError(
            f"TweetPreprocessor backend 'jvm' needs the class {class_name} from sparktweet-jvm.jar, which this "
            f"SparkSession cannot load. {hint} sparktweet.session.build_session puts jars/*.jar on spark.jars; "
            "with spark-submit pass the jar to --jars."
        ) from exc


class TweetPreprocessor(Transformer, HasTextCol, HasTokensCol, HasErrorCol, DefaultParamsReadable, DefaultParamsWritable):
    """Normalise, tokenise, drop stop words and lemmatise tweet texts.

    URLs become ``xurl``, @mentions ``xmention``, numbers ``xnum``, emoji ``xemojipos``,
    ``xemojineg`` or ``xemoji``; HTML entities are unescaped, hashtags keep their word, stop
    words are removed but negations kept (``don't`` gives ``not``), and words are lemmatised
    with spacy-lookups-data's English table. :mod:`sparktweet.text` documents every step.

    A row gets null tokens and a reason in ``errorCol`` when its text is null (``missing
    text``), blank (``empty text``), longer than ``maxChars`` (``text too long (N chars >
    maxChars M)``) or yields fewer than ``minTokens`` tokens (``too few tokens (N < minTokens
    M)``); a row that arrives with an error keeps it and gets null tokens.

    Parameters
    ----------
    textCol : str, default "text"
    tokensCol : str, default "tokens"
    errorCol : str, default "error"
    backend : str, default "pandas"
        ``"pandas"`` (Python workers) or ``"jvm"`` (``jars/sparktweet-jvm.jar``, built by
        ``bash jvm/preprocess/build.sh``); both give the same tokens.
    maxChars : int, default 10000
    minTokens : int, default 1

    Examples
    --------
    >>> from sparktweet.preprocessing import TweetPreprocessor
    >>> df = spark.createDataFrame([("1", "@united 2 flights cancelled &amp; no help #fail 😡")], ["tweet_id", "text"])
    >>> TweetPreprocessor().transform(df).select("tokens", "error").first()
    Row(tokens=['xmention', 'xnum', 'flight', 'cancel', 'no', 'help', 'fail', 'xemojineg'], error=None)
    >>> TweetPreprocessor(backend="jvm").transform(df).first().tokens[:3]
    ['xmention', 'xnum', 'flight']
    """

    backend: Param[str] = Param(
        Params._dummy(),
        "backend",
        "Where tokens are computed: 'pandas' runs sparktweet.text in Python workers, 'jvm' runs the Java UDF "
        "from jars/sparktweet-jvm.jar with no Python round trip; both give the same tokens.",
        typeConverter=_to_backend,
    )
    maxChars: Param[int] = Param(
        Params._dummy(),
        "maxChars",
        "Texts longer than this many characters are not tokenised: the row gets null tokens and an error.",
        typeConverter=_to_count("maxChars", 1),
    )
    minTokens: Param[int] = Param(
        Params._dummy(),
        "minTokens",
        "Rows with fewer tokens than this after preprocessing get null tokens and an error; 0 accepts empty token lists.",
        typeConverter=_to_count("minTokens", 0),
    )

    @keyword_only
    def __init__(
        self,
        *,
        textCol: str = "text",
        tokensCol: str = "tokens",
        errorCol: str = "error",
        backend: str = "pandas",
        maxChars: int = 10000,
        minTokens: int = 1,
    ) -> None:
        super().__init__()
        self._setDefault(backend="pandas", maxChars=10000, minTokens=1)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        textCol: str = "text",
        tokensCol: str = "tokens",
        errorCol: str = "error",
        backend: str = "pandas",
        maxChars: int = 10000,
        minTokens: int = 1,
    ) -> TweetPreprocessor:
        """Sets params for this TweetPreprocessor."""
        return self._set(**self._input_kwargs)

    def setTextCol(self, value: str) -> TweetPreprocessor:
        """Sets the value of :py:attr:`textCol`."""
        return self._set(textCol=value)

    def setTokensCol(self, value: str) -> TweetPreprocessor:
        """Sets the value of :py:attr:`tokensCol`."""
        return self._set(tokensCol=value)

    def setErrorCol(self, value: str) -> TweetPreprocessor:
        """Sets the value of :py:attr:`errorCol`."""
        return self._set(errorCol=value)

    def setBackend(self, value: str) -> TweetPreprocessor:
        """Sets the value of :py:attr:`backend`."""
        return self._set(backend=value)

    def getBackend(self) -> str:
        """Gets the value of backend or its default value."""
        return self.getOrDefault(self.backend)

    def setMaxChars(self, value: int) -> TweetPreprocessor:
        """Sets the value of :py:attr:`maxChars`."""
        return self._set(maxChars=value)

    def getMaxChars(self) -> int:
        """Gets the value of maxChars or its default value."""
        return self.getOrDefault(self.maxChars)

    def setMinTokens(self, value: int) -> TweetPreprocessor:
        """Sets the value of :py:attr:`minTokens`."""
        return self._set(minTokens=value)

    def getMinTokens(self) -> int:
        """Gets the value of minTokens or its default value."""
        return self.getOrDefault(self.minTokens)

    def _check_input(self, columns: list[str]) -> None:
        if self.getTextCol() not in columns:
            raise InputError(
                f"TweetPreprocessor expects a text column {self.getTextCol()!r} (param textCol); the input has {columns}."
            )

    def _fusion_step(self, columns: list[str]) -> FusionStep | None:
        """The pandas backend as one step of a fused pass (:func:`sparktweet.fusion.fuse`); the JVM backend is not fused."""
        self._check_input(columns)
        if self.getBackend() != "pandas":
            return None
        text_col, tokens_col, error_col = self.getTextCol(), self.getTokensCol(), self.getErrorCol()
        kernel = functools.partial(_tokens_kernel, text_col, tokens_col, error_col, self.getMaxChars(), self.getMinTokens())
        return FusionStep(
            inputs=(text_col, error_col),
            outputs=((tokens_col, TOKENS_TYPE), (error_col, StringType())),
            kernel=kernel,
            text_inputs=frozenset({text_col}),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        text_col, tokens_col, error_col = self.getTextCol(), self.getTokensCol(), self.getErrorCol()
        self._check_input(dataset.columns)
        max_chars, min_tokens = self.getMaxChars(), self.getMinTokens()
        text = F.col(text_col).cast("string")
        length = F.char_length(text)
        incoming = error_column(dataset, error_col)
        text_error = (
            F.when(text.isNull(), F.lit("missing text"))
            .when(text.rlike(r"^\s*$"), F.lit("empty text"))
            .when(length > max_chars, F.format_string("text too long (%d chars > maxChars %d)", length, F.lit(max_chars)))
        )
        ok = incoming.isNull() & text_error.isNull()
        # Invalid UTF-8 (e.g. Kafka bytes cast to string) would fail Arrow's decoding in the workers.
        to_tokenise = F.when(ok, F.make_valid_utf8(text))
        if self.getBackend() == "jvm":
            register_jvm_function(dataset.sparkSession)
            raw = F.call_function(JVM_FUNCTION, to_tokenise)
        else:
            raw = _pandas_tokens(to_tokenise)
        tmp = f"__sparktweet_{tokens_col}"
        out = dataset.withColumn(tmp, raw)
        count = F.size(F.col(tmp))
        count_error = F.when(ok & (count < min_tokens), F.format_string("too few tokens (%d < minTokens %d)", count, F.lit(min_tokens)))
        out = out.withColumns(
            {
                tokens_col: F.when(ok & count_error.isNull(), F.col(tmp)),
                error_col: F.coalesce(incoming, text_error, count_error),
            }
        )
        return out.drop(tmp)

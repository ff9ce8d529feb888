"""``EntityExtractor``: airline-domain named entities as a Spark ML Transformer.

The spaCy side lives in :mod:`sparktweet.ner`; this module ships its pattern file (the stage's
artifact) to executors and runs it in a pandas UDF, one pipeline per Python worker.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark import SparkContext, keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import (
    ArrayType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from sparktweet import ner
from sparktweet.errors import ConfigError, InputError
from sparktweet.fusion import FusionStep
from sparktweet.params import HasBatchSize, HasErrorCol, HasTextCol
from sparktweet.persistence import (
    ArtifactRef,
    HasArtifacts,
    copy_from_hadoop,
    new_artifact_dir,
    process_temp_dir,
)
from sparktweet.workers import (
    cached,
    error_column,
    resolve_artifact,
    with_struct_outputs,
)

ENTITY_TYPE = StructType(
    [
        StructField("text", StringType()),
        StructField("label", StringType()),
        StructField("start", IntegerType()),
        StructField("end", IntegerType()),
    ]
)
ENTITIES_TYPE = ArrayType(ENTITY_TYPE)
_RESULT_TYPE = StructType([StructField("entities", ENTITIES_TYPE), StructField("error", StringType())])


@functools.lru_cache(maxsize=1)
def _default_patterns_dir() -> str:
    """The built-in patterns, generated once per driver process (a few seconds: airportsdata and
    spaCy's word frequencies) and copied into each stage's own artifact folder."""
    directory = new_artifact_dir("ner-default-patterns")
    ner.write_patterns(ner.default_patterns(), directory)
    return directory


def _fetch_patterns(path: str, directory: str) -> None:
    """Validate the user's pattern file and write it into ``directory``; Hadoop URIs are copied first."""
    if re.match(r"^[A-Za-z][\w+.-]*://", path) and not path.startswith("file:"):
        local = os.path.join(process_temp_dir("patterns"), ner.PATTERNS_FILE)
        copy_from_hadoop(SparkContext.getOrCreate(), path, local)
        path = local
    ner.write_patterns(ner.read_patterns(path.removeprefix("file://")), directory)


def _entities_udf(
    ref: ArtifactRef, digest: str, model: str, labels: tuple[str, ...], batch_size: int, max_length: int
) -> Any:
    """The pandas UDF; its closure holds only the artifact reference and plain settings."""

    @pandas_udf(_RESULT_TYPE)  # type: ignore[call-overload]
    def extract_entities(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        nlp = _cached_nlp(ref, digest, model, max_length)
        for texts in batches:
            values = [None if pd.isna(t) else t for t in texts]
            results = ner.extract(nlp, values, batch_size=batch_size, labels=labels, max_length=max_length)
            yield pd.DataFrame(
                {
                    "entities": [None if r.entities is None else [e._asdict() for e in r.entities] for r in results],
                    "error": [r.error for r in results],
                }
            )

    return extract_entities


def _cached_nlp(ref: ArtifactRef, digest: str, model: str, max_length: int) -> Any:
    def load(_: str) -> Any:
        return ner.load_nlp(resolve_artifact(ref), model=model, max_length=max_length)

    # Keyed by the patterns' digest, not their path: a saved and reloaded stage, or a copy,
    # ships identical rules under a new name and should not cost a second load per worker.
    return cached(f"sparktweet.ner:{model}:{max_length}", digest, load)


def _entities_kernel(
    ref: ArtifactRef, digest: str, model: str, labels: tuple[str, ...], batch_size: int, max_length: int,
    text_col: str, out_col: str, error_col: str, frame: pd.DataFrame,
) -> dict[str, Any]:
    """The stage as a pandas function for :mod:`sparktweet.fusion`: the same rows as ``_transform``."""
    nlp = _cached_nlp(ref, digest, model, max_length)
    previous = frame[error_col]
    values = [t if pd.isna(e) and not pd.isna(t) else None for t, e in zip(frame[text_col], previous, strict=True)]
    results = ner.extract(nlp, values, batch_size=batch_size, labels=labels, max_length=max_length)
    entities = [None if r.entities is None else [e._asdict() for e in r.entities] for r in results]
    errors = [e if not pd.isna(e) else r.error for e, r in zip(previous, results, strict=True)]
    return {out_col: pd.Series(entities, dtype=object, index=frame.index), error_col: pd.Series(errors, dtype=object, index=frame.index)}


class EntityExtractor(Transformer, HasTextCol, HasErrorCol, HasBatchSize, HasArtifacts):
    """Adds ``entities: array<struct<text, label, start, end>>`` found by spaCy with airline rules.

    Labels: AIRLINE, FLIGHT, AIRPORT, CITY, DATE, TIME, MONEY, BOOKING_REF. ``start``/``end`` are
    character offsets into the text column (``text[start:end] == entity.text``). The rules are a
    JSON Lines pattern file (see :mod:`sparktweet.ner`), built from ``sparktweet.ner`` defaults on
    first use unless ``patternsPath`` names another, and saved with the stage. A row with a null
    text or an earlier ``error`` gets null entities; a text spaCy cannot process gets an error.

    Parameters
    ----------
    textCol, outputCol, errorCol, batchSize, spacyModel, patternsPath, labels, maxTextLength
        See the Params' docs (``explainParams()``).

    Examples
    --------
    >>> df = spark.createDataFrame([("1", "@united my bag never arrived in Denver")], ["tweet_id", "text"])  # doctest: +SKIP
    >>> EntityExtractor().transform(df).select("entities").first()[0]  # doctest: +SKIP
    [Row(text='united', label='AIRLINE', start=1, end=7), Row(text='Denver', label='CITY', start=32, end=38)]
    """

    outputCol: Param[str] = Param(
        Params._dummy(),
        "outputCol",
        "Name of the output column: an array of structs (text, label, start, end) with character offsets into the text.",
        typeConverter=TypeConverters.toString,
    )
    spacyModel: Param[str] = Param(
        Params._dummy(),
        "spacyModel",
        "Installed spaCy pipeline (package name such as en_core_web_sm, or a path) whose entities fill the gaps the "
        "rules leave; empty for the rules alone.",
        typeConverter=TypeConverters.toString,
    )
    patternsPath: Param[str] = Param(
        Params._dummy(),
        "patternsPath",
        "Pattern file (JSON Lines, local path or Hadoop URI) used instead of the built-in airline rules; it is copied "
        "into the stage on first use and saved with it. Empty for the built-in rules.",
        typeConverter=TypeConverters.toString,
    )
    labels: Param[list[str]] = Param(
        Params._dummy(),
        "labels",
        "Entity labels to keep, among AIRLINE, FLIGHT, AIRPORT, CITY, DATE, TIME, MONEY and BOOKING_REF.",
        typeConverter=TypeConverters.toListString,
    )
    maxTextLength: Param[int] = Param(
        Params._dummy(),
        "maxTextLength",
        "Longest text, in characters, handed to spaCy; a longer row gets null entities and an error.",
        typeConverter=TypeConverters.toInt,
    )

    _artifacts_from: str | None = None
    _udfs: dict[tuple[Any, ...], Any] | None = None

    @keyword_only
    def __init__(
        self,
        *,
        textCol: str = "text",
        outputCol: str = "entities",
        errorCol: str = "error",
        batchSize: int = 1024,
        spacyModel: str = "",
        patternsPath: str = "",
        labels: list[str] | None = None,
        maxTextLength: int = ner.DEFAULT_MAX_LENGTH,
    ) -> None:
        super().__init__()
        self._setDefault(
            outputCol="entities", spacyModel="", patternsPath="", labels=list(ner.LABELS), maxTextLength=ner.DEFAULT_MAX_LENGTH
        )
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        textCol: str = "text",
        outputCol: str = "entities",
        errorCol: str = "error",
        batchSize: int = 1024,
        spacyModel: str = "",
        patternsPath: str = "",
        labels: list[str] | None = None,
        maxTextLength: int = ner.DEFAULT_MAX_LENGTH,
    ) -> EntityExtractor:
        """Sets params for this transformer."""
        return self._set(**self._input_kwargs)

    def setTextCol(self, value: str) -> EntityExtractor:
        """Sets the value of :py:attr:`textCol`."""
        return self._set(textCol=value)

    def setOutputCol(self, value: str) -> EntityExtractor:
        """Sets the value of :py:attr:`outputCol`."""
        return self._set(outputCol=value)

    def getOutputCol(self) -> str:
        """Gets the value of outputCol or its default value."""
        return self.getOrDefault(self.outputCol)

    def setErrorCol(self, value: str) -> EntityExtractor:
        """Sets the value of :py:attr:`errorCol`."""
        return self._set(errorCol=value)

    def setBatchSize(self, value: int) -> EntityExtractor:
        """Sets the value of :py:attr:`batchSize`."""
        return self._set(batchSize=value)

    def setSpacyModel(self, value: str) -> EntityExtractor:
        """Sets the value of :py:attr:`spacyModel`."""
        return self._set(spacyModel=value)

    def getSpacyModel(self) -> str:
        """Gets the value of spacyModel or its default value."""
        return self.getOrDefault(self.spacyModel)

    def setPatternsPath(self, value: str) -> EntityExtractor:
        """Sets the value of :py:attr:`patternsPath`; the new file is read on next use."""
        return self._set(patternsPath=value)

    def getPatternsPath(self) -> str:
        """Gets the value of patternsPath or its default value."""
        return self.getOrDefault(self.patternsPath)

    def setLabels(self, value: list[str]) -> EntityExtractor:
        """Sets the value of :py:attr:`labels`."""
        return self._set(labels=value)

    def getLabels(self) -> list[str]:
        """Gets the value of labels or its default value."""
        return self.getOrDefault(self.labels)

    def setMaxTextLength(self, value: int) -> EntityExtractor:
        """Sets the value of :py:attr:`maxTextLength`."""
        return self._set(maxTextLength=value)

    def getMaxTextLength(self) -> int:
        """Gets the value of maxTextLength or its default value."""
        return self.getOrDefault(self.maxTextLength)

    def _set_artifact_dir(self, path: str) -> None:
        super()._set_artifact_dir(path)
        # Loaded or built artifacts belong to the patternsPath in force now; a later change of
        # patternsPath (set, copy with extra) makes them stale.
        self._artifacts_from = self.getPatternsPath()

    def _require_artifacts(self) -> str:
        if not self._artifact_dir or self._artifacts_from != self.getPatternsPath():
            directory = new_artifact_dir("entityextractor")
            source = self.getPatternsPath()
            if source:
                _fetch_patterns(source, directory)
            else:
                shutil.copytree(_default_patterns_dir(), directory, dirs_exist_ok=True)
            self._set_artifact_dir(directory)
        return super()._require_artifacts()

    def _udf_key(self, columns: list[str]) -> tuple[Any, ...]:
        """Checks the input and params; returns the UDF's settings (artifact, digest, model, labels, batch, max length)."""
        text_col = self.getTextCol()
        if text_col not in columns:
            raise InputError(f"EntityExtractor: input column {text_col!r} not found; the DataFrame has {columns}.")
        labels = tuple(self.getLabels())
        unknown = sorted(set(labels) - set(ner.LABELS))
        if unknown:
            raise ConfigError(f"EntityExtractor: labels {unknown} are unknown; choose among {list(ner.LABELS)}.")
        model = self.getSpacyModel()
        ner.check_model(model)
        ref = self._artifact_ref()
        return (ref, ner.patterns_digest(ref.local_path), model, labels, self.getBatchSize(), self.getMaxTextLength())

    def _fusion_step(self, columns: list[str]) -> FusionStep:
        """This stage as one step of a fused pass (:func:`sparktweet.fusion.fuse`)."""
        key = self._udf_key(columns)
        text_col, out_col, error_col = self.getTextCol(), self.getOutputCol(), self.getErrorCol()
        return FusionStep(
            inputs=(text_col, error_col),
            outputs=((out_col, ENTITIES_TYPE), (error_col, StringType())),
            kernel=functools.partial(_entities_kernel, *key, text_col, out_col, error_col),
            text_inputs=frozenset({text_col}),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        text_col, out_col, error_col = self.getTextCol(), self.getOutputCol(), self.getErrorCol()
        key = self._udf_key(dataset.columns)
        if self._udfs is None:
            self._udfs = {}
        if key not in self._udfs:
            self._udfs[key] = _entities_udf(*key)
        udf = self._udfs[key]
        # A row that already failed upstream is not worth a spaCy call: a null text gives null entities.
        text = F.when(error_column(dataset, error_col).isNull(), F.col(text_col).cast("string"))
        return with_struct_outputs(dataset, udf(text), [out_col], error_col, field_names=["entities"])

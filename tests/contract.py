"""The contract every sparktweet stage meets, shared by the per-module tests.

- builds with no arguments and every param has a doc;
- inside a Pipeline mixed with a JVM stage, save/load through a ``file://`` URI that does not
  resolve from the working directory gives identical output;
- runs on a streaming DataFrame (file source, ``processAllAvailable``) with the same output.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from chispa import assert_df_equality
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.base import Estimator
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame, SparkSession


def check_no_arg_construction(cls: type) -> None:
    stage = cls()
    for param in stage.params:
        assert param.doc and len(param.doc) > 10, f"{cls.__name__}.{param.name} needs a full-sentence doc"


def _sorted(df: DataFrame, key: str) -> DataFrame:
    return df.orderBy(key)


def check_save_load_round_trip(stage, df: DataFrame, tmp_path: Path, key: str = "tweet_id") -> DataFrame:
    """Fit (if needed) ``stage`` in a Pipeline with a JVM stage, save, reload, compare outputs."""
    jvm_stage = SQLTransformer(statement="SELECT *, length(text) AS text_length FROM __THIS__")
    model = Pipeline(stages=[jvm_stage, stage]).fit(df)
    before = model.transform(df)
    # A file:// URI under a folder the Python side never chdirs into.
    target = f"file://{tmp_path.resolve()}/saved-{uuid.uuid4().hex[:8]}/model"
    model.write().overwrite().save(target)
    loaded = PipelineModel.load(target)
    assert [type(s).__name__ for s in loaded.stages] == [type(s).__name__ for s in model.stages]
    after = loaded.transform(df)
    assert_df_equality(_sorted(before, key), _sorted(after, key), ignore_nullable=True, allow_nan_equality=True)
    return before


def check_streaming(stage_or_model, df: DataFrame, spark: SparkSession, tmp_path: Path, key: str = "tweet_id") -> None:
    """The stage (a Transformer or fitted Model) gives the same rows on a streaming DataFrame."""
    transformer = stage_or_model
    if isinstance(stage_or_model, Estimator):
        transformer = stage_or_model.fit(df)
    assert isinstance(transformer, Transformer)
    src = tmp_path / f"stream-src-{uuid.uuid4().hex[:8]}"
    df.write.json(str(src))
    stream = spark.readStream.schema(df.schema).json(str(src))
    out = transformer.transform(stream)
    name = f"contract_{uuid.uuid4().hex[:8]}"
    query = out.writeStream.format("memory").queryName(name).outputMode("append").start()
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    expected = transformer.transform(spark.read.schema(df.schema).json(str(src)))
    got = spark.table(name)
    assert got.count() == df.count()
    assert_df_equality(_sorted(expected, key), _sorted(got.select(*expected.columns), key), ignore_nullable=True, allow_nan_equality=True)

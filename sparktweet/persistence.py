"""Explicit persistence for stages that carry artifacts (Keras models, vocabularies, LDA, spaCy rules).

Layout of a saved stage folder (local path or any Hadoop filesystem URI)::

    <stage>/metadata/part-00000   params, uid, class, formatVersion (pyspark's DefaultParamsWriter)
    <stage>/artifacts/...         the stage's files, copied byte for byte

A stage keeps its artifacts in a local directory (``_artifact_dir``). ``save`` copies that
directory to the target through Hadoop's FileSystem API, ``load`` copies it back into a fresh
local directory, and ``transform`` ships it to executors once with ``SparkContext.addFile`` (a zip
through ``addArchive`` on a cluster, where Spark ships no local directories) so
Python workers read it from local disk. Nothing is pickled.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from pyspark import SparkContext
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from sparktweet.errors import ModelError

FORMAT_VERSION = 1
ARTIFACTS = "artifacts"

T = TypeVar("T", bound="HasArtifacts")


@dataclass(frozen=True)
class ArtifactRef:
    """What a UDF closure captures: a SparkFiles name and the driver's local path, never a live object."""

    name: str
    local_path: str


def _hadoop_path(sc: SparkContext, path: str) -> Any:
    return sc._jvm.org.apache.hadoop.fs.Path(path)  # type: ignore[union-attr]


def _filesystem(sc: SparkContext, path: str) -> Any:
    return _hadoop_path(sc, path).getFileSystem(sc._jsc.hadoopConfiguration())  # type: ignore[union-attr]


def copy_to_hadoop(sc: SparkContext, local_dir: str, target: str) -> None:
    """Copy a local directory to ``target`` (local path or Hadoop URI), replacing it."""
    fs = _filesystem(sc, target)
    dst = _hadoop_path(sc, target)
    if fs.exists(dst):
        fs.delete(dst, True)
    fs.copyFromLocalFile(False, True, _hadoop_path(sc, os.path.abspath(local_dir)), dst)


def copy_from_hadoop(sc: SparkContext, source: str, local_dir: str) -> None:
    """Copy ``source`` (local path or Hadoop URI) into the new local directory ``local_dir``."""
    fs = _filesystem(sc, source)
    src = _hadoop_path(sc, source)
    if not fs.exists(src):
        raise ModelError(f"Artifact folder {source} does not exist; the saved stage is incomplete or was saved by another tool.")
    fs.copyToLocalFile(False, src, _hadoop_path(sc, os.path.abspath(local_dir)), True)


def process_temp_dir(prefix: str) -> str:
    """A fresh local directory that lives as long as this process: removed when it exits normally.

    Loaded and fitted stages keep their artifacts in such a directory (a loaded model's copy is
    several MB), so a job, a test run or a CLI command leaves nothing behind in the temp folder.
    """
    path = tempfile.mkdtemp(prefix=f"sparktweet-{prefix}-")
    atexit.register(shutil.rmtree, path, True)
    return path


def new_artifact_dir(prefix: str) -> str:
    """A fresh local directory for a stage's artifacts (kept for the life of the process)."""
    return process_temp_dir(prefix)


class HasArtifacts(MLReadable, MLWritable):
    """Mixin for stages whose state lives in files.

    Subclasses set ``self._artifact_dir`` when fitted or loaded and call :meth:`_artifact_ref`
    inside ``_transform`` to get what a UDF closure may capture.
    """

    _artifact_dir: str | None = None
    _registered: ArtifactRef | None = None

    def _set_artifact_dir(self, path: str) -> None:
        self._artifact_dir = path
        self._registered = None

    def _require_artifacts(self) -> str:
        if not self._artifact_dir or not os.path.isdir(self._artifact_dir):
            raise ModelError(
                f"{type(self).__name__} ({self.uid}) has no artifacts: fit the estimator or load a saved model first."
            )
        return self._artifact_dir

    def _artifact_ref(self) -> ArtifactRef:
        """Ship the artifact folder to executors once per instance and return its reference."""
        local = self._require_artifacts()
        if self._registered is None or self._registered.local_path != local:
            sc = SparkContext.getOrCreate()
            # A unique copy name: SparkFiles are keyed by file name, and two stages (or two
            # loads of one stage) must never collide.
            name = f"{type(self).__name__.lower()}-{uuid.uuid4().hex[:12]}"
            staged = os.path.join(process_temp_dir("ship"), name)
            if sc._jsc.sc().isLocal():  # type: ignore[union-attr]
                shutil.copytree(local, staged)
                sc.addFile(staged, recursive=True)
            else:
                # Spark ships local directories only to local masters; cluster executors get a
                # zip that they unpack under the same SparkFiles name.
                archive = shutil.make_archive(staged, "zip", root_dir=local)
                sc.addArchive(f"{archive}#{name}")
            self._registered = ArtifactRef(name=name, local_path=local)
        return self._registered

    def write(self) -> MLWriter:
        return ArtifactWriter(self)

    @classmethod
    def read(cls) -> ArtifactReader[Self]:
        return ArtifactReader(cls)


class ArtifactWriter(MLWriter):
    """Writes metadata first (with a format version), then the artifact folder beside it."""

    def __init__(self, instance: HasArtifacts) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        local = self.instance._require_artifacts()
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, extraMetadata={"formatVersion": FORMAT_VERSION})
        copy_to_hadoop(self.sc, local, f"{path.rstrip('/')}/{ARTIFACTS}")


class ArtifactReader(MLReader, Generic[T]):
    """Reads what :class:`ArtifactWriter` wrote, from a local path or any Hadoop filesystem."""

    def __init__(self, cls: type[T]) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> T:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        version = metadata.get("formatVersion")
        if version != FORMAT_VERSION:
            raise ModelError(
                f"{path}: {self.cls.__name__} format version {version!r} is not supported (expected {FORMAT_VERSION}); "
                "retrain or load it with the sparktweet release that saved it."
            )
        instance = self.cls()
        DefaultParamsReader.getAndSetParams(instance, metadata)  # type: ignore[arg-type]
        instance._resetUid(metadata["uid"])  # type: ignore[attr-defined]
        local = os.path.join(new_artifact_dir(self.cls.__name__.lower()), ARTIFACTS)
        copy_from_hadoop(self.sc, f"{path.rstrip('/')}/{ARTIFACTS}", local)
        instance._set_artifact_dir(local)
        return instance

"""Deploy the stream job to Amazon EMR with boto3.

:func:`deploy_stream` uploads three things under one S3 base URI, then adds one EMR step:

``<base>/models/<version>/``
    the saved model (``VERSION`` and ``pipeline/``), read by the job through S3A.
``<base>/env/<archive>``
    the Python environment archive built by ``./spark-submit.sh pack-env`` (venv-pack), shipped
    to every YARN container with ``--archives``. Skipped when ``env_uri`` names one already there.
``<base>/code/sparktweet-<hash>.tar.gz``
    the code bundle: ``spark-submit.sh``, ``jobs/``, ``sparktweet/``, ``conf/`` and the project's
    Java UDF jar, content-addressed so a step always runs the code it was deployed with.

The step (``command-runner.jar``) copies the bundle to the primary node, unpacks it and runs
``./spark-submit.sh stream --master yarn --deploy-mode cluster`` with the model, output and
checkpoint on S3 (``s3a://``; EMR 7.10 and later, including the Spark 4 runtime, serve every S3
scheme with S3A). The step stays RUNNING while the stream runs (``spark-submit`` waits for the
YARN application) and the query restarts from its checkpoint when the step is added again.

EMR release: :data:`RELEASE_LABEL` is ``emr-spark-8.0.0``, the "AWS runtime for Apache Spark" 8.0.0
(Spark 4.0.2-amzn-0, Scala 2.13, Python 3.11 to 3.13, Amazon Linux 2023). No EMR 7.x release carries
Spark 4: emr-7.13.0 ships Spark 3.5.6.

Every AWS call goes through clients passed in, so tests point them at a local moto server
(``endpoint_url``) and the IAM policy in ``deploy/iam-policy.json`` lists exactly these calls.

Examples
--------
>>> step = stream_step(S3Uri.parse("s3://b/sparktweet/code/sparktweet-0123.tar.gz"), S3Uri.parse("s3://b/sparktweet/env/env.tar.gz"),
...                    S3Uri.parse("s3://b/sparktweet/models/v1"), S3Uri.parse("s3://b/sparktweet/stream/tweets"),
...                    S3Uri.parse("s3://b/sparktweet/stream/checkpoint"))
>>> step["HadoopJarStep"]["Jar"], step["HadoopJarStep"]["Args"][5:9]
('command-runner.jar', ['stream', '--master', 'yarn', '--deploy-mode'])
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparktweet.errors import ConfigError

log = logging.getLogger(__name__)

#: AWS runtime for Apache Spark 8.0.0: Spark 4.0.2-amzn-0, Scala 2.13.16, Python 3.11/3.12/3.13.
RELEASE_LABEL = "emr-spark-8.0.0"
#: Cluster states in which a step can still be added.
LIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
STEP_DONE_STATES = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")

# Runs on the primary node as `bash -c SCRIPT sparktweet-step BUNDLE ARGS...`: positional
# parameters instead of string interpolation, so no argument needs shell quoting.
STEP_SCRIPT = (
    'set -euo pipefail; d="$(mktemp -d)"; aws s3 cp --only-show-errors "$1" "$d/bundle.tar.gz"; '
    'tar -xzf "$d/bundle.tar.gz" -C "$d"; cd "$d"; shift; '
    'export SPARK_SUBMIT="${SPARK_SUBMIT:-spark-submit}"; exec ./spark-submit.sh "$@"'
)
# The cluster nodes need the interpreter the environment archive was packed against.
BOOTSTRAP_SCRIPT = """#!/bin/bash
# sparktweet: the Python the environment archive links to (spark-submit.sh pack-env).
set -euo pipefail
command -v python3.11 >/dev/null || sudo dnf install -y -q python3.11
"""


@dataclass(frozen=True)
class S3Uri:
    """An S3 location, written ``s3://bucket/key`` for the AWS CLI or ``s3a://`` for Spark."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        for scheme in ("s3://", "s3a://"):
            if uri.startswith(scheme):
                bucket, _, key = uri[len(scheme):].partition("/")
                if bucket:
                    return cls(bucket, key.strip("/"))
        raise ConfigError(f"Expected an S3 URI like s3://bucket/prefix, found {uri!r}.")

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p and p.strip("/"))
        return S3Uri(self.bucket, key)

    @property
    def s3(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def s3a(self) -> str:
        return f"s3a://{self.bucket}/{self.key}"


@dataclass
class ClusterSpec:
    """What :func:`run_job_flow_request` asks EMR for when no cluster is given.

    The defaults follow ``docs/scaling.md``: general-purpose core nodes (4 GB per vCPU), since a
    running task holds about 1.7 GB of Python workers (six model stages, two with TensorFlow).
    """

    name: str = "sparktweet"
    release_label: str = RELEASE_LABEL
    primary_instance_type: str = "m7i.xlarge"
    core_instance_type: str = "m7i.2xlarge"
    core_instance_count: int = 2
    subnet_id: str | None = None
    key_name: str | None = None
    service_role: str = "EMR_DefaultRole"
    job_flow_role: str = "EMR_EC2_DefaultRole"
    idle_timeout_s: int = 3600


@dataclass
class Deployment:
    """Where everything went, and the step that runs the stream."""

    cluster_id: str
    step_id: str
    model_uri: str
    env_uri: str
    bundle_uri: str
    output_uri: str
    checkpoint_uri: str
    created_cluster: bool = False


def aws_clients(region: str | None = None, endpoint_url: str | None = None) -> tuple[Any, Any]:
    """boto3 S3 and EMR clients (``endpoint_url`` points both at a local stand-in such as moto)."""
    import boto3

    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint_url), session.client("emr", endpoint_url=endpoint_url)


def upload_file(s3: Any, path: str | os.PathLike[str], dest: S3Uri) -> S3Uri:
    """Upload one file (multipart above 8 MB, which the environment archive is)."""
    s3.upload_file(os.fspath(path), dest.bucket, dest.key)
    log.info("uploaded %s -> %s", path, dest.s3)
    return dest


def upload_tree(s3: Any, local_dir: str | os.PathLike[str], dest: S3Uri, skip: Iterable[str] = ("__pycache__",)) -> list[S3Uri]:
    """Upload every file under ``local_dir`` to ``dest``, keeping relative paths."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ConfigError(f"No folder at {root} to upload.")
    skipped = set(skip)
    uploaded = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not skipped.intersection(rel.parts):
            target = dest.join(*rel.parts)
            s3.upload_file(str(path), target.bucket, target.key)
            uploaded.append(target)
    log.info("uploaded %d files from %s -> %s", len(uploaded), root, dest.s3)
    return uploaded


def bundle_members(root: Path) -> list[Path]:
    """The files a cluster needs to run ``spark-submit.sh``, relative to ``root``."""
    members = [Path("spark-submit.sh")]
    members += sorted(p.relative_to(root) for p in (root / "jobs").glob("*.py"))
    members += sorted(p.relative_to(root) for p in (root / "conf").glob("*.yaml"))
    members += sorted(
        p.relative_to(root) for p in (root / "sparktweet").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )
    # Only the project's own UDF jar: on YARN the Kafka connector comes at the cluster's version.
    if (root / "jars" / "sparktweet-jvm.jar").exists():
        members.append(Path("jars/sparktweet-jvm.jar"))
    return members


def build_bundle(root: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write the code bundle as ``sparktweet-<sha>.tar.gz``; the same sources give the same name."""
    root = Path(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in bundle_members(root):
            info = tar.gettarinfo(str(root / rel), arcname=str(rel))
            # Fixed owner and time: the archive's hash depends on content and modes only.
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)
    raw = buf.getvalue()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    out = Path(out_dir) / f"sparktweet-{digest}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return out


def stream_step(bundle: S3Uri, env: S3Uri, model: S3Uri, output: S3Uri, checkpoint: S3Uri,
                conf_files: Sequence[str] = ("conf/emr.yaml",), overrides: Sequence[str] = (),
                name: str = "sparktweet-stream", action_on_failure: str = "CONTINUE") -> dict[str, Any]:
    """The EMR step running ``spark-submit.sh stream`` on YARN in cluster deploy mode."""
    args = ["bash", "-c", STEP_SCRIPT, "sparktweet-step", bundle.s3,
            "stream", "--master", "yarn", "--deploy-mode", "cluster", "--env-archive", env.s3a,
            "--model", model.s3a, "--output", output.s3a, "--checkpoint", checkpoint.s3a]
    for conf in conf_files:
        args += ["--conf", conf]
    for item in overrides:
        args += ["--set", item]
    return {"Name": name, "ActionOnFailure": action_on_failure, "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def run_job_flow_request(spec: ClusterSpec, log_uri: S3Uri, bootstrap: S3Uri, steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``RunJobFlow`` request for a Spark cluster that runs ``steps`` and stays up."""
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": spec.primary_instance_type, "InstanceCount": 1},
            {"Name": "core", "InstanceRole": "CORE", "InstanceType": spec.core_instance_type, "InstanceCount": spec.core_instance_count},
        ],
        # A stream runs until stopped: the cluster must outlive the step's submission.
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if spec.subnet_id:
        instances["Ec2SubnetId"] = spec.subnet_id
    if spec.key_name:
        instances["Ec2KeyName"] = spec.key_name
    return {
        "Name": spec.name,
        "ReleaseLabel": spec.release_label,
        "LogUri": log_uri.s3,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [{"Name": "python3.11", "ScriptBootstrapAction": {"Path": bootstrap.s3, "Args": []}}],
        "Steps": list(steps),
        "JobFlowRole": spec.job_flow_role,
        "ServiceRole": spec.service_role,
        "AutoTerminationPolicy": {"IdleTimeout": spec.idle_timeout_s},
        "VisibleToAllUsers": True,
    }


def model_version(model_dir: str | os.PathLike[str]) -> str:
    """The model's version (its ``VERSION`` file), used as its S3 folder name."""
    path = Path(model_dir) / "VERSION"
    if not path.exists():
        raise ConfigError(f"No VERSION file in {model_dir}; pass a model folder saved by `sparktweet train`.")
    return path.read_text(encoding="utf-8").strip()


def check_cluster(emr: Any, cluster_id: str) -> dict[str, Any]:
    """Describe the cluster; fail clearly when it is gone or runs no Spark 4."""
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    state = cluster["Status"]["State"]
    if state not in LIVE_STATES:
        raise ConfigError(f"EMR cluster {cluster_id} is {state}; steps can only be added to a cluster in {', '.join(LIVE_STATES)}.")
    label = cluster.get("ReleaseLabel", "")
    if label and not label.startswith("emr-spark-"):
        log.warning("cluster %s runs %s; sparktweet needs Spark 4.0.x (%s)", cluster_id, label, RELEASE_LABEL)
    return cluster


def deploy_stream(s3: Any, emr: Any, base: S3Uri, *, root: str | os.PathLike[str], model_dir: str | os.PathLike[str],
                  env_archive: str | os.PathLike[str] | None = None, env_uri: str | None = None,
                  cluster_id: str | None = None, cluster: ClusterSpec | None = None,
                  conf_files: Sequence[str] = ("conf/emr.yaml",), overrides: Sequence[str] = ()) -> Deployment:
    """Upload the model, environment and code under ``base``; run the stream job as an EMR step.

    Exactly one of ``cluster_id`` (add the step to a running cluster) and ``cluster`` (create one
    with the step) is given; likewise one of ``env_archive`` (upload it) and ``env_uri`` (reuse).
    """
    if (cluster_id is None) == (cluster is None):
        raise ConfigError("Give either a cluster id (--cluster-id) or a cluster to create (--create-cluster), not both or neither.")
    if (env_archive is None) == (env_uri is None):
        raise ConfigError("Give either an environment archive to upload (--env-archive) or the S3 URI of one (--env-uri).")
    if cluster_id:
        check_cluster(emr, cluster_id)
    root = Path(root)

    model = base.join("models", model_version(model_dir))
    upload_tree(s3, Path(model_dir) / "pipeline", model.join("pipeline"))
    upload_file(s3, Path(model_dir) / "VERSION", model.join("VERSION"))
    if env_archive is not None:
        if not Path(env_archive).exists():
            raise ConfigError(f"No environment archive at {env_archive}; build it with `./spark-submit.sh pack-env`.")
        env = upload_file(s3, env_archive, base.join("env", Path(env_archive).name))
    else:
        env = S3Uri.parse(str(env_uri))
    bundle_path = build_bundle(root, root / "var" / "deploy")
    bundle = upload_file(s3, bundle_path, base.join("code", bundle_path.name))
    output, checkpoint = base.join("stream", "tweets"), base.join("stream", "checkpoint")
    step = stream_step(bundle, env, model, output, checkpoint, conf_files=conf_files, overrides=overrides)

    if cluster is not None:
        bootstrap = base.join("bootstrap", "python311.sh")
        s3.put_object(Bucket=bootstrap.bucket, Key=bootstrap.key, Body=BOOTSTRAP_SCRIPT.encode())
        request = run_job_flow_request(cluster, base.join("logs"), bootstrap, [step])
        cluster_id = emr.run_job_flow(**request)["JobFlowId"]
        step_id = emr.list_steps(ClusterId=cluster_id)["Steps"][0]["Id"]
        log.info("created EMR cluster %s (%s) with step %s", cluster_id, cluster.release_label, step_id)
    else:
        step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
        log.info("added step %s to EMR cluster %s", step_id, cluster_id)
    return Deployment(cluster_id=cluster_id, step_id=step_id, model_uri=model.s3a, env_uri=env.s3a, bundle_uri=bundle.s3,
                      output_uri=output.s3a, checkpoint_uri=checkpoint.s3a, created_cluster=cluster is not None)


def wait_for_step(emr: Any, cluster_id: str, step_id: str, until: Sequence[str] = ("RUNNING", *STEP_DONE_STATES),
                  timeout_s: float = 1800, poll_s: float = 15) -> str:
    """Poll the step until it reaches a state in ``until`` (default: running or done); return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]
        if state in until or time.monotonic() >= deadline:
            return state
        time.sleep(poll_s)

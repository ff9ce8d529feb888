"""spark-submit.sh on a real multi-process Spark standalone cluster, and the commands it builds.

The cluster test starts a standalone master and two one-core workers on 127.0.0.1 from pyspark's
own launcher (``bin/spark-class``), submits the score job with ``./spark-submit.sh`` against
``spark://...`` with the model read through a Hadoop filesystem URI (``file://``), and checks that
the Parquet it writes equals, row for row and column for column, what the same job writes on
``local[*]``. Every process the fixture starts runs in its own process group and is stopped at
the end (executors and Python workers are children of the workers, so they go with them).

The ``--dry-run`` tests check the YARN/EMR command line (environment archive, conf archive,
Kafka package at the cluster's Spark version), which cannot run here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = ROOT / "spark-submit.sh"
SAMPLE = ROOT / "sparktweet" / "data" / "sample_tweets.jsonl"
MODEL = ROOT / "models" / "default"
SPARK_HOME = Path(pyspark.__file__).resolve().parent
FLOAT_TOLERANCE = 1e-6
JOB_TIMEOUT_S = 1200

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    # One address for everything: the machine's other interfaces may not route to each other.
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env.update(extra)
    return env


def _master_state(webui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=5) as resp:
        return json.load(resp)


class StandaloneCluster:
    """A Spark standalone master and workers, each a ``spark-class`` JVM in its own process group."""

    def __init__(self, base: Path, workers: int = 2) -> None:
        self.base = base
        self.port = _free_port()
        self.webui_port = _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.n_workers = workers
        self.work_dirs = [base / f"worker{i}" for i in range(workers)]
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.env = _env(
            SPARK_HOME=str(SPARK_HOME),
            SPARK_LOG_DIR=str(base / "logs"),
            SPARK_LOCAL_DIRS=str(base / "local"),
            # Master and workers only schedule: small heaps, quick-starting JIT.
            SPARK_DAEMON_MEMORY="256m",
            SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        )

    def _spawn(self, name: str, *args: str) -> None:
        logfile = self.base / f"{name}.log"
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), *args],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.base, start_new_session=True,
            )
        self.procs.append((proc, logfile))

    def _wait(self, what: str, ready, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc, logfile in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{logfile.stem} exited with {proc.returncode} while waiting for {what}:\n{_tail(logfile)}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(1)
        logs = "\n".join(f"--- {logfile.stem}\n{_tail(logfile, 15)}" for _, logfile in self.procs)
        raise RuntimeError(f"timed out after {timeout_s}s waiting for {what}\n{logs}")

    def start(self) -> None:
        for d in ("logs", "local"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        self._spawn("master", "org.apache.spark.deploy.master.Master",
                    "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.webui_port))
        self._wait("the master", lambda: _master_state(self.webui_port)["status"] == "ALIVE")
        for i, work_dir in enumerate(self.work_dirs):
            work_dir.mkdir(parents=True, exist_ok=True)
            self._spawn(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.url,
                        "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                        "--webui-port", str(_free_port()), "--work-dir", str(work_dir))
        self._wait(f"{self.n_workers} workers", lambda: _master_state(self.webui_port)["aliveworkers"] == self.n_workers)

    def state(self) -> dict:
        return _master_state(self.webui_port)

    def stop(self) -> None:
        # Workers first (they stop their executors), then the master; whole process groups, so
        # an executor or Python worker left behind by a crash goes too.
        for proc, _ in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    cluster = StandaloneCluster(tmp_path_factory.mktemp("standalone"))
    try:
        cluster.start()
    except Exception as exc:  # noqa: BLE001 - a cluster that cannot start fails the test, with logs
        cluster.stop()
        pytest.fail(f"Spark standalone cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def submit(job: str, *args: str, logfile: Path, env: dict[str, str] | None = None) -> float:
    """Run ``./spark-submit.sh job args...``; return its wall time, fail with the log tail."""
    start = time.monotonic()
    with open(logfile, "wb") as out:
        proc = subprocess.run([str(SUBMIT), job, *args], check=False, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=env or _env(), timeout=JOB_TIMEOUT_S)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"spark-submit.sh {job} exited with {proc.returncode}:\n{_tail(logfile)}"
    return elapsed


def read_rows(output: Path) -> list[dict]:
    """Every row of a date-partitioned Parquet output, as plain Python values, in a stable order."""
    import pyarrow.dataset as ds

    rows = ds.dataset(str(output), format="parquet", partitioning="hive").to_table().to_pylist()
    assert rows, f"no rows under {output}"
    return sorted(rows, key=lambda r: (r["tweet_id"] or "", r["text"] or "", json.dumps(r, sort_keys=True, default=str)))


def assert_same(a, b, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=FLOAT_TOLERANCE), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_score_on_standalone_cluster_equals_local(standalone_cluster, tmp_path):
    local_out, cluster_out = tmp_path / "local", tmp_path / "cluster"
    local_s = submit("score", str(SAMPLE), "--output", str(local_out), "--master", "local[*]",
                     logfile=tmp_path / "local.log",
                     env=_env(SPARK_SUBMIT_OPTS_EXTRA="--conf spark.ui.enabled=false"))
    cluster_s = submit(
        "score", str(SAMPLE), "--output", str(cluster_out), "--master", standalone_cluster.url,
        "--model", MODEL.resolve().as_uri(),
        logfile=tmp_path / "cluster.log",
        env=_env(SPARK_SUBMIT_OPTS_EXTRA=(
            "--conf spark.ui.enabled=false --conf spark.executor.memory=768m --conf spark.cores.max=2"
            # Schedule only once both executors are up, so the work really is spread.
            " --conf spark.scheduler.minRegisteredResourcesRatio=1.0"
            " --conf spark.scheduler.maxRegisteredResourcesWaitingTime=300s"
        )),
    )
    log.info("score on local[*]: %.0fs; on the 2-worker standalone cluster: %.0fs", local_s, cluster_s)

    local_rows, cluster_rows = read_rows(local_out), read_rows(cluster_out)
    assert len(local_rows) == len(SAMPLE.read_text().splitlines())
    assert len(cluster_rows) == len(local_rows)
    assert list(cluster_rows[0]) and set(cluster_rows[0]) == set(local_rows[0])
    for i, (c, l) in enumerate(zip(cluster_rows, local_rows)):
        assert_same(c, l, f"row {i} (tweet_id {l['tweet_id']})")
    assert any(r["ticket_id"] for r in cluster_rows), "the model gave no tickets: the comparison would be trivial"

    # It really ran on the cluster: one finished application with both cores, and executor
    # processes under both workers that each ran tasks.
    apps = [a for a in standalone_cluster.state()["completedapps"] if a["name"] == "sparktweet-score"]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED" and apps[0]["cores"] == 2, apps
    for work_dir in standalone_cluster.work_dirs:
        stderr = list(work_dir.glob(f"{apps[0]['id']}/*/stderr"))
        assert stderr, f"no executor ran under {work_dir}"
        assert any("Finished task" in p.read_text(errors="replace") for p in stderr), f"the executor under {work_dir} ran no task"


def dry_run(*args: str, **env: str) -> tuple[dict[str, str], list[str]]:
    """The environment and spark-submit command ``./spark-submit.sh ... --dry-run`` would use."""
    proc = subprocess.run([str(SUBMIT), *args, "--dry-run"], check=False, capture_output=True, text=True, cwd=ROOT,
                          env=_env(**env), timeout=120)
    assert proc.returncode == 0, proc.stderr
    exports, cmd = {}, []
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            key, value = line[len("export "):].split("=", 1)
            exports[key] = shlex.split(value)[0]
        elif line.strip():
            cmd = shlex.split(line)
    return exports, cmd


def options(cmd: list[str]) -> dict[str, list[str]]:
    """spark-submit options before the application file, e.g. {'--conf': ['k=v', ...]}."""
    opts: dict[str, list[str]] = {}
    i = 1
    while i < len(cmd) and cmd[i].startswith("--"):
        opts.setdefault(cmd[i], []).append(cmd[i + 1])
        i += 2
    return opts


def confs(cmd: list[str]) -> dict[str, str]:
    return dict(c.split("=", 1) for c in options(cmd).get("--conf", []))


def test_yarn_cluster_mode_ships_environment_conf_and_kafka_package():
    exports, cmd = dry_run("score", "--master", "yarn", "--deploy-mode", "cluster",
                           "--env-archive", "s3a://bucket/sparktweet/env.tar.gz",
                           "--model", "s3a://bucket/sparktweet/model", "--conf", "conf/emr.yaml", SPARK_VERSION="4.0.2")
    opts, conf = options(cmd), confs(cmd)
    assert opts["--master"] == ["yarn"] and opts["--deploy-mode"] == ["cluster"]
    archives = opts["--archives"][0].split(",")
    assert archives[0] == "s3a://bucket/sparktweet/env.tar.gz#env"
    conf_zip = Path(archives[1].split("#")[0])
    assert archives[1].endswith("#conf") and conf_zip.exists()
    import zipfile

    assert {"default.yaml", "categories.yaml", "emr.yaml"} <= set(zipfile.ZipFile(conf_zip).namelist())
    assert exports["PYSPARK_PYTHON"] == "./env/bin/python" and "PYSPARK_DRIVER_PYTHON" not in exports
    assert conf["spark.pyspark.python"] == "./env/bin/python"
    assert "spark.pyspark.driver.python" not in conf
    assert conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./env/bin/python"
    assert conf["spark.yarn.appMasterEnv.SPARKTWEET_HOME"] == "."
    # The cluster's Kafka connector version, not the jars built for this machine's pyspark.
    assert opts["--packages"] == ["org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.2"]
    assert all("spark-sql-kafka" not in j for j in opts.get("--jars", []))
    assert conf["spark.serializer"] == "org.apache.spark.serializer.KryoSerializer"
    assert conf["spark.python.worker.reuse"] == "true"
    assert conf["spark.executorEnv.TF_NUM_INTRAOP_THREADS"] == "1"
    assert cmd[-4:] == ["--model", "s3a://bucket/sparktweet/model", "--conf", "conf/emr.yaml"]
    assert cmd[-5] == str(ROOT / "jobs" / "score.py")
    code_zip = opts["--py-files"][0]
    assert "sparktweet/config.py" in zipfile.ZipFile(code_zip).namelist()


def test_yarn_client_mode_keeps_local_driver_python_and_checkout():
    exports, cmd = dry_run("score", "--master", "yarn", "--env-archive", "/tmp/env.tar.gz", "--output", "s3a://b/out",
                           SPARK_VERSION="4.0.2")
    conf = confs(cmd)
    assert conf["spark.pyspark.python"] == "./env/bin/python"
    assert conf["spark.pyspark.driver.python"] == exports["PYSPARK_DRIVER_PYTHON"]
    assert Path(exports["PYSPARK_DRIVER_PYTHON"]).exists()
    assert exports["SPARKTWEET_HOME"] == str(ROOT)
    assert options(cmd)["--archives"] == ["/tmp/env.tar.gz#env"]


def test_spark_url_master_uses_local_python_and_adds_s3a_support_and_arrow_batch():
    exports, cmd = dry_run("score", "s3a://bucket/in.jsonl", "--output", "s3a://bucket/out",
                           "--master", "spark://10.0.0.5:7077", ARROW_BATCH="512", TF_THREADS="2")
    opts, conf = options(cmd), confs(cmd)
    assert "--archives" not in opts and "spark.pyspark.python" not in conf
    assert Path(exports["PYSPARK_PYTHON"]).exists()
    hadoop = next(p.name for p in (SPARK_HOME / "jars").glob("hadoop-client-api-*.jar"))[len("hadoop-client-api-"):-len(".jar")]
    assert opts["--packages"] == [f"org.apache.hadoop:hadoop-aws:{hadoop}"]
    assert any("spark-sql-kafka" in j for j in opts["--jars"][0].split(","))
    assert conf["spark.sql.execution.arrow.maxRecordsPerBatch"] == "512"
    assert conf["spark.executorEnv.TF_NUM_INTRAOP_THREADS"] == "2"
    # The job's own session settings win over spark-submit's, so the batch size reaches it as --set too.
    assert cmd[-2:] == ["--set", "spark.arrow_batch_size=512"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "--master", "spark://h:7077", "--deploy-mode", "cluster"], "cluster deploy mode needs --master yarn"),
        (["score", "--master", "yarn", "--env-archive", "/nonexistent/env.tar.gz"], "no environment archive"),
        (["nosuchjob"], "unknown job"),
    ],
)
def test_refuses_what_cannot_work(args, message):
    proc = subprocess.run([str(SUBMIT), *args], check=False, capture_output=True, text=True, cwd=ROOT, env=_env(SPARK_VERSION="4.0.2"), timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def _read_topic(config: dict, topic: str, expected: int, timeout_s: float = 60) -> list[tuple[str, dict]]:
    """(key, value) of every record of ``topic``, from the start, once ``expected`` arrived."""
    import uuid

    from sparktweet.kafka_io import consumer

    c = consumer(config, group_id=f"test-submit-{uuid.uuid4().hex[:8]}")
    out: list[tuple[str, dict]] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                out.append((msg.key().decode(), json.loads(msg.value())))
    finally:
        c.close()
    return sorted(out, key=lambda kv: (kv[0], json.dumps(kv[1], sort_keys=True)))


@pytest.mark.slow
@pytest.mark.kafka
def test_stream_on_standalone_cluster_equals_local(standalone_cluster, kafka_broker, tmp_path):
    """The stream job, submitted to the cluster, reads the same Kafka records as on local[*] and
    writes the same Parquet rows and the same outbox records (keys, ticket IDs, reply texts)."""
    import uuid

    from sparktweet.cli import main as cli_main
    from sparktweet.kafka_io import ensure_topics
    from sparktweet.replay import replay

    suffix = uuid.uuid4().hex[:8]
    raw = f"test.submit.raw.{suffix}"
    config = {**kafka_broker, "kafka": {**kafka_broker["kafka"], "topics": {**kafka_broker["kafka"]["topics"], "raw": raw}}}
    ensure_topics(config)
    summary = replay(config, str(SAMPLE), progress=False)
    assert summary.sent == len(SAMPLE.read_text().splitlines())

    def run(where: str, master: str, extra_conf: str, model: str) -> tuple[Path, str]:
        outbox, dead = f"test.submit.outbox.{where}.{suffix}", f"test.submit.dead.{where}.{suffix}"
        output = tmp_path / where / "tweets"
        overrides = [f"kafka.bootstrap_servers={kafka_broker['kafka']['bootstrap_servers']}", f"kafka.topics.raw={raw}",
                     f"kafka.topics.outbox={outbox}", f"kafka.topics.deadletter={dead}"]
        assert cli_main(["kafka", "topics", *[a for o in overrides for a in ("--set", o)]]) == 0
        submit(
            "stream", "--master", master, "--model", model, "--output", str(output),
            "--checkpoint", str(tmp_path / where / "checkpoint"), "--trigger", "available-now",
            *[a for o in overrides for a in ("--set", o)],
            logfile=tmp_path / f"stream-{where}.log",
            env=_env(SPARK_SUBMIT_OPTS_EXTRA="--conf spark.ui.enabled=false" + extra_conf),
        )
        return output, outbox

    local_out, local_outbox = run("local", "local[*]", "", str(MODEL))
    cluster_out, cluster_outbox = run(
        "cluster", standalone_cluster.url,
        " --conf spark.executor.memory=768m --conf spark.cores.max=2"
        " --conf spark.scheduler.minRegisteredResourcesRatio=1.0 --conf spark.scheduler.maxRegisteredResourcesWaitingTime=300s",
        MODEL.resolve().as_uri(),
    )

    local_rows, cluster_rows = read_rows(local_out), read_rows(cluster_out)
    assert 0 < len(local_rows) <= summary.sent  # the broken sample records are dead letters, not rows
    assert len(cluster_rows) == len(local_rows)
    for i, (c, l) in enumerate(zip(cluster_rows, local_rows)):
        assert_same(c, l, f"row {i} (tweet_id {l['tweet_id']})")

    tickets = sum(1 for r in local_rows if r["ticket_id"])
    assert tickets > 0, "the model gave no tickets: the comparison would be trivial"
    local_records = _read_topic(kafka_broker, local_outbox, tickets)
    cluster_records = _read_topic(kafka_broker, cluster_outbox, tickets)
    assert len(local_records) == tickets
    # Lists, so assert_same compares the float scores with its tolerance (batches differ by cluster).
    assert_same([list(kv) for kv in cluster_records], [list(kv) for kv in local_records], "outbox")

    apps = [a for a in standalone_cluster.state()["completedapps"] if a["name"].startswith("sparktweet-stream")]
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED" and apps[0]["cores"] == 2, apps

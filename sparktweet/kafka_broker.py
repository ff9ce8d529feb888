"""Run the project's local single-node Kafka 4.x broker (KRaft; broker and controller in one JVM).

The broker's jars come from Maven Central through ``scripts/fetch_jars.sh`` into
``var/kafka/libs`` (kept off Spark's classpath) and run with the JVM directly::

    java -cp 'var/kafka/libs/*' kafka.tools.StorageTool format -t <cluster id> -c server.properties
    java -cp 'var/kafka/libs/*' kafka.Kafka server.properties

Everything the broker writes stays under ``kafka.data_dir`` (default ``var/kafka``):
``server.properties`` and ``log4j2.properties`` (rewritten at each start from the config),
``data/`` (the log dirs, kept across restarts), ``logs/server.log`` (Kafka's log4j output),
``logs/kafka.out`` (the JVM's stdout/stderr) and ``kafka.pid``.

Settings (``kafka:`` section of the config): ``bootstrap_servers`` (listener, default
``127.0.0.1:9092``), ``controller_port`` (default: listener port + 1), ``data_dir``,
``libs_dir``, ``java``, ``heap``, ``jvm_opts``, ``start_timeout_s``, ``stop_timeout_s``,
``auto_create_topics``, ``server_properties`` (extra ``server.properties`` entries) and
``topic_settings`` (partitions and retention of the topics created at start).

No pyspark here: the CLI and the dispatcher container use this module.

Examples
--------
>>> from sparktweet.config import load_config
>>> from sparktweet import kafka_broker
>>> cfg = load_config()
>>> kafka_broker.start(cfg)  # doctest: +SKIP
BrokerStatus(running=True, pid=4242, bootstrap_servers='127.0.0.1:9092', ...)
>>> kafka_broker.stop(cfg)  # doctest: +SKIP
True

From a shell: ``python -m sparktweet.kafka_broker start|stop|status|restart|logs``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparktweet.config import PROJECT_ROOT, get, load_config
from sparktweet.errors import ConfigError, SparkTweetError

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1

# Popen handles of brokers started by this process: polling them reaps the child, where a bare
# os.kill(pid, 0) would keep seeing a zombie as alive.
_CHILDREN: dict[int, subprocess.Popen] = {}


class KafkaBrokerError(SparkTweetError):
    """The local Kafka broker could not be started, reached or stopped."""


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how the local broker runs, resolved from the ``kafka:`` config section."""

    host: str
    port: int
    controller_port: int
    data_dir: Path
    libs_dir: Path
    java: str | None
    heap: str
    jvm_opts: tuple[str, ...]
    start_timeout: float
    stop_timeout: float
    auto_create_topics: bool
    server_properties: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def jvm_out(self) -> Path:
        return self.logs_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / "log4j2.properties"


@dataclass(frozen=True)
class BrokerStatus:
    """What :func:`status` found. ``running`` means the broker of this data dir is alive."""

    running: bool
    pid: int | None
    bootstrap_servers: str
    reachable: bool
    data_dir: str
    log_file: str
    topics: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.running:
            state = f"running (pid {self.pid}) on {self.bootstrap_servers}"
            if not self.reachable:
                state += ", NOT answering"
        elif self.reachable:
            state = f"stopped here, but another broker answers on {self.bootstrap_servers}"
        else:
            state = f"stopped ({self.bootstrap_servers})"
        topics = ", ".join(f"{name}[{n}]" for name, n in sorted(self.topics.items())) or "-"
        return f"kafka {state}\n  topics: {topics}\n  data:   {self.data_dir}\n  log:    {self.log_file}"


def _project_path(value: Any) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else PROJECT_ROOT / path


def settings(config: Mapping[str, Any]) -> BrokerSettings:
    """Resolve the broker settings; relative paths are relative to the project root."""
    bootstrap = str(get(config, "kafka.bootstrap_servers", "127.0.0.1:9092")).split(",")[0].strip()
    host, sep, port_text = bootstrap.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"kafka.bootstrap_servers must look like host:port, found {bootstrap!r}.")
    port = int(port_text)
    controller_port = get(config, "kafka.controller_port")
    controller_port = port + 1 if controller_port in (None, "") else int(controller_port)
    if controller_port == port:
        raise ConfigError(f"kafka.controller_port must differ from the listener port {port}.")
    data_dir = _project_path(get(config, "kafka.data_dir", "var/kafka"))
    libs_dir = _project_path(get(config, "kafka.libs_dir", "var/kafka/libs"))
    jvm_opts = get(config, "kafka.jvm_opts", []) or []
    if isinstance(jvm_opts, str):
        jvm_opts = jvm_opts.split()
    extra = get(config, "kafka.server_properties", {}) or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"kafka.server_properties must be a mapping, found {type(extra).__name__}.")
    return BrokerSettings(
        host=host,
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
        libs_dir=libs_dir,
        java=get(config, "kafka.java"),
        heap=str(get(config, "kafka.heap", "512m")),
        jvm_opts=tuple(str(o) for o in jvm_opts),
        start_timeout=float(get(config, "kafka.start_timeout_s", 90)),
        stop_timeout=float(get(config, "kafka.stop_timeout_s", 30)),
        auto_create_topics=bool(get(config, "kafka.auto_create_topics", False)),
        server_properties={str(k): _prop_value(v) for k, v in _flatten(extra).items()},
    )


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # `--set kafka.server_properties.log.retention.ms=1` arrives nested; Kafka wants dotted keys.
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _prop_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _server_properties(s: BrokerSettings) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # A static voter set keeps the controller address out of the formatted metadata, so the
        # same data dir restarts fine on other ports.
        "controller.quorum.voters": f"{NODE_ID}@{s.host}:{s.controller_port}",
        "listeners": f"PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{s.host}:{s.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(s.log_dirs),
        "num.partitions": "1",
        "auto.create.topics.enable": _prop_value(s.auto_create_topics),
        # Single node: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # 50 partitions per internal topic (Kafka's default) slow the first consumer group down
        # on a laptop for no benefit.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        # The machine is small and shared with Spark; Kafka's defaults assume a dedicated host.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        **s.server_properties,
    }
    header = "# Written by sparktweet.kafka_broker at each start; change the kafka: config instead.\n"
    return header + "".join(f"{k}={v}\n" for k, v in props.items())


def _log4j_properties(s: BrokerSettings) -> str:
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {s.server_log}",
            f"appender.file.filePattern = {s.server_log}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            # Per-partition state changes flood the log at INFO.
            "logger.statechange.name = state.change.logger",
            "logger.statechange.level = WARN",
            "",
        ]
    )


def _java(s: BrokerSettings) -> str:
    if s.java:
        return str(s.java)
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaBrokerError("No java found; install a Java 17 JDK, set JAVA_HOME or kafka.java.")
    return found


def _check_libs(s: BrokerSettings) -> None:
    if not list(s.libs_dir.glob("kafka_2.13-*.jar")):
        raise KafkaBrokerError(
            f"No Kafka broker jars in {s.libs_dir}; run scripts/fetch_jars.sh (or set kafka.libs_dir)."
        )


def _jvm_command(s: BrokerSettings, java: str, main_class: str, *args: str) -> list[str]:
    return [
        java,
        f"-Xmx{s.heap}",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={s.log4j_file}",
        f"-Dkafka.logs.dir={s.logs_dir}",
        *s.jvm_opts,
        "-cp",
        f"{s.libs_dir}/*",
        main_class,
        *args,
    ]


def _random_cluster_id() -> str:
    """Kafka's ``Uuid.toString``: URL-safe base64 of 16 random bytes without padding.

    Like Kafka's own ``Uuid.randomUuid``, an id starting with ``-`` (one in 64) is drawn again: the
    storage tool's argument parser would read it as an option ("--cluster-id: expected one argument").
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 200 * lines))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_tail(config: Mapping[str, Any], lines: int = 40) -> str:
    """The last lines of the broker's JVM output and of its ``server.log``, for error messages."""
    s = settings(config)
    parts = []
    for path in (s.jvm_out, s.server_log):
        text = _tail(path, lines)
        if text.strip():
            parts.append(f"--- {path} (last {lines} lines) ---\n{text}")
    return "\n".join(parts) or f"(no broker logs under {s.logs_dir})"


def _read_pid(s: BrokerSettings) -> int | None:
    try:
        return int(s.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int, s: BrokerSettings) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    # The pid may have been reused by another process since the pid file was written.
    return MAIN_CLASS.encode() in cmdline and str(s.properties_file).encode() in cmdline


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _locked(s: BrokerSettings) -> Iterator[None]:
    # Two concurrent `start`s on one data dir must not both format it or launch two JVMs.
    s.data_dir.mkdir(parents=True, exist_ok=True)
    with open(s.data_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _format(s: BrokerSettings, java: str, cluster_id: str | None) -> None:
    if cluster_id and str(cluster_id).startswith("-"):
        raise KafkaBrokerError(
            f"kafka.cluster_id {cluster_id!r} starts with '-', which Kafka's storage tool reads as an option; "
            "choose another id (or leave it unset for a random one)."
        )
    cmd = _jvm_command(
        s,
        java,
        STORAGE_TOOL,
        "format",
        "-t",
        cluster_id or _random_cluster_id(),
        "-c",
        str(s.properties_file),
        "--ignore-formatted",
    )
    log.info("formatting Kafka log dir %s", s.log_dirs)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=max(s.start_timeout, 60), check=False)
    except subprocess.TimeoutExpired as exc:
        raise KafkaBrokerError(f"Formatting {s.log_dirs} timed out after {exc.timeout}s.") from exc
    if result.returncode != 0:
        raise KafkaBrokerError(
            f"Formatting the Kafka log dir {s.log_dirs} failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()[-4000:]}"
        )


def _metadata(bootstrap: str, timeout: float):
    from confluent_kafka.admin import AdminClient

    # Connection errors while probing are expected; keep librdkafka from printing them.
    client = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": lambda err: None})
    return client.list_topics(timeout=timeout)


def _wait_ready(s: BrokerSettings, pid: int, config: Mapping[str, Any]) -> None:
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + s.start_timeout
    while True:
        if not _alive(pid, s):
            child = _CHILDREN.get(pid)
            code = f" with code {child.returncode}" if child is not None else ""
            raise KafkaBrokerError(f"The Kafka broker (pid {pid}) exited{code} while starting.\n{log_tail(config)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaBrokerError(
                f"The Kafka broker (pid {pid}) did not answer on {s.bootstrap_servers} within "
                f"{s.start_timeout:.0f}s (kafka.start_timeout_s).\n{log_tail(config)}"
            )
        # Wait for the socket before asking a real client: librdkafka retries on its own
        # schedule, which makes the first answer come later than the broker is ready.
        if _port_open(s.host, s.port, timeout=0.5):
            try:
                if _metadata(s.bootstrap_servers, timeout=min(5.0, max(remaining, 0.5))).brokers:
                    return
            except KafkaException:
                pass
        time.sleep(0.2)


def _launch(s: BrokerSettings, java: str) -> subprocess.Popen:
    s.logs_dir.mkdir(parents=True, exist_ok=True)
    with s.jvm_out.open("ab") as out:
        out.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        out.flush()
        # Its own session: Ctrl-C in the shell or in pytest must not kill the broker before the
        # clean shutdown that stop() asks for.
        proc = subprocess.Popen(
            _jvm_command(s, java, MAIN_CLASS, str(s.properties_file)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=s.data_dir,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    s.pid_file.write_text(f"{proc.pid}\n")
    return proc


def start(config: Mapping[str, Any]) -> BrokerStatus:
    """Start the broker (idempotent), wait until a real client gets metadata, create the topics.

    Returns the broker's :class:`BrokerStatus`. A broker that is already running for this data
    dir is left alone (its topics are still ensured). Raises :class:`KafkaBrokerError` with the
    tail of the broker's logs when it cannot start.
    """
    from sparktweet.kafka_io import ensure_topics

    s = settings(config)
    with _locked(s):
        pid = _read_pid(s)
        if pid is not None and _alive(pid, s):
            log.info("Kafka broker already running (pid %d) on %s", pid, s.bootstrap_servers)
            _wait_ready(s, pid, config)
            ensure_topics(config)
            return status(config)
        if pid is not None:
            log.info("removing stale pid file %s (pid %d is gone)", s.pid_file, pid)
            s.pid_file.unlink(missing_ok=True)
        _check_libs(s)
        java = _java(s)
        for port in (s.port, s.controller_port):
            if _port_open(s.host, port, timeout=0.3):
                raise KafkaBrokerError(
                    f"{s.host}:{port} is already in use by another process, so this broker cannot "
                    f"listen there; stop it or choose other ports (kafka.bootstrap_servers, kafka.controller_port)."
                )
        s.log_dirs.mkdir(parents=True, exist_ok=True)
        s.logs_dir.mkdir(parents=True, exist_ok=True)
        s.properties_file.write_text(_server_properties(s))
        s.log4j_file.write_text(_log4j_properties(s))
        if not (s.log_dirs / "meta.properties").exists():
            _format(s, java, get(config, "kafka.cluster_id"))
        began = time.monotonic()
        proc = _launch(s, java)
        try:
            _wait_ready(s, proc.pid, config)
            ensure_topics(config)
        except BaseException:
            _terminate(proc.pid, s, s.stop_timeout)
            s.pid_file.unlink(missing_ok=True)
            raise
        log.info("Kafka broker (pid %d) ready on %s in %.1fs", proc.pid, s.bootstrap_servers, time.monotonic() - began)
    return status(config)


def _wait_exit(pid: int, s: BrokerSettings, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, s):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(pid: int, s: BrokerSettings, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, s, timeout):
        return
    log.warning("Kafka broker (pid %d) still running %.0fs after SIGTERM; sending SIGKILL", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_exit(pid, s, 10):
        raise KafkaBrokerError(f"The Kafka broker (pid {pid}) survived SIGKILL; check the process by hand.")


def stop(config: Mapping[str, Any], timeout: float | None = None) -> bool:
    """Stop the broker: SIGTERM (a clean shutdown), SIGKILL after ``timeout`` seconds.

    Data stays on disk for the next :func:`start`. Returns whether a broker was running.
    """
    s = settings(config)
    with _locked(s):
        pid = _read_pid(s)
        if pid is None or not _alive(pid, s):
            s.pid_file.unlink(missing_ok=True)
            return False
        began = time.monotonic()
        _terminate(pid, s, s.stop_timeout if timeout is None else timeout)
        s.pid_file.unlink(missing_ok=True)
        log.info("Kafka broker (pid %d) stopped in %.1fs", pid, time.monotonic() - began)
        return True


def restart(config: Mapping[str, Any]) -> BrokerStatus:
    """Stop then start the broker; topics and records survive."""
    stop(config)
    return start(config)


def status(config: Mapping[str, Any], timeout: float = 3.0) -> BrokerStatus:
    """Whether this data dir's broker runs, whether anything answers on its listener, its topics."""
    from confluent_kafka import KafkaException

    s = settings(config)
    pid = _read_pid(s)
    running = pid is not None and _alive(pid, s)
    reachable = False
    topics: dict[str, int] = {}
    if _port_open(s.host, s.port, timeout=0.5):
        try:
            metadata = _metadata(s.bootstrap_servers, timeout=timeout)
            reachable = bool(metadata.brokers)
            topics = {n: len(t.partitions) for n, t in metadata.topics.items() if not n.startswith("__")}
        except KafkaException:
            reachable = False
    return BrokerStatus(
        running=running,
        pid=pid if running else None,
        bootstrap_servers=s.bootstrap_servers,
        reachable=reachable,
        data_dir=str(s.data_dir),
        log_file=str(s.server_log),
        topics=topics,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``start|stop|status|restart|logs|topics`` with ``--conf FILE`` and ``--set key=value``.

    ``topics`` creates the project's topics on the configured brokers (any cluster, not only the
    local one) if they are missing, and prints them with their partition counts.

    Exit codes: 0 done (``status``: a broker answers), 1 error, 3 ``status``: not running.
    """
    parser = argparse.ArgumentParser(
        prog="python -m sparktweet.kafka_broker", description="Manage the local single-node Kafka broker."
    )
    parser.add_argument("command", choices=["start", "stop", "status", "restart", "logs", "topics"])
    parser.add_argument("--conf", action="append", default=[], metavar="FILE", help="extra YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. kafka.bootstrap_servers=127.0.0.1:19092",
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.conf, args.overrides)
        if args.command == "start":
            sys.stdout.write(f"{start(config)}\n")
        elif args.command == "restart":
            sys.stdout.write(f"{restart(config)}\n")
        elif args.command == "stop":
            was_running = stop(config)
            sys.stdout.write("kafka stopped\n" if was_running else "kafka was not running\n")
        elif args.command == "logs":
            sys.stdout.write(f"{log_tail(config)}\n")
        elif args.command == "topics":
            from sparktweet.kafka_io import ensure_topics

            for name, partitions in sorted(ensure_topics(config).items()):
                sys.stdout.write(f"{name}\t{partitions} partitions\n")
        else:
            state = status(config)
            sys.stdout.write(f"{state}\n")
            return 0 if state.reachable else 3
    except SparkTweetError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

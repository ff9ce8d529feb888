"""The service image (Dockerfile), checked without a Docker engine.

There is no Docker engine here, so the image is not built. What is checked instead: the
Dockerfile's shape (base image, non-root user, health check, entrypoint and command), that the
build context holds what it copies, and, in a fresh virtualenv installed the way the Dockerfile
installs (same files, same pip command, same extras), that no pyspark or TensorFlow comes in and
that the image's entrypoint and command serve ``/healthz`` to the image's own HEALTHCHECK.
Not covered: the Debian base layer and the ``useradd``/``chown`` steps.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HEAVY = {"pyspark", "tensorflow", "tensorflow-cpu", "keras", "spacy", "gensim", "torch", "spark-nlp"}
NEEDED = {"flask", "waitress", "sqlalchemy", "alembic", "confluent-kafka", "tweepy", "boto3", "psycopg"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


def one(name: str) -> str:
    found = [args for instr, args in instructions() if instr == name]
    assert len(found) == 1, f"expected one {name} in the Dockerfile, found {len(found)}"
    return found[0]


def pip_extras() -> list[str]:
    runs = " ".join(args for instr, args in instructions() if instr == "RUN")
    match = re.search(r'pip install -c \S+ "/tmp/src\[([a-z,]+)\]"', runs)
    assert match, "the Dockerfile's RUN no longer installs /tmp/src[extras] with the pinned constraints"
    return match.group(1).split(",")


def exec_form(args: str) -> list[str]:
    return json.loads(args)


def test_dockerfile_shape():
    assert one("FROM") == "python:3.11-slim"
    assert pip_extras() == ["serve", "kafka", "aws"]
    order = [instr for instr, _ in instructions()]
    user = one("USER")
    last_run = len(order) - 1 - order[::-1].index("RUN")
    assert user not in ("root", "0") and order.index("USER") > last_run, "runs as a non-root user, set after installing"
    health = one("HEALTHCHECK")
    assert "/healthz" in health and health.split("CMD", 1)[0].strip().startswith("--interval")
    assert exec_form(one("ENTRYPOINT")) == ["python", "-m", "sparktweet.secret_store", "--"]
    assert exec_form(one("CMD"))[:2] == ["sparktweet", "serve"]
    env = one("ENV")
    assert "SPARKTWEET_HOME=/app" in env


def test_build_context_holds_what_the_dockerfile_copies():
    """.dockerignore excludes everything else; each COPY source must survive it."""
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and not r.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
                keep = negate
        return keep

    sources = []
    for instr, args in instructions():
        if instr == "COPY":
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        assert included(src.rstrip("/")), f"COPY {src} is excluded by .dockerignore"
    assert not included(".venv") and not included("jars") and not included("models")


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    """A virtualenv installed as the Dockerfile installs: (python, app dir)."""
    base = tmp_path_factory.mktemp("image")
    src, app = base / "src", base / "app"
    # The Dockerfile's COPY lines.
    src.mkdir()
    for name in ("requirements-ci.txt", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "sparktweet", src / "sparktweet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "conf", app / "conf")
    (app / "var").mkdir()
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    constraints = base / "constraints.txt"
    constraints.write_text(re.sub(r"\[[^]]*\]", "", (ROOT / "requirements-ci.txt").read_text()))
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", "-c", str(constraints),
         f"{src}[{','.join(pip_extras())}]"],
        check=False, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stderr[-3000:]}"
    return python, app


def installed(python: Path) -> set[str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], check=True, capture_output=True, text=True).stdout
    return {p["name"].lower().replace("_", "-") for p in json.loads(out)}


@pytest.mark.slow
def test_image_installs_no_spark_and_no_tensorflow(service_env):
    python, _ = service_env
    names = installed(python)
    assert not names & HEAVY, f"the service image would carry {sorted(names & HEAVY)}"
    assert NEEDED <= names, f"missing {sorted(NEEDED - names)}"


@pytest.mark.slow
def test_image_command_serves_healthz_to_its_healthcheck(service_env):
    python, app = service_env
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [*exec_form(one("ENTRYPOINT")), *exec_form(one("CMD"))]
    command = [str(python) if c == "python" else c for c in command]
    command = [str(python.parent / c) if c == "sparktweet" else c for c in command]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKTWEET_", "AWS_", "PYTHONPATH"))}
    env.update(SPARKTWEET_HOME=str(app), PORT=str(port), PATH=f"{python.parent}:{env['PATH']}")
    health = exec_form(one("HEALTHCHECK").split("CMD", 1)[1].strip())
    health = [str(python) if c == "python" else c for c in health]
    server = subprocess.Popen(command, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the image's command exited:\n{server.stdout.read().decode()[-3000:]}"
            if subprocess.run(health, check=False, env=env, capture_output=True, timeout=30).returncode == 0:
                break
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
            time.sleep(1)
        # The package reads conf/ from the image's /app (SPARKTWEET_HOME), not from site-packages.
        probe = subprocess.run([str(python), "-c", "import sparktweet.config as c; print(c.DEFAULT_CONF)"],
                               check=True, capture_output=True, text=True, env=env, cwd=app).stdout.strip()
        assert probe == str(app / "conf" / "default.yaml")
        assert (app / "var" / "tickets.db").exists(), "the SQLite store lives in the image's /app/var volume"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SPARKTWEET_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    from sparktweet.session import build_session

    session = build_session(
        {"spark": {"master": "local[2]", "shuffle_partitions": 2, "arrow_batch_size": 512}},
        app_name="sparktweet-tests",
        **{"spark.ui.enabled": "false", "spark.default.parallelism": "2"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared dataset folder; CI has it beside the clone, so its absence is a failure."""
    if not (SHARED_DATA / "Tweets.csv").exists():
        pytest.fail(f"Tweets.csv not found under {SHARED_DATA}; set SPARKTWEET_SHARED_DATA to the shared/data folder.")
    return SHARED_DATA

"""Artifact folders live as long as the process that made them: nothing is left in the temp folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Loads the shipped pipeline (a local copy of every stage's artifacts), scores two tweets (each stage
# ships its artifacts to the executors: one more copy each) and reports the sparktweet-* folders
# that exist in its temp folder while it runs.
_SCRIPT = """
import json, os, sys, tempfile
from pyspark.ml import PipelineModel
from sparktweet.records import CANONICAL_SCHEMA
from sparktweet.scoring import enrich
from sparktweet.session import build_session

spark = build_session({"spark": {"master": "local[1]"}}, app_name="sparktweet-temp-dirs", **{"spark.ui.enabled": "false"})
model = PipelineModel.load(sys.argv[1])
rows = [("1", "@united my bag is lost", None, None, "2015-02-24 11:35:52 -0800", None, None, None, None),
        ("2", "@united thanks, great crew", None, None, "2015-02-24 11:36:52 -0800", None, None, None, None)]
df = spark.createDataFrame(rows, CANONICAL_SCHEMA)
scored = enrich(model, df.withColumn("error", df.tweet_id.isNull().cast("string"))).collect()
root = tempfile.gettempdir()
print(json.dumps({"scored": len(scored), "dirs": sorted(d for d in os.listdir(root) if d.startswith("sparktweet-"))}))
spark.stop()
"""


def test_stage_artifact_copies_are_removed_when_the_process_exits(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(ROOT / "models" / "default" / "pipeline")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["scored"] == 2
    during = report["dirs"]
    # One loaded copy per artifact stage and one shipped copy each.
    assert sum(d.startswith("sparktweet-ship-") for d in during) >= 4, during
    assert sum(not d.startswith("sparktweet-ship-") for d in during) >= 4, during
    left = sorted(d for d in os.listdir(tmp_path) if d.startswith("sparktweet-"))
    assert left == [], f"left behind in the temp folder: {left}"

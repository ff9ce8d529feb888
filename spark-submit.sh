#!/usr/bin/env bash
# Submit a sparktweet job to Spark: ./spark-submit.sh <train|score|stream|...> [--master URL] [job args...]
#
# Packages the library as a zip for --py-files, passes the repo's JVM jars (jars/, from
# scripts/fetch_jars.sh and jvm/preprocess/build.sh) with --jars, and sets the Spark configs the
# jobs rely on. Extra spark-submit options go in SPARK_SUBMIT_OPTS_EXTRA.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
job="${1:-}"
[ -n "$job" ] || { echo "usage: $0 <train|score|stream|replay|ingest> [--master URL] [job args...]" >&2; exit 2; }
shift
[ -f "$here/jobs/$job.py" ] || { echo "unknown job '$job' (no jobs/$job.py)" >&2; exit 2; }

master="${SPARK_MASTER:-local[*]}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) master="$2"; shift 2 ;;
    --master=*) master="${1#--master=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

python="${PYSPARK_PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
submit="${SPARK_SUBMIT:-$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')}"

build="$here/var/submit"
mkdir -p "$build"
(cd "$here" && rm -f "$build/sparktweet.zip" && "$python" - "$build/sparktweet.zip" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk("sparktweet"):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            z.write(os.path.join(root, f))
PY
)
jars="$(ls "$here"/jars/*.jar 2>/dev/null | paste -sd, -)"

export PYSPARK_PYTHON="$python"
export SPARK_SUBMITTED=1
exec "$submit" \
  --master "$master" \
  --name "sparktweet-$job" \
  ${jars:+--jars "$jars"} \
  --py-files "$build/sparktweet.zip" \
  --conf spark.sql.execution.arrow.pyspark.enabled=true \
  --conf spark.sql.execution.arrow.maxRecordsPerBatch="${ARROW_BATCH:-2048}" \
  --conf spark.python.worker.reuse=true \
  --conf spark.sql.session.timeZone=UTC \
  --conf spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2 \
  --conf spark.executorEnv.OMP_NUM_THREADS=1 \
  ${SPARK_SUBMIT_OPTS_EXTRA:-} \
  "$here/jobs/$job.py" "${args[@]}"

#!/usr/bin/env bash
# Submit a sparktweet job to Spark, on one machine or a cluster.
#
#   ./spark-submit.sh <train|score|stream|replay|ingest> [--master URL] [--deploy-mode client|cluster]
#                     [--env-archive PATH|URI|none] [--dry-run] [job args: --conf FILE --set key=value ...]
#   ./spark-submit.sh pack-env [OUT.tar.gz]      # build the Python environment archive for YARN/EMR
#
# What it ships:
#   code    sparktweet/ as a zip (--py-files), rebuilt on every submit, so code changes need no new
#           environment archive.
#   Python  local[*] and spark:// masters on this machine: this venv's interpreter (PYSPARK_PYTHON),
#           nothing to ship. yarn (EMR), or any master given --env-archive: a venv-pack archive
#           (`pack-env`) shipped with --archives ENV#env; executors (and the driver in cluster mode)
#           run ./env/bin/python inside it.
#   jars    jars/*.jar (Kafka connector, the project's Java UDF) with --jars. On yarn the Kafka
#           connector comes from --packages at the cluster's own Spark version (EMR runs 4.0.x, the
#           jars in jars/ are built for pyspark 4.1), and only jars/sparktweet-jvm.jar is passed.
#   conf    conf/ itself in client mode (SPARKTWEET_HOME points at this checkout); in yarn cluster
#           mode conf/ is zipped and shipped with --archives CONF#conf, and the driver runs with
#           SPARKTWEET_HOME=. (its container's working directory), so `--conf conf/emr.yaml` works.
#   S3      models, checkpoints and outputs may be s3a:// URIs. EMR (7.10+) has S3A built in; on
#           other masters an s3a:// job argument adds --packages org.apache.hadoop:hadoop-aws at
#           pyspark's Hadoop version (credentials: the default AWS chain, e.g. the instance profile).
#
# Spark settings (each overridable with an environment variable):
#   ARROW_BATCH=8192    rows per Arrow batch into the pandas UDFs (also passed to the job as
#                       --set spark.arrow_batch_size, because the job's session settings win)
#   TF_THREADS=1        TensorFlow intra/inter-op threads per Python worker: one task per core
#                       already fills the core, more threads only contend
#   worker reuse on, Kryo serializer (buffer max 512m) for the JVM side.
# Other environment: SPARK_MASTER (default local[*]), SPARK_SUBMIT (spark-submit command; default
# pyspark's), SPARK_VERSION (yarn: the cluster's Spark version for the Kafka package; default asked
# from spark-submit --version), SPARKTWEET_ENV_ARCHIVE (default for --env-archive),
# SPARK_SUBMIT_OPTS_EXTRA (extra spark-submit options, word-split).
# pack-env environment: SPARKTWEET_ENV_PYTHON (interpreter the cluster nodes have; default
# python3.11), SPARKTWEET_ENV_PYTHON_PREFIX (its prefix on the nodes, e.g. /usr; default: as here),
# SPARKTWEET_ENV_EXTRAS (default lstm,ner,kafka).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/var/submit"
usage="usage: $0 <train|score|stream|replay|ingest> [--master URL] [--deploy-mode client|cluster] [--env-archive PATH|URI|none] [--dry-run] [job args...]
       $0 pack-env [OUT.tar.gz]"
die() { echo "spark-submit.sh: $*" >&2; exit 2; }

python="${PYSPARK_DRIVER_PYTHON:-${PYSPARK_PYTHON:-$here/.venv/bin/python}}"
[ -x "$python" ] || python="$(command -v python3)"

pack_env() {
  # venv-pack refuses editable installs, so the archive is built from a fresh venv holding a
  # regular install of the package and its model extras. pyspark stays out: the cluster's Spark
  # puts its own pyspark and py4j on the workers' PYTHONPATH.
  local out="${1:-$build/env.tar.gz}" venv="$build/env-venv"
  local base="${SPARKTWEET_ENV_PYTHON:-python3.11}" extras="${SPARKTWEET_ENV_EXTRAS:-lstm,ner,kafka}"
  command -v "$base" >/dev/null || die "pack-env: $base not found; set SPARKTWEET_ENV_PYTHON to the Python the cluster runs"
  mkdir -p "$build" "$(dirname "$out")"
  rm -rf "$venv"
  "$base" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # requirements-ci.txt pins the versions; pip constraints cannot carry extras, so strip them.
  sed 's/\[[^]]*\]//' "$here/requirements-ci.txt" > "$build/constraints.txt"
  "$venv/bin/python" -m pip install -q -c "$build/constraints.txt" "$here[$extras]"
  local pack="$(dirname "$python")/venv-pack"
  [ -x "$pack" ] || pack="$(command -v venv-pack)" || die "pack-env: venv-pack not found; pip install venv-pack"
  local quiet=--quiet
  [ -t 1 ] && quiet=
  "$pack" -p "$venv" -o "$out" -f $quiet ${SPARKTWEET_ENV_PYTHON_PREFIX:+--python-prefix "$SPARKTWEET_ENV_PYTHON_PREFIX"}
  chmod 644 "$out"
  rm -rf "$venv"
  echo "$out"
}

job="${1:-}"
[ -n "$job" ] || die "$usage"
shift
if [ "$job" = pack-env ]; then pack_env "$@"; exit 0; fi
[ -f "$here/jobs/$job.py" ] || die "unknown job '$job' (no jobs/$job.py)"

master="${SPARK_MASTER:-local[*]}"
deploy_mode=client
env_archive="${SPARKTWEET_ENV_ARCHIVE:-}"
dry_run=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) master="$2"; shift 2 ;;
    --master=*) master="${1#*=}"; shift ;;
    --deploy-mode) deploy_mode="$2"; shift 2 ;;
    --deploy-mode=*) deploy_mode="${1#*=}"; shift ;;
    --env-archive) env_archive="$2"; shift 2 ;;
    --env-archive=*) env_archive="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
case "$deploy_mode" in client|cluster) ;; *) die "--deploy-mode must be client or cluster, not '$deploy_mode'" ;; esac
case "$master" in
  yarn*) on_yarn=1 ;;
  local*) on_yarn=0; [ "$deploy_mode" = client ] || die "local masters run in client mode only" ;;
  *) on_yarn=0 ;;
esac
# Standalone cluster deploy mode cannot run Python applications; YARN can.
[ "$deploy_mode" = client ] || [ "$on_yarn" = 1 ] || die "cluster deploy mode needs --master yarn (Spark standalone runs Python drivers in client mode only)"
if [ -z "$env_archive" ]; then
  if [ "$on_yarn" = 1 ]; then env_archive="$build/env.tar.gz"; else env_archive=none; fi
fi
if [ "$env_archive" != none ] && [ "${env_archive#*://}" = "$env_archive" ]; then
  [ -f "$env_archive" ] || [ "$dry_run" = 1 ] || die "no environment archive at $env_archive; build it with '$0 pack-env' or pass --env-archive"
  env_archive="$(cd "$(dirname "$env_archive")" && pwd)/$(basename "$env_archive")"
fi

submit="${SPARK_SUBMIT:-$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')}"

mkdir -p "$build"
# Content-addressed zips: a submission never rewrites a zip another running job is reading.
zip_dir() {  # zip_dir package|contents SRC_DIR PATTERN... -> prints the zip's path
  # package: entries keep the folder name (sparktweet/...), for --py-files;
  # contents: entries are the folder's files, for --archives X#<folder name>.
  "$python" - "$build" "$@" <<'PY'
import fnmatch, hashlib, os, sys, tempfile, zipfile
build, mode, src, patterns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
base = os.path.dirname(src) if mode == "package" else src
fd, tmp = tempfile.mkstemp(dir=build, suffix=".zip")
os.close(fd)
os.chmod(tmp, 0o644)
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if any(fnmatch.fnmatch(f, p) for p in patterns) and not f.endswith((".pyc", ".pyo")):
                path = os.path.join(root, f)
                # A fixed timestamp: the same sources give the same bytes, hence the same name.
                info = zipfile.ZipInfo(os.path.relpath(path, base), date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as fh:
                    z.writestr(info, fh.read())
with open(tmp, "rb") as fh:
    digest = hashlib.sha1(fh.read()).hexdigest()[:12]
final = os.path.join(build, f"{os.path.basename(src)}-{digest}.zip")
os.replace(tmp, final)
print(final)
PY
}
code_zip="$(zip_dir package "$here/sparktweet" '*')"
# Zips of older sources: kept a day, in case a job submitted from them still runs.
find "$build" -maxdepth 1 \( -name 'sparktweet-*.zip' -o -name 'conf-*.zip' \) -mmin +1440 -delete 2>/dev/null || true

opts=(--master "$master" --deploy-mode "$deploy_mode" --name "sparktweet-$job")
packages=()
archives=()
if [ "$on_yarn" = 1 ]; then
  [ -f "$here/jars/sparktweet-jvm.jar" ] && opts+=(--jars "$here/jars/sparktweet-jvm.jar")
  spark_version="${SPARK_VERSION:-$("$submit" --version 2>&1 | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -1)}"
  [ -n "$spark_version" ] || die "could not tell the cluster's Spark version; set SPARK_VERSION (e.g. 4.0.2)"
  packages+=("org.apache.spark:spark-sql-kafka-0-10_2.13:$spark_version")
else
  jars="$(ls "$here"/jars/*.jar 2>/dev/null | paste -sd, -)"
  [ -n "$jars" ] && opts+=(--jars "$jars")
  case " ${args[*]-} " in
    *s3a://*)
      hadoop="$(ls "$(dirname "$submit")/../jars/" 2>/dev/null | sed -n 's/^hadoop-client-api-\(.*\)\.jar$/\1/p' | head -1)"
      [ -n "$hadoop" ] && packages+=("org.apache.hadoop:hadoop-aws:$hadoop") ;;
  esac
fi
opts+=(--py-files "$code_zip")

if [ "$env_archive" != none ]; then
  archives+=("$env_archive#env")
  # Relative to each container's working directory, where the archive is unpacked.
  export PYSPARK_PYTHON=./env/bin/python
  opts+=(--conf spark.pyspark.python=./env/bin/python)
else
  export PYSPARK_PYTHON="$python"
fi
if [ "$deploy_mode" = cluster ]; then
  # The driver runs in a YARN container: its Python is the archive's, its conf/ the shipped one.
  unset PYSPARK_DRIVER_PYTHON
  archives+=("$(zip_dir contents "$here/conf" '*.yaml')#conf")
  opts+=(--conf spark.yarn.appMasterEnv.SPARKTWEET_HOME=.
         --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./env/bin/python
         --conf spark.yarn.appMasterEnv.TF_CPP_MIN_LOG_LEVEL=2
         --conf spark.yarn.appMasterEnv.TF_NUM_INTRAOP_THREADS="${TF_THREADS:-1}"
         --conf spark.yarn.appMasterEnv.TF_NUM_INTEROP_THREADS="${TF_THREADS:-1}")
else
  export PYSPARK_DRIVER_PYTHON="$python"
  export SPARKTWEET_HOME="$here"
  opts+=(--conf spark.pyspark.driver.python="$python")
fi
[ ${#archives[@]} -gt 0 ] && opts+=(--archives "$(IFS=,; echo "${archives[*]}")")
[ ${#packages[@]} -gt 0 ] && opts+=(--packages "$(IFS=,; echo "${packages[*]}")")

[ -n "${ARROW_BATCH:-}" ] && args+=(--set "spark.arrow_batch_size=$ARROW_BATCH")
opts+=(
  --conf spark.sql.execution.arrow.pyspark.enabled=true
  --conf spark.sql.execution.arrow.maxRecordsPerBatch="${ARROW_BATCH:-8192}"
  --conf spark.python.worker.reuse=true
  --conf spark.serializer=org.apache.spark.serializer.KryoSerializer
  --conf spark.kryoserializer.buffer.max=512m
  --conf spark.sql.session.timeZone=UTC
  --conf spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2
  --conf spark.executorEnv.TF_NUM_INTRAOP_THREADS="${TF_THREADS:-1}"
  --conf spark.executorEnv.TF_NUM_INTEROP_THREADS="${TF_THREADS:-1}"
  --conf spark.executorEnv.OMP_NUM_THREADS="${TF_THREADS:-1}"
)

export SPARK_SUBMITTED=1
# shellcheck disable=SC2206 - SPARK_SUBMIT_OPTS_EXTRA is a word-split list of options by design
cmd=("$submit" "${opts[@]}" ${SPARK_SUBMIT_OPTS_EXTRA:-} "$here/jobs/$job.py" ${args[@]+"${args[@]}"})
if [ "$dry_run" = 1 ]; then
  for v in PYSPARK_PYTHON PYSPARK_DRIVER_PYTHON SPARKTWEET_HOME SPARK_SUBMITTED; do
    [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"

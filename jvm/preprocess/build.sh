#!/usr/bin/env bash
# Build jars/sparktweet-jvm.jar, the JVM backend of TweetPreprocessor (TweetPreprocess UDF plus the
# lemma/stop-word/emoji tables from sparktweet/resources), with javac against pyspark's own jars:
# no Maven download, no Spark distribution needed. build_session puts jars/*.jar on spark.jars.
#
# Idempotent and fast: does nothing when the jar is newer than the sources, the resources and
# this script. Usage: bash jvm/preprocess/build.sh [--force]
# Environment: PYTHON (interpreter with pyspark; default .venv/bin/python, then python3),
# SPARK_JARS_DIR (compile against these jars instead of pyspark's).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
JAR="$ROOT/jars/sparktweet-jvm.jar"
RESOURCES=(lemmas.tsv.gz stopwords.txt emoji.tsv contractions.tsv LICENSE-lemmas.txt)

inputs=("$HERE/src" "$HERE/build.sh")
for name in "${RESOURCES[@]}"; do
    inputs+=("$ROOT/sparktweet/resources/$name")
done

if [[ "${1:-}" != "--force" && -f "$JAR" && -z "$(find "${inputs[@]}" -newer "$JAR" -print -quit)" ]]; then
    echo "$JAR is up to date"
    exit 0
fi

if [[ -z "${SPARK_JARS_DIR:-}" ]]; then
    PYTHON="${PYTHON:-}"
    if [[ -z "$PYTHON" ]]; then
        if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
    fi
    SPARK_JARS_DIR="$("$PYTHON" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
fi
if ! compgen -G "$SPARK_JARS_DIR/spark-sql-api_*.jar" > /dev/null; then
    echo "No spark-sql-api jar in $SPARK_JARS_DIR; install pyspark or set SPARK_JARS_DIR." >&2
    exit 1
fi

mkdir -p "$ROOT/jars"
WORK="$(mktemp -d "$ROOT/jars/.build-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

mapfile -t SOURCES < <(find "$HERE/src/main/java" -name '*.java' | sort)
# --release 17: the oldest Java that Spark 4 runs on.
javac --release 17 -encoding UTF-8 -Xlint:all,-path -cp "$SPARK_JARS_DIR/*" -d "$WORK/classes" "${SOURCES[@]}"
mkdir -p "$WORK/classes/sparktweet/resources"
for name in "${RESOURCES[@]}"; do
    cp "$ROOT/sparktweet/resources/$name" "$WORK/classes/sparktweet/resources/"
done
jar --create --file "$WORK/sparktweet-jvm.jar" -C "$WORK/classes" .
# Rename within jars/ so a concurrent reader never sees a half-written jar.
mv -f "$WORK/sparktweet-jvm.jar" "$JAR"
echo "Built $JAR"

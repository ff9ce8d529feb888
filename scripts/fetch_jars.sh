#!/usr/bin/env bash
# Copy the project's JVM jars from Maven Central (nothing is downloaded by Spark at run time):
#   pom.xml        -> jars/            Spark Kafka source/sink + kafka-clients (on spark.jars)
#   kafka/pom.xml  -> var/kafka/libs/  the local Kafka 4.x broker (never on Spark's classpath)
#
# Idempotent and fast when done: each folder keeps a stamp of the inputs that produced it and
# is only refetched when the POM (or this script, or the Maven settings) changed, or with
# --force. A fetch goes into a temporary folder and replaces the previous fetch's jars only when
# it is complete and checked, so a failed run never leaves half a classpath behind. Jars that
# other steps put in the same folder (jars/sparktweet-jvm.jar from jvm/preprocess/build.sh) are
# left alone: only the jars listed in the folder's .fetched manifest are replaced.
#
# Usage: scripts/fetch_jars.sh [--force] [spark|broker]...   (default: both)
# Env:   PYTHON   interpreter whose pyspark/jars the Spark jars must not duplicate
#                 (default: .venv/bin/python if present, else python3)
#        MVN      Maven command (default: mvn)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SETTINGS="$ROOT/scripts/maven-settings.xml"
MVN="${MVN:-mvn}"
FORCE=0
TARGETS=()
CLEANUP=()
trap 'for f in "${CLEANUP[@]+"${CLEANUP[@]}"}"; do rm -rf "$f"; done' EXIT

die() { echo "fetch_jars: ERROR: $*" >&2; exit 1; }
log() { echo "fetch_jars: $*" >&2; }

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        spark|broker) TARGETS+=("$arg") ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$arg' (expected --force, spark or broker)" ;;
    esac
done
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(spark broker)

command -v "$MVN" >/dev/null 2>&1 || die "Maven ('$MVN') not found; install it (apt-get install -y maven) or set MVN."
command -v java >/dev/null 2>&1 || die "java not found; install a Java 17 JDK (apt-get install -y openjdk-17-jdk-headless)."

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

stamp_of() {  # the inputs that decide a folder's content
    cat "$1" "$SETTINGS" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

# artifact name of a jar file: strip the trailing -<version>.jar
artifact_names() {
    find "$1" -maxdepth 1 -name '*.jar' -printf '%f\n' | sed -E 's/-[0-9][0-9A-Za-z.]*(-[0-9A-Za-z.]+)*\.jar$//' | sort -u
}

check_spark_jars() {
    local dir="$1" pyspark_jars dupes
    for want in spark-sql-kafka-0-10_2.13 spark-token-provider-kafka-0-10_2.13 kafka-clients commons-pool2; do
        ls "$dir"/"$want"-[0-9]*.jar >/dev/null 2>&1 || die "$want missing from the copied Spark jars in $dir"
    done
    pyspark_jars="$("$PYTHON" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))' 2>/dev/null || true)"
    if [ -z "$pyspark_jars" ] || [ ! -d "$pyspark_jars" ]; then
        log "WARNING: pyspark not importable with $PYTHON; cannot check jars/ against pyspark's own jars."
        return 0
    fi
    dupes="$(comm -12 <(artifact_names "$dir") <(artifact_names "$pyspark_jars"))"
    [ -z "$dupes" ] || die "these jars are already in $pyspark_jars and would shadow pyspark's copy; exclude them in pom.xml: $dupes"
}

check_broker_jars() {
    local dir="$1"
    for want in kafka_2.13 kafka-clients kafka-server kafka-raft kafka-metadata log4j-core log4j-slf4j-impl; do
        ls "$dir"/"$want"-[0-9]*.jar >/dev/null 2>&1 || die "$want missing from the copied broker jars in $dir"
    done
}

# $dest/.fetched: line 1 the stamp, then the jar files this script put there. Only those are
# replaced on a refetch, so jars other build steps add to the same folder survive.
up_to_date() {
    local dest="$1" stamp="$2" jar
    [ -f "$dest/.fetched" ] && [ "$(head -n 1 "$dest/.fetched")" = "$stamp" ] || return 1
    [ "$(wc -l <"$dest/.fetched")" -gt 1 ] || return 1
    while read -r jar; do [ -f "$dest/$jar" ] || return 1; done < <(tail -n +2 "$dest/.fetched")
}

fetch() {
    local name="$1" pom="$2" dest="$3" prop="$4" check="$5" stamp tmp jar
    stamp="$(stamp_of "$pom")"
    if [ "$FORCE" -eq 0 ] && up_to_date "$dest" "$stamp"; then
        log "$name jars up to date in ${dest#"$ROOT"/} ($(($(wc -l <"$dest/.fetched") - 1)) jars)"
        return 0
    fi
    mkdir -p "$dest"
    tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
    CLEANUP+=("$tmp" "$tmp.log")
    log "fetching $name jars ($pom) ..."
    if ! "$MVN" -B -q -ntp -s "$SETTINGS" -f "$pom" dependency:copy-dependencies "-D$prop=$tmp" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        die "Maven could not copy the $name jars (see the output above)."
    fi
    "$check" "$tmp"
    if [ -f "$dest/.fetched" ]; then
        while read -r jar; do rm -f "$dest/$jar"; done < <(tail -n +2 "$dest/.fetched")
    fi
    rm -f "$dest/.fetched"
    { echo "$stamp"; find "$tmp" -maxdepth 1 -name '*.jar' -printf '%f\n' | sort; } >"$tmp.manifest"
    CLEANUP+=("$tmp.manifest")
    mv "$tmp"/*.jar "$dest"/
    mv "$tmp.manifest" "$dest/.fetched"
    log "$name jars ready in ${dest#"$ROOT"/} ($(($(wc -l <"$dest/.fetched") - 1)) jars)"
}

for target in "${TARGETS[@]}"; do
    case "$target" in
        spark) fetch spark "$ROOT/pom.xml" "$ROOT/jars" jars.dir check_spark_jars ;;
        broker) fetch broker "$ROOT/kafka/pom.xml" "$ROOT/var/kafka/libs" libs.dir check_broker_jars ;;
    esac
done

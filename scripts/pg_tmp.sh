#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests: scripts/pg_tmp.sh start DIR PORT | stop DIR.
# `start` prints a SQLAlchemy URL (postgresql+psycopg://...) on its last line.
# PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user
# (created by the Debian package); DIR's parent must be traversable by that user.
set -euo pipefail
cmd=${1:?usage: pg_tmp.sh start DIR PORT | stop DIR}
dir=${2:?data directory}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bindir" ] || { echo "PostgreSQL server not installed: run scripts/install_postgres.sh" >&2; exit 2; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    port=${3:?port}
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir" && chmod 700 "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U sparktweet --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # Unix socket in DIR (not /var/run/postgresql, which may not exist or be writable).
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U sparktweet sparktweet
    echo "postgresql+psycopg://sparktweet@127.0.0.1:$port/sparktweet"
    ;;
stop)
    [ -d "$dir/data" ] && as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    ;;
*)
    echo "usage: pg_tmp.sh start DIR PORT | stop DIR" >&2; exit 2;;
esac

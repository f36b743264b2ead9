#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the test suite (Debian's postgresql package).
#
#   eval "$(bash scripts/test-postgres.sh start)"   # prints the two export lines below
#   export DESCENTLAB_TEST_POSTGRESQL=postgresql://descentlab@127.0.0.1:PORT/postgres
#   export DESCENTLAB_TEST_POSTGRESQL_DIR=/tmp/descentlab-pg.XXXXXX
#   bash scripts/test-postgres.sh stop "$DESCENTLAB_TEST_POSTGRESQL_DIR"
#
# The cluster lives in a new temporary folder, listens on a free port of the
# loopback interface only (its socket file stays in that folder), trusts local
# connections (it holds nothing but test data) and skips fsync. Run as root it
# runs as the postgres user, since PostgreSQL refuses to run as root.
# Exit status 3: no PostgreSQL server is installed here.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "no PostgreSQL server here (Debian: apt-get install postgresql)" >&2
    exit 3
fi
as_server() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/descentlab-pg.XXXXXX")
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_server "$bindir/initdb" -D "$dir/data" -U descentlab --auth=trust -E UTF8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    for attempt in 1 2 3 4 5; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        if as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
            start >/dev/null 2>&1; then
            echo "export DESCENTLAB_TEST_POSTGRESQL=postgresql://descentlab@127.0.0.1:$port/postgres"
            echo "export DESCENTLAB_TEST_POSTGRESQL_DIR=$dir"
            exit 0
        fi
    done
    cat "$dir/server.log" >&2
    exit 1
    ;;
stop)
    dir=${2:?usage: test-postgres.sh stop DIR}
    as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: test-postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac

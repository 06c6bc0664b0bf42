#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a private Unix socket, for the PostgreSQL HQ tests
# and benchmarks. Nothing listens on the network.
#
#   scripts/pg-cluster.sh start DIR [--durable]   creates and starts a cluster in DIR,
#                                                 prints its URL on stdout
#   scripts/pg-cluster.sh stop DIR                stops it (DIR is left for inspection)
#   scripts/pg-cluster.sh url DIR                 prints the URL of a running cluster
#
# The server runs as the 'postgres' user when started by root (PostgreSQL refuses
# root). Without --durable, fsync is off: the cluster is for tests and is thrown away.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$bindir/initdb" ] || { echo "pg-cluster: PostgreSQL server not installed (bash scripts/install-deps.sh)" >&2; exit 1; }

# From /, so the postgres user is not left in a directory it may not enter.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

url() {
  local user
  user="$([ "$(id -u)" -eq 0 ] && echo postgres || id -un)"
  echo "postgresql:///tillsync?host=$(cd "$dir" && pwd)/socket&user=$user"
}

case "$cmd" in
  start)
    mkdir -p "$dir/socket"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir"
    durable="off"
    [ "${3:-}" = "--durable" ] && durable="on"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bindir/initdb" -D "$dir/data" --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses='' -c unix_socket_directories='$(cd "$dir" && pwd)/socket' \
          -c fsync=$durable -c synchronous_commit=$durable -c full_page_writes=$durable \
          -c max_connections=300 -c shared_buffers=128MB" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bindir/createdb" -h "$(cd "$dir" && pwd)/socket" tillsync 2>/dev/null || true
    url
    ;;
  stop)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  url)
    url
    ;;
  *)
    echo "pg-cluster: unknown command '$cmd' (start|stop|url)" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster: starts one (scripts/pg-cluster.sh),
# exports its URL as TILLSYNC_PG_URL, runs the command, stops the cluster, and exits
# with the command's status. The suite's pg-labelled tests use TILLSYNC_PG_URL; without
# it they are skipped.
#   bash scripts/with-postgres.sh ctest --preset dev
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d /tmp/tillsync-pg.XXXXXX)"
chmod 755 "$dir"
TILLSYNC_PG_URL="$(bash "$here/pg-cluster.sh" start "$dir")"
export TILLSYNC_PG_URL
# This run asked for PostgreSQL: a pg test that finds no server fails instead of skipping.
export TILLSYNC_REQUIRE_PG=1
echo "with-postgres: PostgreSQL at $TILLSYNC_PG_URL"
status=0
"$@" || status=$?
bash "$here/pg-cluster.sh" stop "$dir" || true
rm -rf "$dir"
exit "$status"

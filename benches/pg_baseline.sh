#!/usr/bin/env bash
# PostgreSQL 15 baseline for the storage commit bench: single-row INSERT with
# 1 and 8 clients, synchronous_commit=on, fsync=on, on this machine.
# Usage: bash benches/pg_baseline.sh [seconds]   (runs PostgreSQL as user postgres)
set -euo pipefail
secs=${1:-10}
bin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/ebb-pg.XXXX)
chown postgres "$dir"
port=$((20000 + RANDOM % 20000))
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c synchronous_commit=on -c fsync=on -c max_connections=50" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null; rm -rf "$dir"' EXIT
psql() { command psql -h "$dir" -p "$port" -U postgres -qAt "$@"; }
psql -c "create table bench (id bigint primary key, a integer, b double precision, c text, d bigint)"
cat > "$dir/insert.sql" <<'SQL'
\set id random(1, 9000000000000)
INSERT INTO bench VALUES (:id, :id % 1000, :id * 0.5, 'row-' || :id, :id * 7) ON CONFLICT DO NOTHING;
SQL
for c in 1 8; do
  tps=$("$bin/pgbench" -h "$dir" -p "$port" -U postgres -n -f "$dir/insert.sql" -c $c -j $((c < 2 ? 1 : 2)) -T "$secs" postgres 2>/dev/null \
    | awk '/^tps/ {print $3}') || true  # the reported rate is what counts, not the exit status
  echo "postgresql15 single_row_insert clients=$c tps=$tps"
done

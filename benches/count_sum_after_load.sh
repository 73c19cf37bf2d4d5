#!/usr/bin/env bash
# count/sum over pgbench_accounts right after a bulk load, reaching an
# `ebb compute` directly (with its own `ebb storage`): `pgbench -i -s 10`
# (client-side COPY), then one psql session times `SELECT 1` and four
# `SELECT count(*), sum(abalance) FROM pgbench_accounts` with `\timing`
# (psql's start and connection are not in these figures). Shows whether the
# first queries after a load pay for work the load left behind.
# Usage: bash benches/count_sum_after_load.sh <path/to/ebb> [scale]
set -euo pipefail
ebb=${1:?usage: count_sum_after_load.sh <path/to/ebb> [scale]}
scale=${2:-10}
dir=$(mktemp -d /tmp/ebb-count-sum.XXXX)
port=$((40000 + RANDOM % 10000))
EBB_LOG=warn "$ebb" storage --listen "127.0.0.1:$((port + 1))" --object-store "file://$dir/objects" --cache-dir "$dir/cache" >"$dir/storage.log" 2>&1 &
storage_pid=$!
trap 'kill -TERM ${compute_pid:-} $storage_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
sleep 1
EBB_LOG=warn "$ebb" compute --listen "127.0.0.1:$port" --storage "http://127.0.0.1:$((port + 1))" --database postgres >"$dir/compute.log" 2>&1 &
compute_pid=$!
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
pgbench -q -i -s "$scale" -I dtg -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
query="SELECT count(*), sum(abalance) FROM pgbench_accounts;"
{ echo '\timing on'; echo 'SELECT 1;'; for _ in 1 2 3 4; do echo "$query"; done; } |
  psql -X -h 127.0.0.1 -p "$port" -U postgres postgres | awk '/^Time:/ {printf "%s ", $2} END {print "ms"}'

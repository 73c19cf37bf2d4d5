#!/usr/bin/env bash
# Proxy overhead: pgbench -S -M prepared -c 4 through `ebb local`'s proxy and
# straight to the compute serving the database, alternating, 3 rounds.
# Usage: bash benches/proxy_overhead.sh <path/to/ebb> [seconds]
set -euo pipefail
ebb=${1:?usage: proxy_overhead.sh <path/to/ebb> [seconds]}
secs=${2:-10}
dir=$(mktemp -d /tmp/ebb-proxy.XXXX)
port=$((20000 + RANDOM % 20000))
EBB_LOG=warn "$ebb" local --data-dir "$dir/data" --listen "127.0.0.1:$port" --pool-size 1 --idle-timeout 1h >/dev/null &
pid=$!
trap 'kill -TERM $pid; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
pgbench -q -i -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
# The compute stays bound (idle timeout 1h); find its address.
psql -h 127.0.0.1 -p "$port" -U postgres -c "select 1" postgres >/dev/null
for _ in $(seq 50); do
  direct=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(next((c for x in d["databases"] if x["name"]=="postgres" for c in x.get("computes",[])), ""))' "$dir/data/status.json" 2>/dev/null || true)
  [ -n "$direct" ] && break; sleep 0.2
done
dport=${direct##*:}
run() { pgbench -S -M prepared -c 4 -j 2 -T "$secs" -h 127.0.0.1 -p "$1" -U postgres postgres 2>/dev/null | awk '/^tps/ {print $3}'; }
for round in 1 2 3; do
  echo "round=$round proxy_tps=$(run "$port") direct_tps=$(run "$dport")"
done

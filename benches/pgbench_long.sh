#!/usr/bin/env bash
# TPC-B for longer than a checkpoint: starts `ebb local` (one compute),
# loads scale 1 and runs `pgbench -c 4 -j 2 -T 135 -P 15`; over seconds
# 70..130 (after the first checkpoints, which fall due every 60 s or every
# 10 000 WAL objects) it counts the CPU time and context switches of the
# `ebb local` process (proxy + storage) and of the compute. Prints the
# progress lines (a stall shows as a latency stddev far above the mean),
# tps, and the CPU of each process over those 60 s.
# Usage: bash benches/pgbench_long.sh <path/to/ebb>
set -euo pipefail
ebb=${1:?usage: pgbench_long.sh <path/to/ebb>}
dir=$(mktemp -d /tmp/ebb-long.XXXX)
port=$((40000 + RANDOM % 10000))
EBB_LOG=warn "$ebb" local --data-dir "$dir/data" --listen "127.0.0.1:$port" --pool-size 1 --idle-timeout 1h >"$dir/log" 2>&1 &
local_pid=$!
trap 'kill -TERM $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
pgbench -q -i -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
pgbench -c 4 -j 2 -T 135 -P 15 -h 127.0.0.1 -p "$port" -U postgres postgres >"$dir/pgbench" 2>&1 &
bench=$!
sleep 70
compute_pid=$(pgrep -f " compute " -P "$local_pid" | head -1)
perf stat -e task-clock,context-switches -p "$local_pid" -- sleep 60 >"$dir/local.stat" 2>&1 &
cpu_local=$!
perf stat -e task-clock,context-switches -p "$compute_pid" -- sleep 60 >"$dir/compute.stat" 2>&1 &
cpu_compute=$!
wait "$bench" "$cpu_local" "$cpu_compute"
grep -E "^progress|^tps" "$dir/pgbench"
for who in local compute; do
  awk -v who="$who" '
    /task-clock/ {ms = $1; gsub(",", "", ms)}
    /context-switches/ {cs = $1; gsub(",", "", cs)}
    END {printf "%s_cpu_msec_in_60s=%s context_switches=%s\n", who, ms, cs}' "$dir/$who.stat"
done

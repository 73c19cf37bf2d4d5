#!/usr/bin/env bash
# CPU per statement of each ebb process under pgbench: starts `ebb local`
# (one compute), loads scale 1, runs pgbench and, 2 s in, counts 5 s of CPU
# (`perf stat -e task-clock,context-switches`) of the `ebb local` process
# (proxy + storage), of the compute and of pgbench. Prints tps and, per process, CPU
# time, CPU per transaction (msec / window / tps) and context switches per
# transaction. Mode `tpcb-long` runs TPC-B for 135 s with progress lines
# every 15 s (a stall shows as a latency stddev far above the mean) and
# counts seconds 70..130, after the first checkpoints (due every 60 s or
# every 10 000 WAL objects). With `direct` as the fourth argument it starts
# `ebb storage` and an `ebb compute` bound to `postgres` instead (pgbench
# reaching the compute, as issue 3 measures it) and counts both processes.
# Usage: bash benches/pgbench_cpu.sh <path/to/ebb> select|tpcb|tpcb-long [seconds] [local|direct]
set -euo pipefail
usage="usage: pgbench_cpu.sh <path/to/ebb> select|tpcb|tpcb-long [seconds] [local|direct]"
ebb=${1:?$usage}
mode=${2:?$usage}
secs=${3:-12}
topology=${4:-local}
warmup=2
window=5
case $mode in
  select) args=(-S -M prepared -c 4 -j 2) ;;
  tpcb) args=(-r -c 4 -j 2) ;;
  tpcb-long) args=(-c 4 -j 2 -P 15); secs=${3:-135}; warmup=70; window=60 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
dir=$(mktemp -d /tmp/ebb-cpu.XXXX)
port=$((40000 + RANDOM % 10000))
case $topology in
  local)
    EBB_LOG=warn "$ebb" local --data-dir "$dir/data" --listen "127.0.0.1:$port" --pool-size 1 --idle-timeout 1h >"$dir/log" 2>&1 &
    local_pid=$!
    trap 'kill -TERM $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$dir"' EXIT
    ;;
  direct)
    EBB_LOG=warn "$ebb" storage --listen "127.0.0.1:$((port + 1))" --object-store "file://$dir/objects" --cache-dir "$dir/cache" >"$dir/storage.log" 2>&1 &
    storage_pid=$!
    sleep 1
    EBB_LOG=warn "$ebb" compute --listen "127.0.0.1:$port" --storage "http://127.0.0.1:$((port + 1))" --database postgres >"$dir/log" 2>&1 &
    compute_pid=$!
    trap 'kill -TERM $compute_pid $storage_pid 2>/dev/null; wait $compute_pid $storage_pid 2>/dev/null; rm -rf "$dir"' EXIT
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
pgbench -q -i -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
pgbench "${args[@]}" -T "$secs" -h 127.0.0.1 -p "$port" -U postgres postgres >"$dir/pgbench" 2>&1 &
bench=$!
sleep "$warmup"
if [ "$topology" = local ]; then
  compute_pid=$(pgrep -f " compute " -P "$local_pid" | head -1)
  other=local other_pid=$local_pid
else
  other=storage other_pid=$storage_pid
fi
cpu() { perf stat -e task-clock,context-switches -p "$2" -- sleep "$window" >"$dir/$1.stat" 2>&1; }
cpu "$other" "$other_pid" &
cpu_local=$!
cpu compute "$compute_pid" &
cpu_compute=$!
cpu pgbench "$bench" &
cpu_pgbench=$!
wait "$bench" "$cpu_local" "$cpu_compute" "$cpu_pgbench"
grep -E "^progress|^tps" "$dir/pgbench"
tps=$(awk '/^tps/ {print $3}' "$dir/pgbench")
for who in "$other" compute pgbench; do
  awk -v who="$who" -v tps="$tps" -v window="$window" '
    /task-clock/ {ms = $1; gsub(",", "", ms)}
    /context-switches/ {cs = $1; gsub(",", "", cs)}
    END {printf "%s_cpu_msec=%s cpu_per_txn_ms=%.3f context_switches_per_txn=%.1f\n", who, ms, ms / window / tps, cs / window / tps}' "$dir/$who.stat"
done
if [ "$mode" = tpcb ]; then sed -n '/statement latencies/,$p' "$dir/pgbench"; fi

#!/usr/bin/env bash
# CPU per statement of each ebb process under pgbench: starts `ebb local`
# (one compute), loads scale 1, runs pgbench and, 2 s in, counts 5 s of CPU
# (`perf stat -e task-clock`) of the `ebb local` process (proxy + storage)
# and of the compute. Prints tps and each process's CPU time; CPU per
# transaction = msec / 5 / tps.
# Usage: bash benches/pgbench_cpu.sh <path/to/ebb> select|tpcb [seconds]
set -euo pipefail
ebb=${1:?usage: pgbench_cpu.sh <path/to/ebb> select|tpcb [seconds]}
mode=${2:?usage: pgbench_cpu.sh <path/to/ebb> select|tpcb [seconds]}
secs=${3:-12}
case $mode in
  select) args=(-S -M prepared -c 4 -j 2) ;;
  tpcb) args=(-r -c 4 -j 2) ;;
  *) echo "mode is select or tpcb" >&2; exit 2 ;;
esac
dir=$(mktemp -d /tmp/ebb-cpu.XXXX)
port=$((40000 + RANDOM % 10000))
EBB_LOG=warn "$ebb" local --data-dir "$dir/data" --listen "127.0.0.1:$port" --pool-size 1 --idle-timeout 1h >"$dir/log" 2>&1 &
local_pid=$!
trap 'kill -TERM $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
pgbench -q -i -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
pgbench "${args[@]}" -T "$secs" -h 127.0.0.1 -p "$port" -U postgres postgres >"$dir/pgbench" 2>&1 &
bench=$!
sleep 2
compute_pid=$(pgrep -f " compute " -P "$local_pid" | head -1)
cpu() { perf stat -e task-clock -p "$2" -- sleep 5 2>&1 | awk -v who="$1" '/task-clock/ {print who "_cpu_msec=" $1}'; }
cpu local "$local_pid" &
cpu_local=$!
cpu compute "$compute_pid" &
cpu_compute=$!
wait "$bench" "$cpu_local" "$cpu_compute"
grep -E "^tps" "$dir/pgbench"
if [ "$mode" = tpcb ]; then sed -n '/statement latencies/,$p' "$dir/pgbench"; fi

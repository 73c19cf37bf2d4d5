#!/usr/bin/env bash
# pgbench against `ebb local` (through its proxy), against an `ebb compute`
# reached directly (with its own `ebb storage`: the compute node alone, as
# issue 3 measures it) and PostgreSQL 15 on the same machine: scale 1,
# select-only with prepared statements and TPC-B, 4 clients, plus count/sum
# over pgbench_accounts at scale 10 (each timing includes psql's start and
# its connection). All over TCP on 127.0.0.1.
# Select-only is measured after a warm-up run of the same length on every
# system: PostgreSQL's shared buffers hold the rows `pgbench -i` just wrote,
# ebb's compute fills its row cache as rows are read.
# Usage: bash benches/pgbench_compare.sh <path/to/ebb> [seconds]   (runs PostgreSQL as user postgres)
set -euo pipefail
ebb=${1:?usage: pgbench_compare.sh <path/to/ebb> [seconds]}
secs=${2:-10}
bin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/ebb-pgbench.XXXX)
chown postgres "$dir"
pg_port=$((20000 + RANDOM % 10000))
ebb_port=$((30000 + RANDOM % 10000))
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$bin/initdb" -D "$dir/pg" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -o "-p $pg_port -k $dir -c max_connections=50" start >/dev/null
EBB_LOG=warn "$ebb" local --data-dir "$dir/ebb" --listen "127.0.0.1:$ebb_port" --pool-size 1 --idle-timeout 1h >/dev/null &
ebb_pid=$!
storage_port=$((ebb_port + 1)) compute_port=$((ebb_port + 2))
EBB_LOG=warn "$ebb" storage --listen "127.0.0.1:$storage_port" --object-store "file://$dir/direct/objects" --cache-dir "$dir/direct/cache" >/dev/null 2>&1 &
storage_pid=$!
trap 'kill -TERM $ebb_pid $storage_pid ${compute_pid:-} 2>/dev/null; wait $ebb_pid 2>/dev/null; as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast stop >/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$ebb_port" && break; sleep 0.2; done
sleep 1
EBB_LOG=warn "$ebb" compute --listen "127.0.0.1:$compute_port" --storage "http://127.0.0.1:$storage_port" --database postgres >/dev/null 2>&1 &
compute_pid=$!
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$compute_port" && break; sleep 0.2; done

tps() { awk '/^tps/ {print $3}'; }
bench() { # system host port
  local host=$2 port=$3
  pgbench -q -i -s 1 -h "$host" -p "$port" -U postgres postgres >/dev/null 2>&1
  local s t
  pgbench -S -M prepared -c 4 -j 2 -T "$secs" -h "$host" -p "$port" -U postgres postgres >/dev/null 2>&1
  s=$(pgbench -S -M prepared -c 4 -j 2 -T "$secs" -h "$host" -p "$port" -U postgres postgres 2>/dev/null | tps)
  t=$(pgbench -c 4 -j 2 -T "$secs" -h "$host" -p "$port" -U postgres postgres 2>/dev/null | tps)
  echo "$1 select_only_tps=$s tpcb_tps=$t"
}
bench postgresql15 127.0.0.1 "$pg_port"
bench ebb 127.0.0.1 "$ebb_port"
bench ebb_compute_direct 127.0.0.1 "$compute_port"

count_sum() { # label host port: median of 3 timings of the query
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s%N)
    psql -X -q -h "$2" -p "$3" -U postgres -c "SELECT count(*), sum(abalance) FROM pgbench_accounts" postgres >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
  done | sort -n | sed -n 2p | xargs -I{} echo "$1={}"
}
load10() { pgbench -q -i -s 10 -I dtg -h "$1" -p "$2" -U postgres postgres >/dev/null 2>&1; }
load10 127.0.0.1 "$pg_port"
count_sum "postgresql15 count_sum_scale10_median_ms(after_load)" 127.0.0.1 "$pg_port"
load10 127.0.0.1 "$ebb_port"
count_sum "ebb count_sum_scale10_median_ms(after_load)" 127.0.0.1 "$ebb_port"
load10 127.0.0.1 "$compute_port"
count_sum "ebb_compute_direct count_sum_scale10_median_ms(after_load)" 127.0.0.1 "$compute_port"
# ebb's first checkpoint (60 s by default) comes meanwhile: the steady state
# of a table loaded a while ago. The first query after a minute's idling
# is slow on these machines whatever answers it (PostgreSQL's too: ~250 ms
# against ~85), so PostgreSQL is timed again after the same pause.
sleep 70
count_sum "postgresql15 count_sum_scale10_median_ms(after_idle)" 127.0.0.1 "$pg_port"
count_sum "ebb count_sum_scale10_median_ms(after_idle)" 127.0.0.1 "$ebb_port"
count_sum "ebb_compute_direct count_sum_scale10_median_ms(after_idle)" 127.0.0.1 "$compute_port"
kill -TERM "$compute_pid" "$storage_pid"; wait "$compute_pid" "$storage_pid" 2>/dev/null || true

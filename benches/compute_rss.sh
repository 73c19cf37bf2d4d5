#!/usr/bin/env bash
# Resident memory (VmRSS, KiB) of unbound `ebb compute` processes, each read 0.5 s after it
# listens, against one `ebb storage` on a temporary directory.
# Usage: bash benches/compute_rss.sh <path/to/ebb> [computes]
set -euo pipefail
ebb=${1:?usage: compute_rss.sh <path/to/ebb> [computes]}
n=${2:-5}
d=$(mktemp -d /tmp/rss.XXXX)
sp=$((41000 + RANDOM % 5000))
EBB_LOG=warn $ebb storage --listen 127.0.0.1:$sp --object-store file://$d/obj --cache-dir $d/cache >$d/s.log 2>&1 &
spid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$sp) 2>/dev/null && break; sleep 0.1; done
for _ in $(seq "$n"); do
  cp=$((46000 + RANDOM % 5000))
  EBB_LOG=warn $ebb compute --listen 127.0.0.1:$cp --storage http://127.0.0.1:$sp >$d/c.log 2>&1 &
  cpid=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$cp) 2>/dev/null && break; sleep 0.05; done
  sleep 0.5
  grep VmRSS /proc/$cpid/status | awk '{print $2}'
  kill "$cpid"; wait "$cpid" 2>/dev/null || true
done
kill "$spid"; wait "$spid" 2>/dev/null || true; rm -rf "$d"

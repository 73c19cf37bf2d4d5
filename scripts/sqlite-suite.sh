#!/usr/bin/env bash
# Runs SQLite's sqllogictest select suite (select1-5) against real ebb
# storage and compute processes and prints the pass rate of each file.
# Usage: bash scripts/sqlite-suite.sh [DIR]   (default: ../shared/sqllogictest/sqlite)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-../shared/sqllogictest/sqlite}
files=""
for f in "$dir"/select*.test; do files="$files $(realpath "$f")"; done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ebb/target}"
EBB_SLT_MIN_RATE="${EBB_SLT_MIN_RATE:-0}" EBB_SLT_FILES="$files" exec cargo nextest run -p ebb --test e2e --no-capture --no-fail-fast \
  sqlite_suite

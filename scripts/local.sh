#!/usr/bin/env bash
# Runs `ebb local` from this checkout: installs libclang-dev (RocksDB's build
# needs it) when missing, builds the release binary, and starts it with the
# given flags (`bash scripts/local.sh --help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "installing libclang-dev (needed to build RocksDB)"
  sudo_if_needed=""; [ "$(id -u)" -ne 0 ] && sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq libclang-dev >/dev/null
fi
exec cargo run --release --bin ebb -- local "$@"

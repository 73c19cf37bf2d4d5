#!/usr/bin/env bash
# The test command of the README: every crate's unit tests, each crate's one
# integration-test binary, and the end-to-end tests that start the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --no-fail-fast "$@"

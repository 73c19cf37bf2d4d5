#!/usr/bin/env bash
# Secondary indexes and foreign keys under pgbench, against `ebb local`:
# lookups by a non-key column of a 100 000-row table without and with an
# index on it, and inserts of rows referencing another table without and
# with a FOREIGN KEY. 4 clients, simple protocol.
# Usage: bash benches/index_lookup.sh <path/to/ebb> [seconds]
set -euo pipefail
ebb=${1:?usage: index_lookup.sh <path/to/ebb> [seconds]}
secs=${2:-10}
dir=$(mktemp -d /tmp/ebb-index.XXXX)
port=$((30000 + RANDOM % 10000))
EBB_LOG=warn "$ebb" local --data-dir "$dir/ebb" --listen "127.0.0.1:$port" --pool-size 1 --idle-timeout 1h >/dev/null &
ebb_pid=$!
trap 'kill -TERM $ebb_pid; wait $ebb_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
sql() { psql -X -q -h 127.0.0.1 -p "$port" -U postgres postgres -c "$1" >/dev/null; }
run() { # label script
  echo "$2" > "$dir/script.sql"
  local tps
  tps=$(pgbench -n -f "$dir/script.sql" -c 4 -j 2 -T "$secs" -h 127.0.0.1 -p "$port" -U postgres postgres 2>/dev/null | awk '/^tps/ {print $3}')
  echo "$1 tps=$tps"
}
sql "CREATE TABLE people (id int PRIMARY KEY, email text, age int)"
sql "INSERT INTO people SELECT i, 'p' || i || '@x', i % 90 FROM generate_series(1, 100000) AS s(i)"
lookup="\\set n random(1, 100000)
SELECT id, age FROM people WHERE email = 'p' || :n || '@x';"
run "lookup_without_index" "$lookup"
sql "CREATE INDEX people_email_idx ON people (email)"
run "lookup_with_index" "$lookup"
sql "CREATE TABLE visits (id bigserial PRIMARY KEY, person int, at timestamp DEFAULT now())"
insert="\\set n random(1, 100000)
INSERT INTO visits (person) VALUES (:n);"
run "insert_without_foreign_key" "$insert"
sql "TRUNCATE visits"
sql "ALTER TABLE visits ADD FOREIGN KEY (person) REFERENCES people"
run "insert_with_foreign_key" "$insert"

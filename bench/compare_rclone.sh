#!/usr/bin/env bash
# pqsync vs rclone on a ParqueDB tree of ~20,000 small files, both talking to
# the same single-node Garage server on 127.0.0.1, measured in one run.
#
#   bench/compare_rclone.sh [EXTRA_FILES] [CONCURRENCY]
#
# For each tool it measures (a) the first push, (b) a status / dry-run of the
# unchanged tree, (c) a push after one file changed: wall time, CPU time, peak
# RSS, and the S3 requests Garage counted (api_s3_request_counter).
# Needs rclone (Debian package) and curl; builds pqsync and Garage if needed.
# Not part of CI: it prints numbers, it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-20000}
conc=${2:-8}
export PATH="$HOME/.cargo/bin:$PATH"

command -v rclone >/dev/null || { echo "install rclone (apt-get install rclone)" >&2; exit 1; }
cargo build --release -q -p pqsync -p pqsync-testdata
pq=$PWD/target/release/pqsync
work=$(mktemp -d)
garage_dir="$work/garage"
mkdir -p "$garage_dir"
export GARAGE_S3_PORT=${GARAGE_S3_PORT:-3910} GARAGE_RPC_PORT=${GARAGE_RPC_PORT:-3911} GARAGE_ADMIN_PORT=${GARAGE_ADMIN_PORT:-3913}
cleanup() { .ci/garage.sh stop "$garage_dir"; rm -rf "$work"; }
trap cleanup EXIT
eval "$(.ci/garage.sh start "$garage_dir")"

./target/release/pqsync-testdata --out "$work/db" --extra-files "$extra" >/dev/null
files=$(find "$work/db" -type f | wc -l)
# Give the tree an mtime in the past, as for a database written earlier.
find "$work/db" -type f -exec touch -d '1 hour ago' {} +

# A custom CA bundle is irrelevant for plain-http loopback and breaks rclone's
# http transport.
unset AWS_CA_BUNDLE
export AWS_ACCESS_KEY_ID=$PQSYNC_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$PQSYNC_TEST_S3_SECRET_KEY
export AWS_REGION=garage AWS_ENDPOINT_URL=$PQSYNC_TEST_S3_ENDPOINT AWS_ALLOW_HTTP=true
export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENV_AUTH=false
export RCLONE_CONFIG_G_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export RCLONE_CONFIG_G_ENDPOINT=$PQSYNC_TEST_S3_ENDPOINT RCLONE_CONFIG_G_REGION=garage RCLONE_CONFIG_G_FORCE_PATH_STYLE=true

requests() {
    curl -s "127.0.0.1:$GARAGE_ADMIN_PORT/metrics" |
        awk '/^api_s3_request_counter/ {s += $NF} END {print s + 0}'
}

results=()
# measure LABEL TOOL CMD...: runs CMD, records wall/cpu/rss/requests.
measure() {
    local label=$1 tool=$2
    shift 2
    local before after t
    before=$(requests)
    if ! /usr/bin/time -o "$work/time" -f '%e %U %S %M' "$@" >/dev/null 2>"$work/err"; then
        echo "$label ($tool) failed:" >&2
        tail -5 "$work/err" >&2
    fi
    t=$(tail -1 "$work/time")
    after=$(requests)
    read -r wall user sys rss <<<"$t"
    local cpu
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
    results+=("$label|$tool|$wall|$cpu|$((rss / 1024))|$((after - before))")
}

db=$work/db
measure "a first push" pqsync "$pq" --no-progress --concurrency "$conc" push "s3://pqsync-test/pq" -d "$db"
measure "a first push" rclone rclone sync "$db" "g:pqsync-test/rc" --transfers "$conc" --checkers "$conc"
measure "b status, unchanged" pqsync "$pq" --no-progress status -d "$db"
measure "b status, unchanged" rclone rclone sync "$db" "g:pqsync-test/rc" --dry-run --transfers "$conc" --checkers "$conc"
printf 'one more line\n' >>"$db/_meta/schema.json"
measure "c push, 1 changed" pqsync "$pq" --no-progress --concurrency "$conc" push -d "$db"
measure "c push, 1 changed" rclone rclone sync "$db" "g:pqsync-test/rc" --transfers "$conc" --checkers "$conc"

echo
echo "$files files, concurrency/transfers $conc, Garage 2.5 on 127.0.0.1, $(nproc) cores"
printf '%-22s %-7s %9s %9s %10s %9s\n' "operation" "tool" "wall s" "cpu s" "rss MiB" "requests"
for r in "${results[@]}"; do
    IFS='|' read -r label tool wall cpu rss req <<<"$r"
    printf '%-22s %-7s %9s %9s %10s %9s\n' "$label" "$tool" "$wall" "$cpu" "$rss" "$req"
done
echo
echo "ratios (pqsync / rclone):"
for op in "a first push" "b status, unchanged" "c push, 1 changed"; do
    p=$(printf '%s\n' "${results[@]}" | awk -F'|' -v op="$op" '$1 == op && $2 == "pqsync" {print $3, $6}')
    c=$(printf '%s\n' "${results[@]}" | awk -F'|' -v op="$op" '$1 == op && $2 == "rclone" {print $3, $6}')
    awk -v op="$op" -v p="$p" -v c="$c" 'BEGIN {
        split(p, a, " "); split(c, b, " ");
        printf "  %-22s time %.3f   requests %d vs %d\n", op, (b[1] > 0 ? a[1] / b[1] : 0), a[2], b[2]
    }'
done

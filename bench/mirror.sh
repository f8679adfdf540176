#!/usr/bin/env bash
# Mirror and fan-out benchmarks against rclone, one run on one machine:
#
# - the 20k tree mirrored between two buckets of one Garage (pqsync copies
#   inside the store; rclone sync copies server-side too);
# - fan-out of the 20k tree from Garage to 3 directories, against 3 rclone
#   runs (pqsync reads each object once; rclone once per destination);
# - a pull of the 20k tree into an empty directory, against rclone copy;
# - the first push of the 20k tree at --concurrency 8 and 32, against
#   rclone at the same --transfers.
#
#   bench/mirror.sh [FILES [MARKER]]   # FILES small files (default 20000)
#
# Garage runs on ports 3950-3953. The table goes between the MARKER
# markers in docs/benchmarks.md (default `bench-mirror`; the 100,000-file
# run uses `bench-mirror-100k`). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
files=${1:-20000}
marker=${2:-bench-mirror}
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=bench/lib.sh
. bench/lib.sh
need_apt rclone
[ -x /usr/bin/time ] || need_apt time
cargo build --release -q -p pqsync -p pqsync-testdata
pq=$repo/target/release/pqsync
gen=$repo/target/release/pqsync-testdata

work=$(mktemp -d /tmp/pqsync-mirror-bench.XXXXXX)
garage_dir=$work/garage
mkdir -p "$garage_dir"
export GARAGE_S3_PORT=3950 GARAGE_RPC_PORT=3951 GARAGE_ADMIN_PORT=3953
cleanup() {
    .ci/garage.sh stop "$garage_dir"
    rm -rf "$work"
}
trap cleanup EXIT
eval "$(.ci/garage.sh start "$garage_dir" 2>/dev/null)"
b1=$PQSYNC_TEST_S3_BUCKET
b2=$PQSYNC_TEST_S3_BUCKET2
id=$(date +%s)
garage_clients
# rc N ARGS...: rclone with N transfers and checkers, skipping pqsync's own
# files as pqsync does (a script, so /usr/bin/time can run it).
rc=$work/rc
cat >"$rc" <<'SH'
#!/bin/sh
n=$1
shift
exec rclone --transfers "$n" --checkers "$n" --exclude "_meta/.pqsync/**" --exclude "_meta/manifest.json" "$@"
SH
chmod +x "$rc"
export rc
pqs=("$pq" --no-progress -q)
results=()
reset=

"$gen" --out "$work/small" --extra-files "$files" >/dev/null
find "$work/small" -type f -exec touch -d '1 hour ago' {} +
count=$(find "$work/small" -type f | wc -l)

# First push at 8 and 32 in flight; the pushed copies are the sources below.
for c in 8 32; do
    # A fresh state folder each time: the push hashes every file.
    run "first push, $c in flight" pqsync 1 env PQSYNC_STATE_DIR="$work/state-$c" \
        "${pqs[@]}" push --concurrency "$c" "s3://$b1/pq$c-$id" -d "$work/small"
    run "first push, $c in flight" rclone 1 "$rc" "$c" sync "$work/small" "g:$b1/rc$c-$id"
done
# The tree between two buckets of one store.
run "mirror between buckets" pqsync 1 "${pqs[@]}" mirror "s3://$b1/pq8-$id" "s3://$b2/pqm-$id"
run "mirror between buckets" rclone 1 "$rc" 8 sync "g:$b1/rc8-$id" "g:$b2/rcm-$id"
run "mirror between buckets, unchanged" pqsync 1 "${pqs[@]}" mirror "s3://$b1/pq8-$id" "s3://$b2/pqm-$id"
run "mirror between buckets, unchanged" rclone 1 "$rc" 8 sync "g:$b1/rc8-$id" "g:$b2/rcm-$id"
# A pull into an empty directory.
run "pull into an empty directory" pqsync 1 env PQSYNC_STATE_DIR="$work/state-pull" "${pqs[@]}" pull --concurrency 8 "s3://$b1/pq8-$id" -d "$work/pull-pq"
run "pull into an empty directory" rclone 1 "$rc" 8 copy "g:$b1/rc8-$id" "$work/pull-rc"
# Fan-out to three directories.
fan_rc() { for d in 1 2 3; do "$rc" 8 copy "g:$1" "$2/rc-$d" || return 1; done; }
export -f fan_rc
run "fan-out to 3 directories" pqsync 1 "${pqs[@]}" mirror "s3://$b1/pq8-$id" "$work/fan/pq-1" "$work/fan/pq-2" "$work/fan/pq-3"
run "fan-out to 3 directories" rclone 1 bash -c 'fan_rc "$0" "$1"' "$b1/rc8-$id" "$work/fan"
for d in 1 2 3; do
    diff -rq -x _meta "$work/small" "$work/fan/pq-$d" >/dev/null || echo "bench: fan-out copy $d differs" >&2
done

table=$work/table.md
{
    echo "| case | pqsync | rclone | ratio | target | |"
    echo "|---|---:|---:|---:|---:|---|"
    row() { # LABEL TARGET
        local p c r
        p=$(get "$1" pqsync 3)
        c=$(get "$1" rclone 3)
        r=$(ratio "$p" "$c")
        echo "| $1 | ${p} s, $(get "$1" pqsync 6) req | ${c} s, $(get "$1" rclone 6) req | ${r}× | ${2:+≤ $2×} | ${2:+$(verdict "$r" "$2")} |"
    }
    row "first push, 8 in flight" 0.6
    row "first push, 32 in flight" 0.6
    row "mirror between buckets" ""
    row "mirror between buckets, unchanged" ""
    row "pull into an empty directory" 0.5
    row "fan-out to 3 directories" ""
    echo
    measurements
    echo
    echo "Tree: $count files. Requests are Garage's own count (for fan-out, the source's reads and the destinations' nothing: they are directories)."
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); pqsync $(git -C "$repo" rev-parse --short HEAD), $(rclone --version | head -1), Garage 2.5.0; run on $(date -u +%Y-%m-%d)."
} >"$table"
cat "$table"
write_between "$repo/docs/benchmarks.md" "$marker" "$table"

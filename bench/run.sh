#!/usr/bin/env bash
# pqsync's benchmark harness: every target of the performance issue, measured
# against its peer in one run on one machine.
#
#   bench/run.sh            # everything, including the 1,000,000-file tree
#   bench/run.sh --quick    # skip the 1,000,000-file tree
#
# It builds pqsync and the testdata generator (release), installs b3sum
# with cargo and rclone/rsync with apt-get when they are missing, generates
# the trees under $PQSYNC_BENCH_DIR (default: a fresh temporary directory),
# starts a single-node Garage on 127.0.0.1 (ports 3940-3943) whose own
# request counter gives the request counts, and measures wall time, CPU time
# and peak RSS with /usr/bin/time. Short operations run 5 times and report
# the median run.
#
# It prints a table of ratios (pqsync / peer) and writes it, with a
# description of the machine, between the markers in docs/benchmarks.md.
# Not part of CI; nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
conc=8
export PATH="$HOME/.cargo/bin:$PATH"

# --- tools -----------------------------------------------------------------
# shellcheck source=bench/lib.sh
. bench/lib.sh
need_apt rclone
need_apt rsync
command -v b3sum >/dev/null || cargo install b3sum --locked -q
[ -x /usr/bin/time ] || need_apt time
cargo build --release -q -p pqsync -p pqsync-testdata
pq=$repo/target/release/pqsync
gen=$repo/target/release/pqsync-testdata

work=${PQSYNC_BENCH_DIR:-$(mktemp -d /tmp/pqsync-bench.XXXXXX)}
mkdir -p "$work"
garage_dir=$work/garage
mkdir -p "$garage_dir"
export GARAGE_S3_PORT=3940 GARAGE_RPC_PORT=3941 GARAGE_ADMIN_PORT=3943
cleanup() {
    .ci/garage.sh stop "$garage_dir"
    [ -n "${PQSYNC_BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
eval "$(.ci/garage.sh start "$garage_dir" 2>/dev/null)"
bucket=$PQSYNC_TEST_S3_BUCKET
run_id=$(date +%s)

garage_clients
# rclone skips pqsync's own files, as pqsync does.
rc=(rclone --transfers "$conc" --checkers "$conc" --exclude "_meta/.pqsync/**" --exclude "_meta/manifest.json")
pqs=("$pq" --no-progress -q)
# Sync flags go after the command they belong to.
tx=(--concurrency "$conc")


# --- trees -----------------------------------------------------------------
age() { find "$1" -type f -exec touch -d '1 hour ago' {} +; }
echo "bench: generating trees in $work" >&2
"$gen" --out "$work/small" --extra-files 20000 >/dev/null
age "$work/small"
small_files=$(find "$work/small" -type f | wc -l)
# One 2 GiB file (in a tree of its own, for upload and download).
"$gen" --out "$work/bigsrc" --namespaces 0 --segments 0 --extra-files 0 --big-file-mib 2048 >/dev/null
mkdir -p "$work/big"
mv "$work/bigsrc/snapshots/big/data.parquet" "$work/big/data.parquet"
rm -rf "$work/bigsrc"
age "$work/big"
big_bytes=$(stat -c %s "$work/big/data.parquet")
# A 1 GiB ParqueDB database.
"$gen" --out "$work/gib" --namespaces 6 --rows 200000 --segments 40 --events-per-segment 8000 \
    --extra-files 2000 --big-file-mib 640 >/dev/null
age "$work/gib"
gib_bytes=$(du -sb "$work/gib" | cut -f1)
if [ "$quick" = 0 ]; then
    "$gen" --out "$work/million" --namespaces 1 --rows 10 --segments 1 --events-per-segment 10 \
        --extra-files 1000000 >/dev/null
    age "$work/million"
    million_files=$(find "$work/million" -type f | wc -l)
fi

# --- measuring (run, in bench/lib.sh) ----------------------------------------
results=()
reset=

# 1. Hashing a cold tree: 2 GiB file + 1 GiB database. `init
# --rebuild-manifest` drops the stat cache first, so every run reads every
# file.
hash_pq() { "$pq" -q init --rebuild-manifest -d "$work/big" && "$pq" -q init --rebuild-manifest -d "$work/gib"; }
hash_b3() { find "$work/big" "$work/gib" -type f ! -path '*/_meta/*' -print0 | xargs -0 b3sum >/dev/null; }
export -f hash_pq hash_b3
export pq work
run "hash cold 3 GiB" pqsync 5 bash -c hash_pq
run "hash cold 3 GiB" b3sum 5 bash -c hash_b3

# 2. 20,000 small files.
run "20k first push" pqsync 1 "${pqs[@]}" push "${tx[@]}" "s3://$bucket/pq-$run_id" -d "$work/small"
run "20k first push" rclone 1 "${rc[@]}" sync "$work/small" "g:$bucket/rc-$run_id"
run "20k status unchanged" pqsync 5 "${pqs[@]}" status -d "$work/small"
run "20k status unchanged" rclone 5 "${rc[@]}" sync --dry-run "$work/small" "g:$bucket/rc-$run_id"
printf 'one more line\n' >>"$work/small/_meta/schema.json"
run "20k push 1 changed" pqsync 1 "${pqs[@]}" push "${tx[@]}" -d "$work/small"
run "20k push 1 changed" rclone 1 "${rc[@]}" sync "$work/small" "g:$bucket/rc-$run_id"
printf 'and another\n' >>"$work/small/_meta/schema.json"
run "20k push 1 changed, --force" pqsync 1 "${pqs[@]}" push "${tx[@]}" --force -d "$work/small"

# 3. One 2 GiB file up and down.
run "2 GiB upload" pqsync 1 "${pqs[@]}" push "${tx[@]}" "s3://$bucket/bpq-$run_id" -d "$work/big"
run "2 GiB upload" rclone 1 "${rc[@]}" copy "$work/big" "g:$bucket/brc-$run_id"
run "2 GiB download" pqsync 1 "${pqs[@]}" pull "${tx[@]}" "s3://$bucket/bpq-$run_id" -d "$work/down-pq"
run "2 GiB download" rclone 1 "${rc[@]}" copy "g:$bucket/brc-$run_id" "$work/down-rc"
rm -rf "$work/down-pq" "$work/down-rc"

# 4. The 1 GiB database: verify.
run "1 GiB db push" pqsync 1 "${pqs[@]}" push "${tx[@]}" "s3://$bucket/gpq-$run_id" -d "$work/gib"
run "1 GiB db verify" pqsync 1 "${pqs[@]}" verify "${tx[@]}" "s3://$bucket/gpq-$run_id"
run "1 GiB db verify --quick" pqsync 1 "${pqs[@]}" verify "${tx[@]}" --quick "s3://$bucket/gpq-$run_id"

# 5. 1,000,000 files: status memory, against rsync -an.
if [ "$quick" = 0 ]; then
    run "1M first push (dir remote)" pqsync 1 "${pqs[@]}" push "${tx[@]}" "file://$work/million-remote" -d "$work/million"
    run "1M status unchanged" pqsync 3 "${pqs[@]}" status -d "$work/million"
    rsync -a "$work/million/" "$work/million-copy/"
    run "1M status unchanged" rsync 3 rsync -an "$work/million/" "$work/million-copy/"
fi

# --- report ----------------------------------------------------------------
table=$work/table.md
{
    echo "| target | pqsync | peer | ratio | target | |"
    echo "|---|---:|---:|---:|---:|---|"
    row() { # LABEL PEER TARGET_RATIO [EXTRA]
        local p c r
        p=$(get "$1" pqsync 3)
        c=$(get "$1" "$2" 3)
        r=$(ratio "$p" "$c")
        echo "| $1 (time vs $2) | ${p} s | ${c} s | ${r}× | ≤ $3× | $(verdict "$r" "$3") |"
    }
    row "hash cold 3 GiB" b3sum 1.1
    row "20k status unchanged" rclone 0.2
    echo "| 20k status unchanged (requests) | $(get "20k status unchanged" pqsync 6) | $(get "20k status unchanged" rclone 6) | | ≤ 2 | $(verdict "$(get "20k status unchanged" pqsync 6)" 2) |"
    row "20k push 1 changed" rclone 0.2
    echo "| 20k push 1 changed (requests) | $(get "20k push 1 changed" pqsync 6) | $(get "20k push 1 changed" rclone 6) | | ≤ 4 | $(verdict "$(get "20k push 1 changed" pqsync 6)" 4) |"
    echo "| 20k push 1 changed, --force (requests) | $(get "20k push 1 changed, --force" pqsync 6) | | | ≤ 4 | $(verdict "$(get "20k push 1 changed, --force" pqsync 6)" 4) |"
    row "20k first push" rclone 0.7
    row "2 GiB upload" rclone 1.0
    echo "| 2 GiB upload (peak RSS) | $(get "2 GiB upload" pqsync 5) MiB | $(get "2 GiB upload" rclone 5) MiB | | ≤ 256 MiB | $(verdict "$(get "2 GiB upload" pqsync 5)" 256) |"
    row "2 GiB download" rclone 1.0
    echo "| 2 GiB download (peak RSS) | $(get "2 GiB download" pqsync 5) MiB | $(get "2 GiB download" rclone 5) MiB | | ≤ 256 MiB | $(verdict "$(get "2 GiB download" pqsync 5)" 256) |"
    if [ "$quick" = 0 ]; then
        row "1M status unchanged" rsync 1.0
        rss=$(get "1M status unchanged" pqsync 5)
        per=$(awk -v r="$rss" -v n="$million_files" 'BEGIN {printf "%.0f", r * 1048576 / n}')
        echo "| 1M status unchanged (peak RSS per file) | $per B | | | ≤ 400 B | $(verdict "$per" 400) |"
    fi
    echo
    echo "All measurements (median of 5 runs for hashing and status, else one run):"
    echo
    measurements
    echo
    echo "Trees: $small_files small files; one file of $big_bytes bytes; a database of $gib_bytes bytes$([ "$quick" = 0 ] && echo "; $million_files files for status")."
    echo "Concurrency: pqsync \`--concurrency $conc\`, rclone \`--transfers $conc --checkers $conc\`."
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr);"
    echo "pqsync $("$pq" --version | cut -d' ' -f2) ($(git -C "$repo" rev-parse --short HEAD)), $(rclone --version | head -1), $(rsync --version | head -1 | awk '{print $1, $3}'), $(b3sum --version), Garage 2.5.0 on the same machine; run on $(date -u +%Y-%m-%d)."
} >"$table"
echo
cat "$table"
write_between "$repo/docs/benchmarks.md" bench "$table"

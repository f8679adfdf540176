#!/usr/bin/env bash
# Trees of millions of files, one run on one machine: for each size,
#
# - the first push to a directory remote (peak RSS; target ≤ 1 GiB at 1M);
# - status of the unchanged tree against `rsync -an` over the same tree
#   and a hard-linked copy (time ≤ 1.0×; peak RSS ≤ 400 B a file);
# - a push of the unchanged tree, and a push of one new file (the remote
#   manifest unchanged since the last push, so neither downloads it);
# - a mirror of the pushed remote to a second directory remote;
#
# and, between the two sizes, how much each costs per added file (target
# ≤ 400 B a file for status). The files are empty (only their number
# matters here), 1,000 to a folder, an hour old.
#
#   bench/scale.sh [N...]   # default: 1000000 5000000
#
# The table goes between the `bench-scale` markers in docs/benchmarks.md.
# Not part of CI; nothing here asserts a time. Needs about 2 inodes per
# file of the largest size, and a few GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=bench/lib.sh
. bench/lib.sh
need_apt rsync
[ -x /usr/bin/time ] || need_apt time
cargo build --release -q -p pqsync
pq=$repo/target/release/pqsync
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 5000000)

work=${PQSYNC_BENCH_DIR:-$(mktemp -d /tmp/pqsync-scale.XXXXXX)}
mkdir -p "$work"
cleanup() { [ -n "${PQSYNC_BENCH_DIR:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
export PQSYNC_STATE_DIR=$work/state
# Directory remotes: no request counter to read.
requests() { echo 0; }
results=()
reset=
pqs=("$pq" --no-progress -q)

for n in "${sizes[@]}"; do
    tree=$work/tree-$n
    echo "bench: $n empty files in $tree" >&2
    python3 - "$tree" "$n" <<'EOF'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
old = time.time() - 3600
for i in range(n):
    d = f"{root}/extra/{i // 1000:05d}"
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    p = f"{d}/file-{i:07d}.bin"
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
    os.utime(p, (old, old))
EOF
    run "$n first push (dir remote)" pqsync 1 "${pqs[@]}" push "file://$work/remote-$n" -d "$tree"
    # The first status after a push writes the stat cache; then measure.
    "${pqs[@]}" status -d "$tree" >/dev/null
    run "$n status unchanged" pqsync 3 "${pqs[@]}" status -d "$tree"
    run "$n push unchanged" pqsync 1 "${pqs[@]}" push -d "$tree"
    : >"$tree/extra/new-file.bin"
    run "$n push one new file" pqsync 1 "${pqs[@]}" push -d "$tree"
    rm "$tree/extra/new-file.bin"
    cp -al "$tree" "$work/copy-$n"
    run "$n status unchanged" rsync 3 rsync -an "$tree/" "$work/copy-$n/"
    # The tree and its copy go before the mirror makes a second remote:
    # at 5M files, three trees at once would be 15M inodes.
    rm -rf "$work/copy-$n" "$tree"
    run "$n mirror (dir to dir)" pqsync 1 "${pqs[@]}" mirror "file://$work/remote-$n" "file://$work/mirror-$n"
    rm -rf "$work/mirror-$n" "$work/remote-$n"
done

per_file() { awk -v r="$1" -v n="$2" 'BEGIN {printf "%.0f", r * 1048576 / n}'; }
table=$work/table.md
{
    echo "| case | files | wall s | ratio to rsync -an | peak RSS MiB | per file | target |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for n in "${sizes[@]}"; do
        nice=$(printf "%'d" "$n")
        p=$(get "$n first push (dir remote)" pqsync 3)
        r=$(get "$n first push (dir remote)" pqsync 5)
        target=""
        [ "$n" = 1000000 ] && target="≤ 1024 MiB: $(verdict "$r" 1024)"
        echo "| first push to a directory | $nice | $p | | $r | $(per_file "$r" "$n") B | $target |"
        p=$(get "$n status unchanged" pqsync 3)
        c=$(get "$n status unchanged" rsync 3)
        r=$(get "$n status unchanged" pqsync 5)
        echo "| status, unchanged | $nice | $p | $(ratio "$p" "$c")× ($c s) | $r | $(per_file "$r" "$n") B | ≤ 1.0×: $(verdict "$(ratio "$p" "$c")" 1.0); ≤ 400 B: $(verdict "$(per_file "$r" "$n")" 400) |"
        for c in "push unchanged" "push one new file"; do
            p=$(get "$n $c" pqsync 3)
            r=$(get "$n $c" pqsync 5)
            echo "| ${c/push/push,} | $nice | $p | | $r | $(per_file "$r" "$n") B | |"
        done
        p=$(get "$n mirror (dir to dir)" pqsync 3)
        r=$(get "$n mirror (dir to dir)" pqsync 5)
        echo "| mirror, directory to directory | $nice | $p | | $r | $(per_file "$r" "$n") B | |"
    done
    if [ ${#sizes[@]} -ge 2 ]; then
        a=${sizes[0]} b=${sizes[-1]}
        echo
        echo "Growth from $(printf "%'d" "$a") to $(printf "%'d" "$b") files, per added file (the fixed cost cancels out):"
        echo
        echo "| case | bytes per added file | target |"
        echo "|---|---:|---|"
        for c in "first push (dir remote)" "status unchanged" "mirror (dir to dir)"; do
            ra=$(get "$a $c" pqsync 5) rb=$(get "$b $c" pqsync 5)
            g=$(awk -v x="$ra" -v y="$rb" -v m="$a" -v n="$b" 'BEGIN {printf "%.0f", (y - x) * 1048576 / (n - m)}')
            echo "| $c | $g B | ≤ 400 B: $(verdict "$g" 400) |"
        done
    fi
    echo
    echo "All measurements (median of 3 runs for status, else one run):"
    echo
    measurements
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr), $(df -T "$work" | awk 'NR == 2 {print $2}');"
    echo "pqsync $("$pq" --version | cut -d' ' -f2) ($(git -C "$repo" rev-parse --short HEAD)), $(rsync --version | head -1 | awk '{print $1, $3}'); run on $(date -u +%Y-%m-%d)."
} >"$table"
cat "$table"
write_between docs/benchmarks.md bench-scale "$table"

#!/usr/bin/env bash
# pqsync's snapshot repository against restic, both on one Garage in one run.
#
#   bench/backup.sh            # the 20,000-file tree and the 1 GiB database
#   bench/backup.sh --quick    # the 20,000-file tree only
#
# Installs restic (Debian's package) and rclone with apt-get when missing,
# builds pqsync and the generator (release), starts a single-node Garage on
# 127.0.0.1 (ports 3950-3953) and measures, for each tool: wall time, CPU
# time and peak RSS (/usr/bin/time), requests (Garage's own counter) and the
# repository's bytes (rclone size). Cases:
#
#   initial backup of the 20k tree (and of the 1 GiB database);
#   an incremental backup after one changed file;
#   7 simulated days of ParqueDB churn on the database (a new segment and
#   events/current.parquet rewritten each day, one namespace compacted on
#   day 4), then the repository's size;
#   a restore of the latest snapshot;
#   forget --keep-daily 7 (after 10 daily snapshots) followed by prune.
#
# pqsync runs without encryption and with --encrypt; restic always
# encrypts (and compresses: repository format 2). Prints a table; nothing
# here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
export PATH="$HOME/.cargo/bin:$PATH"

# shellcheck source=bench/lib.sh
. bench/lib.sh
need_apt restic
need_apt rclone
[ -x /usr/bin/time ] || need_apt time
cargo build --release -q -p pqsync -p pqsync-testdata
pq=$repo/target/release/pqsync
gen=$repo/target/release/pqsync-testdata

work=${PQSYNC_BENCH_DIR:-$(mktemp -d /tmp/pqsync-backup-bench.XXXXXX)}
mkdir -p "$work"
garage_dir=$work/garage
mkdir -p "$garage_dir"
export GARAGE_S3_PORT=3950 GARAGE_RPC_PORT=3951 GARAGE_ADMIN_PORT=3953
cleanup() {
    .ci/garage.sh stop "$garage_dir"
    [ -n "${PQSYNC_BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
eval "$(.ci/garage.sh start "$garage_dir" 2>/dev/null)"
bucket=$PQSYNC_TEST_S3_BUCKET
garage_clients
export RESTIC_PASSWORD=bench-password PQSYNC_PASSWORD=bench-password
export PQSYNC_STATE_DIR=$work/state RESTIC_CACHE_DIR=$work/restic-cache
run_id=$(date +%s)

size_of() { rclone size --json "g:$bucket/$1" | sed 's/.*"bytes":\([0-9]*\).*/\1/'; }
age() { find "$1" -type f -exec touch -d '1 hour ago' {} +; }

results=()
# run LABEL TOOL CMD...: one run; wall, CPU, peak RSS and requests.
run() {
    local label=$1 tool=$2
    shift 2
    local before after
    before=$(requests)
    if ! /usr/bin/time -o "$work/time" -f '%e %U %S %M' "$@" >/dev/null 2>"$work/err"; then
        echo "bench: $label ($tool) failed:" >&2
        tail -5 "$work/err" >&2
    fi
    after=$(requests)
    read -r wall user sys rss <<<"$(tail -1 "$work/time")"
    local cpu
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
    results+=("$label|$tool|$wall|$cpu|$((rss / 1024))|$((after - before))")
    printf 'bench: %-36s %-16s %8ss %8ss cpu %6s MiB %8s req\n' "$label" "$tool" "$wall" "$cpu" "$((rss / 1024))" "$((after - before))" >&2
}
sizes=()
size() { # LABEL TOOL PREFIX
    local b
    b=$(size_of "$3")
    sizes+=("$1|$2|$b")
    printf 'bench: %-36s %-16s %12s bytes\n' "$1" "$2" "$b" >&2
}

pq_plain=(env -u PQSYNC_PASSWORD "$pq" --no-progress -q)
pq_enc=("$pq" --no-progress -q)
rs() { restic -q -r "s3:$PQSYNC_TEST_S3_ENDPOINT/$bucket/$1" "${@:2}"; }

# One case: the three repositories, the same commands.
tools=(pqsync pqsync-encrypted restic)
backup_cmd() { # TOOL PREFIX DIR [TIME]
    local t=${4:-} rt
    rt=${t%Z}
    rt=${rt/T/ }
    case $1 in
    pqsync) echo "${pq_plain[*]} backup s3://$bucket/$2 -d $3 ${t:+--time $t}" ;;
    pqsync-encrypted) echo "${pq_enc[*]} backup s3://$bucket/$2 -d $3 --encrypt ${t:+--time $t}" ;;
    restic) echo "restic -q -r s3:$PQSYNC_TEST_S3_ENDPOINT/$bucket/$2 backup --host bench $3 ${t:+--time \"$rt\"}" ;;
    esac
}
init_restic() { rs "$1" init >/dev/null; }

# --- the 20k tree ------------------------------------------------------------
echo "bench: generating trees in $work" >&2
"$gen" --out "$work/small" --extra-files 20000 >/dev/null
age "$work/small"
for t in "${tools[@]}"; do
    p=$t-small-$run_id
    [ "$t" = restic ] && init_restic "$p"
    run "20k initial backup" "$t" bash -c "$(backup_cmd "$t" "$p" "$work/small")"
    run "20k backup, unchanged" "$t" bash -c "$(backup_cmd "$t" "$p" "$work/small")"
done
printf 'one more line\n' >>"$work/small/_meta/schema.json"
for t in "${tools[@]}"; do
    run "20k backup, 1 changed" "$t" bash -c "$(backup_cmd "$t" "$t-small-$run_id" "$work/small")"
    size "20k repository" "$t" "$t-small-$run_id"
done
for t in "${tools[@]}"; do
    rm -rf "$work/restore"
    p=$t-small-$run_id
    case $t in
    pqsync) run "20k restore latest" "$t" "${pq_plain[@]}" restore "s3://$bucket/$p" -d "$work/restore" ;;
    pqsync-encrypted) run "20k restore latest" "$t" "${pq_enc[@]}" restore "s3://$bucket/$p" -d "$work/restore" ;;
    restic) run "20k restore latest" "$t" restic -q -r "s3:$PQSYNC_TEST_S3_ENDPOINT/$bucket/$p" restore latest --target "$work/restore" ;;
    esac
done
rm -rf "$work/restore"

# --- 10 daily snapshots, then forget --keep-daily 7 and prune --------------
for t in "${tools[@]}"; do
    p=$t-days-$run_id
    [ "$t" = restic ] && init_restic "$p"
    for d in $(seq -w 1 10); do
        printf 'day %s\n' "$d" >"$work/small/_meta/day.json"
        bash -c "$(backup_cmd "$t" "$p" "$work/small" "2026-01-${d}T02:00:00Z")" >/dev/null 2>&1
    done
    case $t in
    pqsync) run "forget --keep-daily 7 + prune" "$t" bash -c "${pq_plain[*]} forget s3://$bucket/$p --keep-daily 7 --prune" ;;
    pqsync-encrypted) run "forget --keep-daily 7 + prune" "$t" bash -c "${pq_enc[*]} forget s3://$bucket/$p --keep-daily 7 --prune" ;;
    restic) run "forget --keep-daily 7 + prune" "$t" restic -q -r "s3:$PQSYNC_TEST_S3_ENDPOINT/$bucket/$p" forget --keep-daily 7 --prune ;;
    esac
done

# --- the 1 GiB database: initial backup, then 7 days of churn ---------------
if [ "$quick" = 0 ]; then
    db=$work/gib
    gen_db() { # SEGMENTS ROWS OUT
        "$gen" --out "$3" --namespaces 6 --rows "$2" --segments "$1" --events-per-segment 8000 \
            --extra-files 2000 --big-file-mib 640 >/dev/null
    }
    gen_db 40 200000 "$db"
    age "$db"
    for t in "${tools[@]}"; do
        p=$t-gib-$run_id
        [ "$t" = restic ] && init_restic "$p"
        run "1 GiB initial backup" "$t" bash -c "$(backup_cmd "$t" "$p" "$db")"
    done
    for day in 1 2 3 4 5 6 7; do
        # Each day a new segment, and events/current.parquet rewritten; on
        # day 4 one namespace compacted (data.parquet rewritten with 1% more
        # rows).
        gen_db $((40 + day)) 200000 "$work/next"
        cp "$work/next/events/seg-$(printf %04d $((40 + day))).parquet" "$db/events/"
        cp "$work/next/events/current.parquet" "$work/next/events/_manifest.json" "$db/events/"
        if [ "$day" = 4 ]; then
            gen_db 40 202000 "$work/compacted"
            cp "$work/compacted/data/users/data.parquet" "$db/data/users/data.parquet"
            rm -rf "$work/compacted"
        fi
        rm -rf "$work/next"
        for t in "${tools[@]}"; do
            run "1 GiB day $day backup" "$t" bash -c "$(backup_cmd "$t" "$t-gib-$run_id" "$db")"
        done
    done
    for t in "${tools[@]}"; do
        size "1 GiB repository after 7 days" "$t" "$t-gib-$run_id"
    done
fi

# --- report ------------------------------------------------------------------
gets() { printf '%s\n' "${sizes[@]}" | awk -F'|' -v l="$1" -v t="$2" '$1 == l && $2 == t {print $3}'; }
{
    echo "| case | pqsync | pqsync --encrypt | restic | ratio (pqsync / restic) | encrypted ratio |"
    echo "|---|---:|---:|---:|---:|---:|"
    for l in "${results[@]}"; do echo "$l"; done | cut -d'|' -f1 | awk '!seen[$0]++' | while read -r label; do
        a=$(get "$label" pqsync 3)
        b=$(get "$label" pqsync-encrypted 3)
        c=$(get "$label" restic 3)
        echo "| $label (s) | $a | $b | $c | $(ratio "$a" "$c")× | $(ratio "$b" "$c")× |"
    done
    for label in "20k repository" "1 GiB repository after 7 days"; do
        a=$(gets "$label" pqsync)
        [ -n "$a" ] || continue
        b=$(gets "$label" pqsync-encrypted)
        c=$(gets "$label" restic)
        echo "| $label (bytes) | $a | $b | $c | $(ratio "$a" "$c")× | $(ratio "$b" "$c")× |"
    done
    echo
    measurements
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); pqsync $("$pq" --version | cut -d' ' -f2) ($(git -C "$repo" rev-parse --short HEAD)), $(restic version | cut -d' ' -f1-2), Garage 2.5.0 on the same machine; run on $(date -u +%Y-%m-%d)."
} | tee "$work/backup-table.md"

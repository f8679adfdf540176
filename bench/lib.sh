# Shared by the benchmark scripts: tool installation, Garage's request
# counter, and measuring and reporting runs.

# need_apt TOOL: installs TOOL with apt-get when it is missing (as root).
need_apt() {
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q "$1" >/dev/null
    else
        echo "bench: install $1 (apt-get install $1)" >&2
        exit 1
    fi
}

# requests: every S3 request Garage has answered so far.
requests() {
    curl -s "127.0.0.1:$GARAGE_ADMIN_PORT/metrics" |
        awk '/^api_s3_request_counter/ {s += $NF} END {print s + 0}'
}

# run LABEL TOOL REPEAT CMD...: runs CMD REPEAT times (a "reset" shell
# function, if set, runs before each), keeps the median run's wall/cpu/rss
# and its request count.
run() {
    local label=$1 tool=$2 repeat=$3
    shift 3
    local rows=()
    for _ in $(seq "$repeat"); do
        [ -n "$reset" ] && $reset
        local before after
        before=$(requests)
        if ! /usr/bin/time -o "$work/time" -f '%e %U %S %M' "$@" >/dev/null 2>"$work/err"; then
            echo "bench: $label ($tool) failed:" >&2
            tail -5 "$work/err" >&2
        fi
        after=$(requests)
        read -r wall user sys rss <<<"$(tail -1 "$work/time")"
        rows+=("$wall $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}') $((rss / 1024)) $((after - before))")
    done
    local median
    median=$(printf '%s\n' "${rows[@]}" | sort -n -k1,1 | awk -v n="$repeat" 'NR == int((n + 1) / 2)')
    read -r wall cpu rss req <<<"$median"
    results+=("$label|$tool|$wall|$cpu|$rss|$req")
    printf 'bench: %-34s %-8s %8ss %8ss cpu %6s MiB %8s req\n' "$label" "$tool" "$wall" "$cpu" "$rss" "$req" >&2
}

# get LABEL TOOL FIELD: a measured field (3 wall, 4 CPU, 5 RSS, 6 requests).
get() { printf '%s\n' "${results[@]}" | awk -F'|' -v l="$1" -v t="$2" -v f="$3" '$1 == l && $2 == t {print $f}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN {print (r <= t ? "met" : "missed")}'; }

# measurements: every run so far as a markdown table.
measurements() {
    echo "| operation | tool | wall s | CPU s | peak RSS MiB | requests |"
    echo "|---|---|---:|---:|---:|---:|"
    local r label tool wall cpu rss req
    for r in "${results[@]}"; do
        IFS='|' read -r label tool wall cpu rss req <<<"$r"
        echo "| $label | $tool | $wall | $cpu | $rss | $req |"
    done
}

# write_between DOC NAME FILE: replaces what lies between DOC's
# `<!-- NAME:start -->` and `<!-- NAME:end -->` markers with FILE.
write_between() {
    local doc=$1 name=$2 file=$3
    grep -q "<!-- $name:start -->" "$doc" || return 0
    awk -v f="$file" -v s="<!-- $name:start -->" -v e="<!-- $name:end -->" '
        $0 == s {print; while ((getline l < f) > 0) print l; skip = 1; next}
        $0 == e {skip = 0}
        !skip {print}' "$doc" >"$doc.new" && mv "$doc.new" "$doc"
    echo "bench: wrote the table to $doc" >&2
}

# garage_clients: points the AWS variables (for pqsync) and rclone's remote
# `g:` at the Garage that .ci/garage.sh started. A custom CA bundle is
# irrelevant for plain-http loopback and breaks rclone's http transport.
garage_clients() {
    unset AWS_CA_BUNDLE
    export AWS_ACCESS_KEY_ID=$PQSYNC_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$PQSYNC_TEST_S3_SECRET_KEY
    export AWS_REGION=garage AWS_DEFAULT_REGION=garage AWS_ENDPOINT_URL=$PQSYNC_TEST_S3_ENDPOINT AWS_ALLOW_HTTP=true
    export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENV_AUTH=false
    export RCLONE_CONFIG_G_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
    export RCLONE_CONFIG_G_ENDPOINT=$PQSYNC_TEST_S3_ENDPOINT RCLONE_CONFIG_G_REGION=garage RCLONE_CONFIG_G_FORCE_PATH_STYLE=true
}

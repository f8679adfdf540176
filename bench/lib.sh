# Shared by bench/run.sh and bench/backup.sh: tool installation and
# Garage's request counter.

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

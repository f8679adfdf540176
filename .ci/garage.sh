#!/usr/bin/env bash
# Starts a single-node Garage S3 server on 127.0.0.1 for pqsync's second test
# lane, or stops it.
#
#   .ci/garage.sh start DIR   # prints `export VAR=...` lines for the tests
#   .ci/garage.sh stop DIR
#
# Garage is built from crates.io if it is not installed yet (about 11 minutes
# on a 2-core machine, then cached in ~/.cargo/bin).
set -euo pipefail

cmd=${1:?usage: garage.sh start|stop DIR}
dir=${2:?usage: garage.sh start|stop DIR}
export PATH="$HOME/.cargo/bin:$PATH"

case "$cmd" in
stop)
    if [ -f "$dir/garage.pid" ]; then
        kill "$(cat "$dir/garage.pid")" 2>/dev/null || true
        rm -f "$dir/garage.pid"
    fi
    exit 0
    ;;
start) ;;
*)
    echo "usage: garage.sh start|stop DIR" >&2
    exit 2
    ;;
esac

if ! command -v garage >/dev/null 2>&1 || ! garage --version 2>/dev/null | grep -q '2\.5\.0'; then
    echo "building garage 2.5.0 (cargo install)..." >&2
    cargo install garage --version 2.5.0 --locked >&2
fi

mkdir -p "$dir/meta" "$dir/data"
s3_port=${GARAGE_S3_PORT:-3900}
rpc_port=${GARAGE_RPC_PORT:-3901}
admin_port=${GARAGE_ADMIN_PORT:-3903}
cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML

g() { garage -c "$dir/garage.toml" "$@"; }

garage -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
echo $! >"$dir/garage.pid"

for _ in $(seq 1 100); do
    if g status >/dev/null 2>&1; then break; fi
    sleep 0.2
done
g status >/dev/null 2>&1 || { echo "garage did not start; log:" >&2; cat "$dir/garage.log" >&2; exit 1; }

node=$(g node id -q 2>/dev/null | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$node" >&2
g layout apply --version 1 >&2
# The layout takes a moment to become active.
for _ in $(seq 1 50); do
    if g bucket create pqsync-test >&2 2>"$dir/bucket.err"; then break; fi
    sleep 0.2
done
key_out=$(g key create pqsync-test-key)
key_id=$(printf '%s\n' "$key_out" | awk -F': *' '/Key ID/ {print $2; exit}')
secret=$(printf '%s\n' "$key_out" | awk -F': *' '/Secret key/ {print $2; exit}')
g bucket allow --read --write --owner pqsync-test --key pqsync-test-key >&2
g bucket create pqsync-test-b >&2
g bucket allow --read --write --owner pqsync-test-b --key pqsync-test-key >&2

cat <<ENV
export PQSYNC_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export PQSYNC_TEST_S3_BUCKET=pqsync-test
export PQSYNC_TEST_S3_BUCKET2=pqsync-test-b
export PQSYNC_TEST_S3_ACCESS_KEY=$key_id
export PQSYNC_TEST_S3_SECRET_KEY=$secret
export PQSYNC_TEST_S3_REGION=garage
export PQSYNC_TEST_S3_CONDITIONAL=false
ENV

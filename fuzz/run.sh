#!/usr/bin/env bash
# Fuzzes manifest parsing and path validation for a fixed time (default 300 s).
#   fuzz/run.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The project builds on the
# stable toolchain; libFuzzer's instrumentation flags are unstable, so they
# are enabled with RUSTC_BOOTSTRAP for this build only. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
mkdir -p corpus/manifest
# Seed the corpus with real manifests.
cp ../testdata/fixtures/parquedb-manifest.json corpus/manifest/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 cargo fuzz run manifest corpus/manifest -- -max_total_time="$secs" -max_len=65536

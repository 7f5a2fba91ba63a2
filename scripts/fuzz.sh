#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer via cargo-fuzz) of the parsers clients and backends
# feed: v2 JSON requests, the binary tensor extension, TF-Serving :predict, JSON bodies,
# gzip bodies, v2 responses read for hardening, JWTs and API keys (targets in
# fuzz/fuzz_targets/, each stating what it asserts). Each target runs SECONDS_PER_TARGET
# (default 60) from its seeds
# (fuzz/seeds/<target>, in git) and the corpus grown by earlier runs (fuzz/corpus/, not in
# git). A failing input is written to fuzz/artifacts/<target>/ and the script exits 1:
# reproduce with `cargo +nightly fuzz run -s none <target> <file>` in fuzz/, then add the
# input to the target's unit tests.
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh v2_request v2_binary
#
# Needs a nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz from
# crates.io when it is missing. Not part of scripts/test.sh (nightly is not guaranteed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-60}
[[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer" >&2; exit 2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Release build with debug assertions and overflow checks (cargo-fuzz's default); no
# sanitizer: the workspace forbids `unsafe`, and without one a run covers more inputs.
cargo +nightly fuzz build -s none

status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "fuzz.sh: $t for ${SECONDS_PER_TARGET}s"
    if ! cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 2>"corpus/$t.log"; then
        echo "fuzz.sh: $t FAILED (input in fuzz/artifacts/$t/, log in fuzz/corpus/$t.log)" >&2
        tail -30 "corpus/$t.log" >&2
        status=1
    else
        echo "fuzz.sh: $t passed: $(grep -E '^stat::(number_of_executed_units|new_units_added)' "corpus/$t.log" | tr -s ' \n' ' ')"
    fi
done
exit $status

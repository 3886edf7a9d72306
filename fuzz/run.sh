#!/bin/sh
# Runs one cargo-fuzz target for a while: `fuzz/run.sh TARGET [SECONDS] [SANITIZER]`.
# Uses a nightly toolchain if rustup has one, else the pinned stable with RUSTC_BOOTSTRAP=1
# (see README.md for what works where). SANITIZER: address (default) or none (faster).
set -eu
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [SANITIZER]}
seconds=${2:-60}
sanitizer=${3:-address}
if rustup toolchain list | grep -q '^nightly'; then
    exec cargo +nightly fuzz run "$target" -s "$sanitizer" -- -max_total_time="$seconds"
else
    RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" -s "$sanitizer" -- -max_total_time="$seconds"
fi

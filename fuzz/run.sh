#!/usr/bin/env bash
# Fuzzes the protocol decoder (fuzz/fuzz_targets/decode.rs) and then the spool's segment
# scanner (fuzz/fuzz_targets/spool_segment.rs), each for a bounded time:
#   bash fuzz/run.sh [SECONDS]        (per target, default 300; `make fuzz` passes FUZZ_SECONDS)
# Installs cargo-fuzz when missing, seeds fuzz/corpus/decode from proto-fixtures/**/*.bin
# (the scanner's corpus starts empty: its built mode makes valid segments from any input)
# and leaves any crash in fuzz/artifacts/<target>/ (reproduce: cargo fuzz run TARGET FILE).
# cargo-fuzz needs a nightly toolchain (-Zsanitizer); it uses rustup's nightly if present.
set -euo pipefail

seconds="${1:-300}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

toolchain=nightly
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: no nightly toolchain; trying 'rustup toolchain install nightly'" >&2
    rustup toolchain install nightly --profile minimal
fi

# Seeds: every fixture stream behind a control byte (byte 0 picks the chunking; 0x00 =
# one byte at a time, 0x07 = reads of up to 4 KiB).
corpus="$here/corpus/decode"
mkdir -p "$corpus"
shopt -s nullglob globstar
for bin in "$root"/proto-fixtures/**/*.bin; do
    name="$(basename "$(dirname "$bin")")-$(basename "$bin" .bin)"
    for control in 00 07; do
        { printf "\\x$control"; cat "$bin"; } >"$corpus/seed-$control-$name"
    done
done

cd "$here"
cargo "+$toolchain" fuzz run decode "$corpus" -- \
    -max_total_time="$seconds" -max_len=16384 -print_final_stats=1

# The recovery reads whatever a crash or a disk left in the spool directory: any bytes
# must scan without a panic or a loop (issue 13). Inputs above 16 KiB add nothing a
# smaller segment does not already exercise (records are capped at 1 KiB in the target).
mkdir -p "$here/corpus/spool_segment"
cargo "+$toolchain" fuzz run spool_segment "$here/corpus/spool_segment" -- \
    -max_total_time="$seconds" -max_len=16384 -print_final_stats=1

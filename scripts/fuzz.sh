#!/usr/bin/env bash
# Fuzzes the parsers that see untrusted input with cargo-fuzz (libFuzzer), on the stable
# toolchain (no sanitizer: -s none; Rust's own checks turn memory errors into panics).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
#
# Seeds are committed in fuzz/seeds/<target>; what a run learns goes to fuzz/corpus/<target>
# (not committed). A crash stops the run with the failing input in fuzz/artifacts/<target>;
# reproduce it with `cargo fuzz run -s none <target> <that file>`, fix it, add the input to
# fuzz/seeds/<target> and a regression unit test next to the code.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET=${1:-30}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz (crates.io)"
  cargo install --locked cargo-fuzz
fi
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo fuzz list)
fi
echo "[fuzz] building the fuzz targets (release, instrumented; first build takes minutes)"
cargo fuzz build -s none
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  printf '[fuzz] %-16s %4s s ... ' "$t" "$SECONDS_PER_TARGET"
  log=$(mktemp)
  if cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "clean: $runs runs, $cov"
  else
    echo "FAILED"
    grep -E 'panicked|SUMMARY|Test unit written|artifact_prefix' "$log" | head -20
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
done

#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the real third-party peers if missing,
# checks formatting and lints, then runs the Rust tests (unit + end-to-end against real Triton,
# MLServer, moto, azurite, fake-gcs-server), the fuzz targets for 30 s each and the Python
# interop tests (real tritonclient), then the README's demo against the debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Disk: the build, the fuzz build and the test peers take about 8 GiB, and each real etcd a test
# starts preallocates a 64 MiB log. A full disk shows up as processes that die with empty logs,
# so say so up front instead.
free_kib=$(df -Pk . | awk 'NR==2 {print $4}')
printf '[test] %s GiB free on %s\n' "$((free_kib / 1048576))" "$(df -P . | awk 'NR==2 {print $6}')"
if [ "$free_kib" -lt $((6 * 1048576)) ]; then
  echo "[test] warning: under 6 GiB free; the build and tests may fail with 'No space left on device'" >&2
fi
# A one-shot CI build gains nothing from incremental state (about 1.6 GiB).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}; fi
# Test scratch (etcd data dirs, pulled models, logs) goes to memory when /dev/shm has room:
# nothing there needs to survive the run, and it keeps the tests off a nearly full disk.
shm_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}' || true)
if [ -z "${TMPDIR:-}" ] && [ -n "$shm_kib" ] && [ "$shm_kib" -gt $((4 * 1048576)) ]; then
  TMPDIR=$(mktemp -d /dev/shm/modelmesh-tests.XXXXXX)
  export TMPDIR
  trap 'rm -rf "$TMPDIR"' EXIT
  echo "[test] scratch files in $TMPDIR"
fi

step "build prerequisites (scripts/setup-build.sh, shared with the demo)"
bash scripts/setup-build.sh

step "installing test peers (skipped when present)"
bash scripts/setup-peers.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --all-targets

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

step "fuzzing: every cargo-fuzz target for 30 s (scripts/fuzz.sh; long runs in docs/reliability.md)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

step "Python tests: interop (real tritonclient and grpcurl against modelmesh runtime and the mesh) and the Helm chart (Helm's Go SDK, kubernetes-validate)"
MODELMESH_BIN=target/debug/modelmesh .venv/bin/python -m pytest -q tests/interop tests/chart

step "the README's demo (scripts/demo.sh) against the debug build: up, status, infer over gRPC, REST"
MODELMESH_BIN=target/debug/modelmesh bash scripts/demo.sh

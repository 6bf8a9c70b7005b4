#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the real third-party peers if missing,
# checks formatting and lints, then runs the Rust tests (unit + end-to-end against real Triton,
# MLServer, moto, azurite, fake-gcs-server), the fuzz targets for 30 s each and the Python
# interop tests (real tritonclient).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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

#!/usr/bin/env bash
# Installs what compiling the workspace needs and a clean Debian machine with rustup lacks.
# The one place for build prerequisites: scripts/demo.sh and scripts/test.sh both call it, so
# the two cannot drift (the demo once failed on a fresh machine because only the test script
# installed protoc).
#
#   protoc      (protobuf-compiler)  etcd-client's build script compiles etcd's protos with it
#   cc          (gcc)                rustc links with it; ring (rustls' crypto) compiles C and assembly
#
# Idempotent: when everything is present it prints nothing and takes a few milliseconds.
# Run it as root or with sudo available; a missing tool that cannot be installed is named with
# the command to install it by hand.
set -euo pipefail

log() { printf '[setup-build] %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "[setup-build] cargo not found: install Rust with https://rustup.rs, then re-run" >&2
  exit 1
fi

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v cc >/dev/null || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=(sudo); fi
fi
if ! command -v apt-get >/dev/null; then
  echo "[setup-build] missing ${need[*]} and no apt-get here: install them with your package manager, then re-run" >&2
  exit 1
fi
log "installing ${need[*]} (apt-get; needed to compile the workspace)"
if ! { "${SUDO[@]}" apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null; }; then
  echo "[setup-build] could not install ${need[*]}: run 'sudo apt-get install ${need[*]}' by hand, then re-run" >&2
  exit 1
fi
log "installed ${need[*]}"

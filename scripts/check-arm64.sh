#!/usr/bin/env bash
# Compiles the native core (native/, no Node headers) for arm64 with a cross
# compiler, to keep the portable path building on Apple silicon and ARM servers.
# Needs aarch64-linux-gnu-g++ (Debian: apt-get install g++-aarch64-linux-gnu).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "check-arm64: aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu); skipped"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cmake -S . -B "$out" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$out" --target instill_core -j "$(nproc)" -- --quiet 2>&1 | grep -v '^\[' || true
test -f "$out/libinstill_core.a"
echo "check-arm64: native core compiled for aarch64 ($(aarch64-linux-gnu-g++ --version | head -1))"

#!/usr/bin/env bash
# Installs the system packages tiermesh builds and tests with (Debian 12, as root).
set -euo pipefail
pkgs=(pkg-config build-essential nasm cmake clang libclang-dev)
# codec/: dav1d and libopus are linked from Debian; ffmpeg (with libaom, libx264, libsvtav1) is
# the independent decoder of the codec tests and the baseline of ladder_bench.
pkgs+=(libdav1d-dev libopus-dev ffmpeg)
# Tests: Debian's Chromium for the browser tests, iproute2 and nftables for network namespaces,
# openssl for token interop tests.
pkgs+=(chromium iproute2 nftables openssl ca-certificates)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

# Browser tests drive /usr/bin/chromium with playwright-core (installed by npm from
# web/package-lock.json; it downloads no browser of its own).
if [ -f web/package-lock.json ]; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi

# web/tests/bridge.test.mjs joins the browser's publisher and player through an independent
# WebTransport peer, tests/wt_bridge.py, which needs Python's aioquic (Debian 12 has no package).
if ! python3 -c 'import aioquic' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'aioquic==1.7.2' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'aioquic==1.7.2' ||
    { echo "setup: could not install aioquic for the WebTransport bridge test (pip install aioquic)" >&2; exit 1; }
fi

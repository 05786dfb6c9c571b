#!/usr/bin/env bash
# Installs the system packages tiermesh builds and tests with (Debian 12, as root).
set -euo pipefail
pkgs=(pkg-config build-essential nasm cmake clang libclang-dev)
# ffmpeg/ffprobe make the test media of codec/tests/media_*.rs and check the MP4s tiermesh writes.
pkgs+=(ffmpeg)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

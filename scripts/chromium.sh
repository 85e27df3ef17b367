#!/usr/bin/env bash
# Install Debian's headless-capable Chromium if it is missing (the report test opens the HTML in it).
# Idempotent and quiet: does nothing when `chromium` is already on PATH. Needs root for apt-get;
# without root it prints what to run and exits 1 (callers that can live without it may ignore that).
# Usage: scripts/chromium.sh          (prints the chromium path on success)
set -euo pipefail

find_chromium() {
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

bin="$(find_chromium)"
if [ -n "$bin" ]; then
    echo "$bin"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is not installed and this is not root; run: sudo apt-get update && sudo apt-get install -y chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

bin="$(find_chromium)"
if [ -z "$bin" ]; then
    echo "apt-get installed chromium but no chromium binary is on PATH" >&2
    exit 1
fi
echo "$bin"

#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/client/), unless /usr/bin/chromium is there.
# Idempotent and quiet; prints apt's output only when it fails.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update && $SUDO apt-get install -y chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser.sh: could not install chromium with apt-get" >&2
    exit 1
fi
echo "installed $(/usr/bin/chromium --version 2>/dev/null)"

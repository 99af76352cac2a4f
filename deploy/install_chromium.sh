#!/bin/sh
# Install Debian's chromium when no headless-capable Chromium is on this
# machine (the console's browser tests, tests/integration/test_console_browser.py,
# drive it over the DevTools protocol and fail without it).
#
# As root, or through sudo when not root. `apt-get update` once, then the
# package; nothing is started.
set -eu

for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" = 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    echo "chromium is missing and this is not root (and there is no sudo): apt-get install chromium" >&2
    exit 1
fi

$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
chromium --version | head -1

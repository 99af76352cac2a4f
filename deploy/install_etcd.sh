#!/bin/sh
# Install Debian's etcd-server when no `etcd` is on this machine (CI runs the
# etcd tests against it: tests/helpers/etcd.py fails without it).
#
# As root, or through sudo when not root. The package would start its own
# etcd service (on 2379/2380); a temporary policy-rc.d keeps invoke-rc.d and
# deb-systemd-invoke from starting it. Our clusters pick free ports anyway,
# so a service someone else started does not get in their way.
set -eu

if command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    echo "etcd is missing and this is not root (and there is no sudo): apt-get install etcd-server" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y etcd-server
etcd --version | head -1

#!/bin/sh
# Install what the test suite runs besides Python, from Debian, when missing:
#
#   etcd      etcd-server (the failover controller's tests: tests/helpers/etcd.py)
#   chromium  chromium (the console's browser tests: tests/integration/test_console_browser.py)
#   promtool  prometheus, which ships promtool (the alert rules' tests:
#             tests/unit/test_alert_rules.py)
#
# Usage: install_test_tools.sh [etcd] [chromium] [promtool]  (none named: all)
#
# One `apt-get update` and one `apt-get install` for whatever is missing
# (nothing at all when everything is there). As root, or through sudo when
# not root. The etcd and prometheus packages would start their services; a
# temporary policy-rc.d (only when the machine has none) keeps invoke-rc.d
# and deb-systemd-invoke from starting them. Our clusters pick free ports
# anyway, so a service someone else started does not get in their way.
set -eu

WANT="${*:-etcd chromium promtool}"
MISSING=
for tool in $WANT; do
    case "$tool" in
        etcd)
            command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || MISSING="$MISSING etcd-server" ;;
        chromium)
            # Debian's name only: Ubuntu's chromium-browser is a snap shim that does not run in containers
            command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium" ;;
        promtool)
            command -v promtool >/dev/null 2>&1 || MISSING="$MISSING prometheus" ;;
        *)
            echo "install_test_tools.sh: unknown tool $tool (etcd, chromium, promtool)" >&2
            exit 2 ;;
    esac
done
[ -n "$MISSING" ] || exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    echo "missing:$MISSING, and this is not root (and there is no sudo): apt-get install$MISSING" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update
# shellcheck disable=SC2086  # one word per package
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $MISSING

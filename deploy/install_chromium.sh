#!/bin/sh
# Debian's chromium when none is installed: see install_test_tools.sh.
exec sh "$(dirname "$0")/install_test_tools.sh" chromium

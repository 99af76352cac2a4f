#!/bin/sh
# Debian's etcd-server when no `etcd` is installed: see install_test_tools.sh.
exec sh "$(dirname "$0")/install_test_tools.sh" etcd

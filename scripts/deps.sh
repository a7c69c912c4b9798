#!/bin/sh
# Installs the Debian packages loraflow needs to build and test, when missing.
# As root it runs apt-get; otherwise it prints the exact command and stops.
# `scripts/deps.sh fuzz` checks (and installs) what `make fuzz` needs instead:
# clang with libFuzzer (libclang-rt-14-dev) and clang's OpenMP (libomp-dev).
set -e
PKGS="build-essential libcjson-dev libcmocka-dev libopenmpi-dev openmpi-bin"
[ "${1:-}" = fuzz ] && PKGS="$PKGS clang libclang-rt-14-dev libomp-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "loraflow: installing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq $missing >&2
else
    echo "loraflow: missing Debian packages:$missing" >&2
    echo "run: sudo apt-get install -y$missing" >&2
    exit 1
fi

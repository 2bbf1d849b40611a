#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Build and test on a Debian 12 machine: installs the Debian packages
# that are missing, bootstraps, configures, builds and runs
# `make check`.  Exits non-zero on any failure.  The last line is
# "N passed, N failed, N skipped".
#
# Environment: CONFIGURE_FLAGS (extra configure options, e.g.
# --enable-werror), MAKEFLAGS as usual, FLEECE_NO_APT=1 to skip apt.

set -euo pipefail
cd "$(dirname "$0")"

packages=(
  build-essential autoconf automake libtool pkg-config perl
  nbdkit nbdkit-plugin-dev libnbd-dev libnbd-bin python3-libnbd
  qemu-utils qemu-system-common fio socat jq valgrind clang libclang-rt-14-dev git
  systemd
)

./tools/install-packages.sh check.sh "${packages[@]}"

# Debian's python3 owns the libnbd bindings that nbdsh needs.
export PATH="/usr/bin:$PATH"

jobs=$(nproc 2>/dev/null || echo 2)
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure ${CONFIGURE_FLAGS:-}
make -j"$jobs"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
make -j"$jobs" check 2>&1 | tee "$log" || status=1

count ()
{
  # Sum the automake summary lines ("# PASS:  3") of every directory.
  awk -v k="# $1:" '$1" "$2 == k { n += $3 } END { print n + 0 }' "$log"
}
pass=$(count PASS)
fail=$(( $(count FAIL) + $(count ERROR) + $(count XPASS) ))
skip=$(count SKIP)

if [ "$status" -ne 0 ] || [ "$fail" -ne 0 ]; then
  for f in tests/test-suite.log; do
    [ -f "$f" ] && cat "$f"
  done
  status=1
fi
if [ "$pass" -eq 0 ]; then
  echo "check.sh: no test ran" >&2
  status=1
fi
echo "$pass passed, $fail failed, $skip skipped"
exit $status

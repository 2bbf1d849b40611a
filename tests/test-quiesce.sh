#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# quiesce / resume on one server; see quiesce_test.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
truncate -s 16M "$tmpdir/disk.img"
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$tmpdir/disk.img" control="$ctl"
/usr/bin/python3 "$abs_top_srcdir/tests/quiesce_test.py" \
  --sock "$sock" --ctl "$ctl" || fail "quiesce"
echo "OK"

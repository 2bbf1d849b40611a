#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Issue 8, case 8: a connection to snapshot/since/c1 or to snapshot that
# outlives its snapshot (snapshot-end, then snapshot-begin again) gets
# an error for every request: it never reads the new snapshot, nor
# zeroes for the unchanged ranges.  See safe_stale_delta.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
disk=$tmpdir/disk.img
head -c 4M /dev/urandom > "$disk"
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl"
/usr/bin/python3 "$abs_top_srcdir/tests/safe_stale_delta.py" \
  --sock "$sock" --ctl "$ctl" || fail "log: $sock.log"

echo "OK"

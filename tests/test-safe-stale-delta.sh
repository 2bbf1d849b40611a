#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# A connection to snapshot/since/c1 or to snapshot that
# outlives its snapshot (snapshot-end, then snapshot-begin again) gets
# an error for every request: it never reads the new snapshot, nor
# zeroes for the unchanged ranges.  See safe_stale_delta.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd

start_stack disk 4M
/usr/bin/python3 "$abs_top_srcdir/tests/safe_stale_delta.py" \
  --sock "$sock" --ctl "$ctl" || fail "log: $sock.log"

echo "OK"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The delta view snapshot/since/c1 is fixed at the
# snapshot point.  Writes after the snapshot never enter its changed-
# block map, whether the snapshot was begun with since=c1 alone, with a
# checkpoint that was deleted afterwards, or as a full snapshot; the
# whole view reads without error and exactly.  See safe_delta_fixed.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd nbdinfo

for c in a b c; do
  start_stack $c 8M
  /usr/bin/python3 "$abs_top_srcdir/tests/safe_delta_fixed.py" \
    --sock "$sock" --ctl "$ctl" --disk "$disk" --case $c ||
    fail "case $c (log: $sock.log)"
  stop_nbdkit "$sock"
  rm -f "$sock" "$disk"
done

echo "OK"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# checkpoint-delete refuses a checkpoint that the
# active snapshot (since=) or an open delta connection depends on, and
# accepts it once that is gone.  See safe_delete_dep.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd nbdinfo

for part in since open; do
  start_stack $part 4M
  /usr/bin/python3 "$abs_top_srcdir/tests/safe_delete_dep.py" \
    --sock "$sock" --ctl "$ctl" --disk "$disk" --part $part ||
    fail "$part (log: $sock.log)"
  stop_nbdkit "$sock"
  rm -f "$sock" "$disk"
done

echo "OK"

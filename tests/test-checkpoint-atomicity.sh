#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Writes racing 'snapshot-begin checkpoint=cN' (no pause): every write
# completed before the begin was sent is in the snapshot and in the old
# checkpoint's map, every write sent after the reply is in the new
# checkpoint's map and not in the snapshot, and every write in flight is
# exactly one of the two -- never neither.  15 rounds with 4K
# granules under 64K cbw clusters, 8 with the default 64K granules.
# See incr_atomicity.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd

py=$abs_top_srcdir/tests/incr_atomicity.py

# run SIZE GRANULARITY ROUNDS RATE
run ()
{
  local size=$1 gran=$2 rounds=$3 rate=$4
  local d=$tmpdir/$gran
  mkdir "$d"
  truncate -s "$size" "$d/disk.img"
  start_nbdkit "$d/nbd.sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
    file "$d/disk.img" control="$d/ctl.sock" bitmap-granularity="$gran"
  echo "=== disk $size, bitmap-granularity $gran, $rounds rounds"
  /usr/bin/python3 "$py" --sock "$d/nbd.sock" --ctl "$d/ctl.sock" \
    --size "$(stat -c %s "$d/disk.img")" --gran "$gran" \
    --rounds "$rounds" --rate "$rate" ||
    fail "granularity $gran (log: $d/nbd.sock.log)"
  stop_nbdkit "$d/nbd.sock"
  rm -rf "$d"
}

run 128M 4096 15 2500
run 512M 65536 8 1000

echo "OK"

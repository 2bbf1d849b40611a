#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# A filter below the project's filters that answers
# block status a little at a time (nbdkit's blocksize filter with
# maxlen=64K returns at most one extent per request) must not break the
# snapshot's block status: nbdinfo --map of "snapshot" succeeds,
# describes the whole disk (its zero extents really are zero in the
# snapshot), and nbdcopy of "snapshot" equals the disk at the snapshot
# point.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdcopy nbdinfo nbdsh cmp

size=$((16 * 1024 * 1024))
G=65536
disk=$tmpdir/disk.img
truncate -s $size "$disk"
# A sparse disk, so that the map has many extents.
for g in 2 3 10 20 21 22 100 101 200; do
  head -c $G /dev/urandom |
    dd of="$disk" bs=$G seek=$g conv=notrunc status=none
done
cp "$disk" "$tmpdir/before.img"

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  --filter=blocksize file "$disk" maxlen=64K control="$ctl"
snap="nbd+unix:///snapshot?socket=$sock"

r=$(ctl "$ctl" snapshot-begin)
echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-begin: $r"
# Writes into a few clusters, so they are copied: data, a hole, the
# middle of a data run and the last cluster.
nbdsh -u "nbd+unix:///?socket=$sock" -c '
import os
G = 65536
h.pwrite(os.urandom(1000), 3 * G + 5)
h.pwrite(os.urandom(2 * G), 50 * G)
h.zero(G, 21 * G)
h.pwrite(os.urandom(G), h.get_size() - G)
'
cmp -s "$disk" "$tmpdir/before.img" && fail "the writes did not change the disk"

nbdinfo --map "$snap" > "$tmpdir/map" ||
  fail "nbdinfo --map of the snapshot failed"
cat "$tmpdir/map"
# Contiguous from 0 to the end.
awk -v size=$size '
  $1 != pos { print "gap or overlap at " pos; bad = 1; exit }
  { pos = $1 + $2 }
  END { if (!bad && pos != size) { print "map ends at " pos; bad = 1 }
        exit bad }' "$tmpdir/map" || fail "the snapshot map does not describe the whole disk"
# Zero extents are zero at the snapshot point.
while read -r off len type _; do
  if [ $((type & 2)) -ne 0 ]; then
    cmp -n "$len" <(tail -c +$((off + 1)) "$tmpdir/before.img") /dev/zero \
      >/dev/null 2>&1 ||
      fail "the snapshot map says $off+$len reads as zero; it does not"
  fi
done < "$tmpdir/map"

nbdcopy "$snap" "$tmpdir/backup.img" || fail "nbdcopy of the snapshot failed"
cmp "$tmpdir/backup.img" "$tmpdir/before.img" ||
  fail "the snapshot differs from the disk at the snapshot point"

r=$(ctl "$ctl" snapshot-end)
echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-end: $r"
echo "OK"

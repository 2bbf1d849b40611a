#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# fleecectl pull, the provider's side of a backup, against a running
# stack with guest writes during each snapshot:
#  - full: equals the disk at the snapshot point and is as sparse as
#    the disk; also onto a file and an NBD export full of old data
#    (holes must be zeroed there, not skipped);
#  - incremental (--since c1) after data, zero data ("a changed block
#    whose new contents are all zero"), zero requests and trims: onto
#    the previous backup in a file, and onto a qcow2 overlay served by
#    qemu-nbd whose backing file is the full backup (restored with
#    qemu-img convert); writes exactly the changed granules;
#  - each way the README's stock recipe breaks (no -S 0, no
#    --destination-is-zero, a plain file destination, qemu-img convert
#    -n) gives a wrong image here, and pull gets the same case right;
#  - refusals: no previous backup, an NBD destination that is too small.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdsh nbdcopy nbdinfo qemu-img qemu-nbd

FC=$abs_top_builddir/fleecectl/fleecectl
[ -x "$FC" ] || fail "fleecectl was not built"
cd "$tmpdir"

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
disk=$tmpdir/disk.img
M=1048576

# A 32M disk: random data, an allocated all-zero region, holes.
truncate -s 32M "$disk"
head -c 4M /dev/urandom | dd of="$disk" bs=1M seek=0 conv=notrunc status=none
head -c 3M /dev/urandom | dd of="$disk" bs=1M seek=10 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$disk" bs=1M seek=20 conv=notrunc status=none
dd if=/dev/zero of="$disk" bs=1M seek=24 count=2 conv=notrunc status=none
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl"

live="nbd+unix:///?socket=$sock"
snap="nbd+unix:///snapshot?socket=$sock"
delta="nbd+unix:///snapshot/since/c1?socket=$sock"
c () { "$FC" -c "$ctl" "$@" >/dev/null || fail "control: $*"; }
alloc_kib () { du -k "$1" | cut -f1; }

# guest_writes SEED: writes to the live disk during a snapshot; the
# snapshot must not see them.
guest_writes ()
{
  nbdsh -u "$live" -c "
import random
r = random.Random($1)
for off in (0, 15 * $M + 4096, 21 * $M, 100 * 65536):
    h.pwrite(r.randbytes(300000), off)
h.zero(65536, 200 * 65536)
"
}

# qemu_nbd SOCK ARGS...: serve an image with qemu-nbd in the
# background (stopped at exit, or by stop_qemu_nbd SOCK).
qemu_nbd ()
{
  local s=$1; shift
  rm -f "$s" "$s.pid"
  _pidfiles+=("$s.pid")
  qemu-nbd -t -k "$s" --pid-file="$s.pid" "$@" &
  for _ in $(seq 100); do
    [ -S "$s" ] && [ -s "$s.pid" ] && return 0
    sleep 0.1
  done
  fail "qemu-nbd $* did not start"
}
stop_qemu_nbd ()
{
  local pid
  pid=$(cat "$1.pid")
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$1.pid" "$1"; return 0; }
    sleep 0.1
  done
  fail "qemu-nbd on $1 did not stop"
}

# ---------------------------------------------------------------- full
cp --sparse=always "$disk" truth1.img
c snapshot-begin checkpoint=c1
guest_writes 1

"$FC" pull "$snap" full.img > pull1.out || fail "full pull failed"
cat pull1.out
cmp full.img truth1.img || fail "full pull differs from the snapshot"
# As sparse as the disk: 8 MiB of data; the holes and the allocated
# zero region stay holes.
a=$(alloc_kib full.img)
[ "$a" -ge 8000 ] && [ "$a" -le 9300 ] ||
  fail "full pull allocates $a KiB, the disk's data is 8192 KiB"
grep -q '^pull: completed, 33554432 bytes' pull1.out || fail "no summary"

# Onto an existing file of old data: truncated, so equal too.
head -c 40M /dev/urandom > old.img
"$FC" -q pull --connections 2 "$snap" old.img || fail "pull onto old file"
cmp old.img truth1.img || fail "full pull onto an old file differs"

# Onto an NBD export full of old data: the holes must be zeroed.
head -c 32M /dev/urandom > nbdraw.img
qemu_nbd "$tmpdir/q1.sock" -f raw nbdraw.img
"$FC" -q pull -c "$ctl" "$snap" "nbd+unix:///?socket=$tmpdir/q1.sock" ||
  fail "full pull onto NBD"
stop_qemu_nbd "$tmpdir/q1.sock"
cmp nbdraw.img truth1.img || fail "full pull onto an NBD export of old data differs"
c snapshot-end

# --------------------------------------------------------- the changes
# Granule 64K: 0-3 zero data (a changed block that is now all zero),
# 100 data, 200-201 a zero request, 300-304 a trim, 240-255 (15M) new
# data in a hole, 170 (10M + 40960) changed data.
nbdsh -u "$live" -c "
h.pwrite(bytes(200000), 5000)
h.pwrite(b'new data', 100 * 65536 + 7)
h.zero(2 * 65536, 200 * 65536)
h.trim(5 * 65536, 300 * 65536)
h.pwrite(b'\x01' * $M, 15 * $M)
h.pwrite(b'\x02' * 100, 10 * $M + 40960)
"
c snapshot-begin checkpoint=c2 since=c1
nbdcopy "$live" truth2.img          # no writers: the snapshot point
guest_writes 2
cmp -s truth1.img truth2.img && fail "the changes did not change the disk"

# The changed granules, from the delta view's map (the guest writes
# during the first snapshot are changes since c1 as well; the exact
# map is test-incremental-stock.sh's business).
nbdinfo --map "$delta" > map
changed=$(awk '$3 == 0 { s += $2 } END { print s + 0 }' map)
[ "$changed" -ge $(( (4 + 1 + 2 + 5 + 16 + 1) * 65536 )) ] ||
  { cat map; fail "unexpected changed-block map"; }

# broken NAME CMD...: a stock recipe missing one piece must give a
# wrong image NAME.img (made from the full backup first).
broken ()
{
  local name=$1; shift
  cp --sparse=always full.img "$name.img"
  "$@" > /dev/null 2>&1 || true
  if cmp -s "$name.img" truth2.img; then
    fail "stock recipe '$name' gave a correct image: the case tests nothing"
  fi
  echo "stock recipe '$name': wrong image, as expected"
}
broken no-S0 nbdcopy --destination-is-zero --request-size=65536 \
  "$delta" -- [ nbdkit file no-S0.img ]
broken no-dest-is-zero nbdcopy -S 0 --request-size=65536 \
  "$delta" -- [ nbdkit file no-dest-is-zero.img ]
broken plain-file nbdcopy --destination-is-zero -S 0 --request-size=65536 \
  "$delta" plain-file.img
broken no-request-size nbdcopy --destination-is-zero -S 0 \
  "$delta" -- [ nbdkit file no-request-size.img ]
broken qemu-img-convert-n qemu-img convert -n -f raw -O raw \
  "$delta" qemu-img-convert-n.img
# The complete stock recipe is right (the expert path).
cp --sparse=always full.img stock.img
nbdcopy --destination-is-zero -S 0 --request-size=65536 \
  "$delta" -- [ nbdkit file stock.img ]
cmp stock.img truth2.img || fail "the complete stock recipe is wrong"

# ------------------------------------------------- incremental, a file
cp --sparse=always full.img incr.img
"$FC" pull --since c1 "$snap" incr.img > pull2.out || fail "delta pull failed"
cat pull2.out
cmp incr.img truth2.img || fail "full backup + delta pull differs from the disk"
# Exactly the changed granules: written + zeroed = changed.
w=$(sed -n 's/^pull since c1: \([0-9]*\) bytes of data written, \([0-9]*\) bytes zeroed.*/\1 \2/p' pull2.out)
[ -n "$w" ] || fail "no byte counts"
set -- $w
[ $(( $1 + $2 )) = "$changed" ] ||
  fail "pull wrote $1 and zeroed $2 bytes, the changed granules are $changed"
[ "$2" -gt 0 ] || fail "the all-zero changed granules were not zeroed"

# The delta view's own URI works too, and -c gives the granule.
cp --sparse=always full.img incr2.img
"$FC" -q -c "$ctl" pull --connections 1 "$delta" incr2.img ||
  fail "pull of the delta URI"
cmp incr2.img truth2.img || fail "delta URI pull differs"

# --------------------------------- incremental, a qcow2 chain via NBD
qemu-img create -q -f qcow2 -b "$tmpdir/full.img" -F raw incr.qcow2
qemu_nbd "$tmpdir/q2.sock" -f qcow2 incr.qcow2
"$FC" -q pull --since c1 "$snap" "nbd+unix:///?socket=$tmpdir/q2.sock" ||
  fail "delta pull onto qemu-nbd"
stop_qemu_nbd "$tmpdir/q2.sock"
qemu-img convert -f qcow2 -O raw incr.qcow2 restored.img
cmp restored.img truth2.img || fail "qcow2 chain restore differs from the disk"
cmp full.img truth1.img || fail "the backing file was changed"

# ----------------------------------------------------------- refusals
rc=0; "$FC" -q pull --since c1 "$snap" missing.img 2> err || rc=$?
[ "$rc" = 1 ] && [ ! -e missing.img ] && grep -q 'previous backup' err ||
  fail "delta pull without a previous backup: rc=$rc $(cat err)"
qemu-img create -q -f qcow2 small.qcow2 16M
qemu_nbd "$tmpdir/q3.sock" -f qcow2 small.qcow2
rc=0; "$FC" -q pull --since c1 "$snap" "nbd+unix:///?socket=$tmpdir/q3.sock" \
  2> err || rc=$?
stop_qemu_nbd "$tmpdir/q3.sock"
[ "$rc" = 1 ] && grep -q 'less than' err ||
  fail "a too small NBD destination: rc=$rc $(cat err)"

c snapshot-end
echo OK

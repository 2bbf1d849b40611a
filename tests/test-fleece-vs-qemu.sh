#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Compare with the reference implementation, QEMU's copy-before-write and
# snapshot-access run by qemu-storage-daemon.  Both start from the same
# patterned 32 MiB image with a snapshot taken at once; the same seeded
# sequence of writes, zeroes and trims (unaligned, cluster-crossing,
# repeated on a hot area) goes to both live exports; then both snapshots
# must equal the initial image and both live disks the Python model;
# our snapshot's base:allocation must agree with its data, and after
# snapshot-end our snapshot connections fail and the live disk is intact.
# QEMU 7.2's snapshot-access returns zeroes for a read that crosses from a
# copied cluster into the next when the live disk has a hole there, so
# QEMU's snapshot is read one cluster per request (ours is not).
# FLEECE_SEED=N picks another sequence, FLEECE_OPS=N another length.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-storage-daemon socat jq python3-nbd

helper=$abs_top_srcdir/tests/fleece_model.py
size=$((32 * 1024 * 1024))
seed=${FLEECE_SEED:-20261122}
ops=${FLEECE_OPS:-300}
echo "seed: $seed (set FLEECE_SEED to change)"

/usr/bin/python3 "$helper" mkimage "$tmpdir/initial.img" $size "$seed"
cp --sparse=always "$tmpdir/initial.img" "$tmpdir/ours.img"
cp --sparse=always "$tmpdir/initial.img" "$tmpdir/qemu.img"
truncate -s $size "$tmpdir/qemu-fleece.img"

# QEMU: the snapshot point is when the copy-before-write node is created,
# i.e. now, with the disk holding the initial image.  discard=unmap on the
# disk and filter nodes makes a trim punch a hole as nbdkit's file plugin
# does.
qsock=$tmpdir/qsd.sock
qpid=$tmpdir/qsd.pid
_pidfiles+=("$qpid")
qsd=(qemu-storage-daemon
  --blockdev "driver=file,node-name=disk0,filename=$tmpdir/qemu.img,discard=unmap"
  --blockdev "driver=file,node-name=fleece0,filename=$tmpdir/qemu-fleece.img"
  --blockdev "driver=copy-before-write,node-name=cbw0,file=disk0,target=fleece0,on-cbw-error=break-guest-write,cbw-timeout=0,discard=unmap"
  --blockdev "driver=snapshot-access,node-name=snap0,file=cbw0"
  --nbd-server "addr.type=unix,addr.path=$qsock"
  --export "type=nbd,id=exp-live,node-name=cbw0,name=live,writable=on"
  --export "type=nbd,id=exp-snap,node-name=snap0,name=snapshot"
  --pidfile "$qpid")
echo "${qsd[*]}"
"${qsd[@]}" >"$tmpdir/qsd.log" 2>&1 &
qbg=$!
for _ in $(seq 100); do
  [ -s "$qpid" ] && [ -S "$qsock" ] && break
  kill -0 $qbg 2>/dev/null || { cat "$tmpdir/qsd.log" >&2; fail "qemu-storage-daemon exited"; }
  sleep 0.1
done
[ -S "$qsock" ] || fail "qemu-storage-daemon did not start"

# Ours: the snapshot point is snapshot-begin, sent before any write.
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" \
  file "$tmpdir/ours.img" cbw-target="$tmpdir/ours-fleece.img" control="$ctl"
r=$(ctl "$ctl" snapshot-begin)
echo "snapshot-begin: $r"
echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-begin: $r"

SECONDS=0
timeout 120 /usr/bin/python3 "$helper" run \
  --initial "$tmpdir/initial.img" --seed "$seed" --ops "$ops" --ctl "$ctl" \
  --ours-live "nbd+unix:///?socket=$sock" \
  --ours-snap "nbd+unix:///snapshot?socket=$sock" \
  --qemu-live "nbd+unix:///live?socket=$qsock" \
  --qemu-snap "nbd+unix:///snapshot?socket=$qsock" \
  --model-out "$tmpdir/model" ||
  fail "seed $seed: see the message above"
echo "sequence and checks took ${SECONDS} s"

# The writes reached both disk files.
stop_nbdkit "$sock"
kill "$(cat "$qpid")"
wait $qbg 2>/dev/null || true
rm -f "$qpid"
/usr/bin/python3 "$helper" check-file "$tmpdir/ours.img" "$tmpdir/model"
/usr/bin/python3 "$helper" check-file "$tmpdir/qemu.img" "$tmpdir/model"

echo "OK"

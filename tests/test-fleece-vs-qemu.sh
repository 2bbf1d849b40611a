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
# done twice: ours with a file target, then with cbw-buffer=512K in
# front of a slow NBD target;
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

# round NAME CBW-ARGS...: one comparison from a fresh image, ours with
# the given cbw parameters.
round ()
{
  local name=$1; shift
  echo "=== round $name: $*"
  local d=$tmpdir/$name
  mkdir "$d"
  /usr/bin/python3 "$helper" mkimage "$d/initial.img" $size "$seed"
  cp --sparse=always "$d/initial.img" "$d/ours.img"
  cp --sparse=always "$d/initial.img" "$d/qemu.img"
  truncate -s $size "$d/qemu-fleece.img"

  # QEMU: the snapshot point is when the copy-before-write node is created,
  # i.e. now, with the disk holding the initial image.  discard=unmap on the
  # disk and filter nodes makes a trim punch a hole as nbdkit's file plugin
  # does.
  qsock=$d/qsd.sock
  qpid=$d/qsd.pid
  _pidfiles+=("$qpid")
  qsd=(qemu-storage-daemon
    --blockdev "driver=file,node-name=disk0,filename=$d/qemu.img,discard=unmap"
    --blockdev "driver=file,node-name=fleece0,filename=$d/qemu-fleece.img"
    --blockdev "driver=copy-before-write,node-name=cbw0,file=disk0,target=fleece0,on-cbw-error=break-guest-write,cbw-timeout=0,discard=unmap"
    --blockdev "driver=snapshot-access,node-name=snap0,file=cbw0"
    --nbd-server "addr.type=unix,addr.path=$qsock"
    --export "type=nbd,id=exp-live,node-name=cbw0,name=live,writable=on"
    --export "type=nbd,id=exp-snap,node-name=snap0,name=snapshot"
    --pidfile "$qpid")
  echo "${qsd[*]}"
  "${qsd[@]}" >"$d/qsd.log" 2>&1 &
  qbg=$!
  for _ in $(seq 100); do
    [ -s "$qpid" ] && [ -S "$qsock" ] && break
    kill -0 $qbg 2>/dev/null || { cat "$d/qsd.log" >&2; fail "qemu-storage-daemon exited"; }
    sleep 0.1
  done
  [ -S "$qsock" ] || fail "qemu-storage-daemon did not start"

  # Ours: the snapshot point is snapshot-begin, sent before any write.
  sock=$d/nbd.sock
  ctl=$d/ctl.sock
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" \
    file "$d/ours.img" control="$ctl" "$@"
  r=$(ctl "$ctl" snapshot-begin)
  echo "snapshot-begin: $r"
  echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-begin: $r"

  SECONDS=0
  timeout 120 /usr/bin/python3 "$helper" run \
    --initial "$d/initial.img" --seed "$seed" --ops "$ops" --ctl "$ctl" \
    --ours-live "nbd+unix:///?socket=$sock" \
    --ours-snap "nbd+unix:///snapshot?socket=$sock" \
    --qemu-live "nbd+unix:///live?socket=$qsock" \
    --qemu-snap "nbd+unix:///snapshot?socket=$qsock" \
    --model-out "$d/model" ||
    fail "seed $seed: see the message above"
  echo "sequence and checks took ${SECONDS} s"
  buffer=$(ctl "$ctl" status | jq -c .buffer)
  echo "buffer: $buffer"

  # The writes reached both disk files.
  stop_nbdkit "$sock"
  kill "$(cat "$qpid")"
  wait $qbg 2>/dev/null || true
  rm -f "$qpid"
  /usr/bin/python3 "$helper" check-file "$d/ours.img" "$d/model"
  /usr/bin/python3 "$helper" check-file "$d/qemu.img" "$d/model"
}

round file cbw-target="$tmpdir/file/ours-fleece.img"

# cbw-buffer: copies wait in memory in front of an NBD target whose
# writes take 20 ms: the buffer of 8 clusters fills, writes then wait
# for room, and the final snapshot read finds copies still in it.
tsock=$tmpdir/target.sock
start_nbdkit "$tsock" --filter=delay memory 64M delay-write=20ms
round buffer cbw-target="nbd+unix:///?socket=$tsock" cbw-buffer=512K
jq -e '.size == 524288 and .flushed_bytes > 0 and .waits > 0 and
       .lost_bytes == 0' <<<"$buffer" >/dev/null ||
  fail "cbw-buffer was not exercised: $buffer"
stop_nbdkit "$tsock"

echo "OK"

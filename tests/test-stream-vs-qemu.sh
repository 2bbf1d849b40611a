#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Compare the stream filter with the reference implementation, QEMU's
# block-stream run by qemu-storage-daemon.  One sparse 64 MiB base
# (seeded data, holes, zero runs) is served read-only by nbdkit over a
# Unix socket to both:
#   ours: nbdkit --filter=stream file on an empty local raw image,
#         stream-base=<the base>, a low stream-speed;
#   QEMU: a qcow2 overlay whose backing is the same base (an nbd node),
#         exported over NBD, block-stream started over QMP at the same
#         low speed.
# The same seeded guest operations (reads, partial and whole-cluster
# writes, zeroes, whole-cluster trims; tests/stream_vs_qemu.py) go to
# both while their jobs run (at 1 MiB/s), every read checked on both;
# then both speed limits go, both jobs complete, and both disks must
# equal the model (base + operations) and each other.  Afterwards, with the base
# server stopped: QEMU's overlay names no backing file any more and
# converts to the model; our state file says complete, and a server
# started without stream-base serves the model (and so does the raw
# local image itself).
# FLEECE_SEED=N picks another sequence, FLEECE_OPS=N another length.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-storage-daemon qemu-img socat jq python3-nbd

STREAM=$abs_top_builddir/filters/stream/.libs/nbdkit-stream-filter.so
helper=$abs_top_srcdir/tests/stream_vs_qemu.py
size=$((64 * 1024 * 1024))
seed=${FLEECE_SEED:-20261202}
ops=${FLEECE_OPS:-400}
# Slow enough that the operations meet unpopulated clusters on both
# sides (64 MiB takes a minute at this rate; the limit goes after them).
speed=$((1024 * 1024))
echo "seed: $seed, operations: $ops (FLEECE_SEED, FLEECE_OPS)"

d=$tmpdir
$PY "$helper" mkbase "$d/base.img" $size "$seed"
bsock=$d/base.sock
start_nbdkit "$bsock" -r file "$d/base.img"
base_uri="nbd+unix:///?socket=$bsock"

# Ours.
truncate -s $size "$d/local.img"
sock=$d/ours.sock
ctl=$d/ours.ctl
start_nbdkit "$sock" --filter="$STREAM" file "$d/local.img" \
  stream-base="$base_uri" stream-state="$d/local.state" \
  stream-speed=$speed control="$ctl"

# QEMU: the overlay's header names the base; the nbd node given as
# backing is the same server.
qemu-img create -q -f qcow2 -o cluster_size=65536 -u -F raw \
  -b "$base_uri" "$d/overlay.qcow2" $size
qemu-img info -U "$d/overlay.qcow2" | grep -q '^backing file: ' ||
  fail "the overlay was created without a backing file"
qsock=$d/qsd.sock
qmp=$d/qmp.sock
qpid=$d/qsd.pid
_pidfiles+=("$qpid")
serve "$d/qsd.log" "$qpid" "$qsock" "$qmp" -- qemu-storage-daemon \
  --blockdev "driver=nbd,node-name=base0,server.type=unix,server.path=$bsock,read-only=on" \
  --blockdev "driver=file,node-name=ovl-file,filename=$d/overlay.qcow2" \
  --blockdev "driver=qcow2,node-name=ovl,file=ovl-file,backing=base0,discard=unmap" \
  --nbd-server "addr.type=unix,addr.path=$qsock" \
  --export "type=nbd,id=exp0,node-name=ovl,name=disk,writable=on" \
  --chardev "socket,id=qmp0,path=$qmp,server=on,wait=off" \
  --monitor chardev=qmp0 \
  --pidfile "$qpid"

SECONDS=0
timeout 240 $PY "$helper" run --base "$d/base.img" --seed "$seed" \
  --ops "$ops" --speed $speed \
  --ours "nbd+unix:///?socket=$sock" --ctl "$ctl" \
  --qemu "nbd+unix:///disk?socket=$qsock" --qmp "$qmp" \
  --model-out "$d/model.img" ||
  fail "seed $seed: see the message above"
echo "operations, completion and comparison took $SECONDS s"

ctl_ok "$ctl" status | jq -c .stream
stop_nbdkit "$sock"
stop_pid "$(cat "$qpid")" 10
rm -f "$qpid"
# From here on the base is gone: nothing may need it.
stop_nbdkit "$bsock"

# QEMU: the job dropped the backing from the overlay's header.
qemu-img info -U "$d/overlay.qcow2" >"$d/overlay.info"
if grep -q '^backing file' "$d/overlay.info"; then
  cat "$d/overlay.info" >&2
  fail "after block-stream the overlay still names a backing file"
fi
qemu-img convert -f qcow2 -O raw "$d/overlay.qcow2" "$d/qemu-final.img"
$PY "$helper" check-file "$d/qemu-final.img" "$d/model.img"
rm -f "$d/qemu-final.img"

# Ours: the local image is the result; the state file says complete,
# so a server without stream-base starts and serves it.
$PY "$helper" check-file "$d/local.img" "$d/model.img"
rm -f "$sock"
start_nbdkit "$sock" --filter="$STREAM" file "$d/local.img" \
  stream-state="$d/local.state" control="$ctl"
st=$(ctl_ok "$ctl" status | jq -c .stream)
echo "restarted without stream-base: $st"
jq -e '.state == "complete" and .bytes_done == .bytes_total and
       .base_connected == false' <<<"$st" >/dev/null ||
  fail "after a restart without stream-base: $st"
nbdcopy "nbd+unix:///?socket=$sock" "$d/ours-final.img"
$PY "$helper" check-file "$d/ours-final.img" "$d/model.img"
stop_nbdkit "$sock"
echo OK

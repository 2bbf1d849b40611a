#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# A backend that takes one connection at a time
# (qemu-nbd -e 1, reached through nbdkit's nbd plugin), held by a guest.
# snapshot-begin, status and snapshot-end must answer within 10 s, the
# guest's writes go on, and SIGTERM stops nbdkit within 10 s.  Every
# client step is time-limited (safe_control_hang.py, under timeout), so
# the test fails instead of hanging.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd timeout python3-nbd

disk=$tmpdir/disk.img
head -c 8M /dev/urandom > "$disk"

qsock=$tmpdir/qemu.sock
qpid=$tmpdir/qemu.pid
_pidfiles+=("$qpid")             # functions.sh stops it on exit
qemu-nbd -t -e 1 -f raw -k "$qsock" --pid-file="$qpid" "$disk" \
  >"$tmpdir/qemu-nbd.log" 2>&1 &
for _ in $(seq 100); do
  [ -S "$qsock" ] && [ -s "$qpid" ] && break
  sleep 0.1
done
[ -S "$qsock" ] || fail "qemu-nbd did not start"

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  nbd socket="$qsock" control="$ctl"

rc=0
timeout 60 /usr/bin/python3 "$abs_top_srcdir/tests/safe_control_hang.py" \
  --sock "$sock" --ctl "$ctl" --pid-file "$sock.pid" --disk "$disk" || rc=$?
[ $rc -eq 124 ] && fail "the driver hung for 60 s (log: $sock.log)"
[ $rc -eq 0 ] || fail "exit status $rc (log: $sock.log)"

echo "OK"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# fleecectl backup against the real server's backup jobs, with writers
# running: a full backup (exit status 0, progress lines when stdout is
# not a terminal, target == the disk at the snapshot point), then two
# incrementals, in place on a file and onto a qcow2 overlay served by
# qemu-nbd.  See fleecectl_backup.py.  SKIPs (77) while the server
# answers backup-start with "unknown command" (the follower itself is
# tested against a scripted server by test-fleecectl-follow.sh).

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat qemu-img qemu-nbd /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

FC=$abs_top_builddir/fleecectl/fleecectl
[ -x "$FC" ] || fail "fleecectl was not built"

disk=$tmpdir/disk.img
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
truncate -s 8M "$disk"
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl"

if ctl "$ctl" backup-start | grep -q 'unknown command'; then
  echo "SKIP: this server has no backup jobs (backup-start is unknown)" >&2
  exit 77
fi

/usr/bin/python3 \
  "$abs_top_srcdir/tests/fleecectl_backup.py" --sock "$sock" --ctl "$ctl" \
  --tmpdir "$tmpdir" --fleecectl "$FC" ||
  fail "fleecectl backup (log: $sock.log)"

stop_nbdkit "$sock"
echo OK

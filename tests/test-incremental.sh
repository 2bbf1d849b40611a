#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Incremental backup chain end to end with live writers running during
# every backup: a full backup at checkpoint c1 (nbdcopy of "snapshot"),
# then incremental backups from the delta views snapshot/since/c<k>
# (map = exactly the granules written in between, data extents applied
# onto the previous backup = the disk at the snapshot point, sha256),
# one round begun with since=, deletion of a middle checkpoint and of
# the recording one (deltas since older checkpoints still cover every
# change), and the checkpoint fields of status.  See incr_incremental.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdcopy nbdinfo python3-nbd

disk=$tmpdir/disk.img
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
truncate -s 64M "$disk"

start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl"

/usr/bin/python3 "$abs_top_srcdir/tests/incr_incremental.py" \
  --sock "$sock" --ctl "$ctl" --tmpdir "$tmpdir" ||
  fail "incremental backup chain (log: $sock.log)"

stop_nbdkit "$sock"
echo "OK"

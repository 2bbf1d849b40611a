#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# snapshot-discard=true end to end: a provider TRIMs copied and
# uncopied regions of the snapshot; released_bytes grows by exactly
# the released whole clusters (partial clusters release nothing); the
# target frees their space; later guest writes to them copy nothing;
# reading them fails with EPERM; live data stays intact.  Run with a
# file target (cbw-target=FILE) and with an NBD target (nbdkit's file
# plugin, so the TRIM that reaches it shows as freed blocks of its
# file).  See fleece_discard.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd

py=$abs_top_srcdir/tests/fleece_discard.py

for kind in file nbd; do
  d=$tmpdir/$kind
  mkdir "$d"
  sock=$d/nbd.sock
  truncate -s 16M "$d/disk.img"
  if [ "$kind" = file ]; then
    target=$d/target.img
    tgt=$target
  else
    target=$d/target-backing.img
    truncate -s 16M "$target"
    start_nbdkit "$d/target.sock" file "$target"
    tgt="nbd+unix:///?socket=$d/target.sock"
  fi
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" file "$d/disk.img" \
    control="$d/ctl.sock" cbw-target="$tgt" snapshot-discard=true
  echo "=== $kind target"
  timeout 60 /usr/bin/python3 "$py" --sock "$sock" --ctl "$d/ctl.sock" \
    --disk "$d/disk.img" --log "$sock.log" --target-file "$target" ||
    fail "$kind target (log: $sock.log)"
  stop_nbdkit "$sock"
  [ "$kind" = file ] || stop_nbdkit "$d/target.sock"
  rm -rf "$d"
done

echo "OK"

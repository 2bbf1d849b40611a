#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Misuse of live fleecing fails cleanly and changes nothing: a second
# snapshot-begin, snapshot-end without a snapshot, unknown
# snapshot-begin arguments, writes / zeroes / trims to the snapshot
# export, opening the snapshot with none active, reads past its end,
# reads on snapshot connections after snapshot-end, an unusable target
# path, an unreachable target URI; snapshot-export= renames the snapshot
# export and nothing else.  See fleece_bad_input.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo python3-nbd

py=$abs_top_srcdir/tests/fleece_bad_input.py

# The misuse list, on a file-backed disk with the default target.
truncate -s 64M "$tmpdir/disk.img"
sock=$tmpdir/nbd.sock ctl=$tmpdir/ctl.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" file "$tmpdir/disk.img" \
  control="$ctl"
timeout 120 /usr/bin/python3 "$py" --mode main --sock "$sock" --ctl "$ctl" \
  --log "$sock.log" || fail "misuse checks"
stop_nbdkit "$sock"

# snapshot-export=backup: the snapshot is "backup", "snapshot" is live.
sock3=$tmpdir/nbd3.sock ctl3=$tmpdir/ctl3.sock
truncate -s 64M "$tmpdir/disk3.img"
start_nbdkit "$sock3" --filter="$SA" --filter="$CBW" file "$tmpdir/disk3.img" \
  control="$ctl3" snapshot-export=backup
timeout 120 /usr/bin/python3 "$py" --mode rename --sock "$sock3" --ctl "$ctl3" \
  --log "$sock3.log" || fail "snapshot-export=backup"
stop_nbdkit "$sock3"

# A target path in a directory that does not exist: refused at start-up.
expect_refused "cbw-target=$tmpdir/nodir/fleece.img" \
  --filter="$SA" --filter="$CBW" file "$tmpdir/disk.img" \
  cbw-target="$tmpdir/nodir/fleece.img"
[ ! -e "$tmpdir/nodir" ] || fail "cbw-target created a directory"

# An unreachable NBD target: refused at start-up, or snapshot-begin
# fails naming the target; either way the live disk stays usable.
sock2=$tmpdir/nbd2.sock ctl2=$tmpdir/ctl2.sock
truncate -s 64M "$tmpdir/disk2.img"
args=(--filter="$SA" --filter="$CBW" file "$tmpdir/disk2.img"
      control="$ctl2" cbw-target="nbd+unix:///?socket=$tmpdir/nothing")
if timeout 20 nbdkit -U "$(run_sock)" "${args[@]}" --run true >"$tmpdir/start.log" 2>&1
then
  start_nbdkit "$sock2" "${args[@]}"
  timeout 120 /usr/bin/python3 "$py" --mode unreachable --sock "$sock2" \
    --ctl "$ctl2" --log "$sock2.log" || fail "unreachable target"
  stop_nbdkit "$sock2"
else
  cat "$tmpdir/start.log"
  grep -q "cbw-target" "$tmpdir/start.log" ||
    fail "unreachable target refused without naming cbw-target"
fi

echo "OK"

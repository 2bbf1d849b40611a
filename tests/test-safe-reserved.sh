#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The snapshot export names are reserved.  A name meant
# for a snapshot never reaches the plugin as the live disk:
#
# * cbw without snapshot-access above it is refused at start-up (it
#   would let "snapshot" through to the plugin, read-write);
# * dirty-bitmap alone starts, but "snapshot", "snapshot/since/c1",
#   "snapshot@x" and "snapshot/foo" cannot be opened, and nothing is
#   written to the disk through them;
# * the full stack refuses malformed snapshot names ("snapshot/foo",
#   "snapshot@nosuch", "snapshot/since/") with and without an active
#   snapshot, and serves "snapshot" and "snapshot/since/c1" while one
#   is active;
# * with snapshot-export=bk, "bk/foo" and "snapshot" cannot be opened.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdinfo python3-nbd

disk=$tmpdir/disk.img
head -c 4M /dev/urandom > "$disk"
disk_sum=$(sha256sum < "$disk")

ok () { echo "$1" | jq -e '.ok == true' >/dev/null || fail "control: $1"; }

# try_open SOCK EXPORT: open EXPORT and, if that works, try to write to
# it.  Exit status 0 if the open succeeded, 1 if it failed, 124 on a hang.
try_open ()
{
  timeout 20 /usr/bin/python3 -c '
import sys, nbd
h = nbd.NBD()
h.set_export_name(sys.argv[2])
h.connect_unix(sys.argv[1])
print("opened, size %d, read-only %s" % (h.get_size(), h.is_read_only()))
try:
    h.pwrite(b"\xa5" * 65536, 0)
    h.flush()
    print("and WRITTEN")
except nbd.Error as e:
    print("write refused: %s" % e)
' "$1" "$2" >"$tmpdir/open.log" 2>&1
}

expect_open_fails ()
{
  local rc=0
  try_open "$1" "$2" || rc=$?
  case $rc in
    0) cat "$tmpdir/open.log" >&2
       fail "$3: opening export '$2' succeeded, expected it to fail" ;;
    124) fail "$3: opening export '$2' hung" ;;
  esac
  echo "$3: '$2' refused: $(tail -n 1 "$tmpdir/open.log")"
}

expect_open_works ()
{
  local rc=0
  try_open "$1" "$2" || rc=$?
  if [ $rc -ne 0 ]; then
    cat "$tmpdir/open.log" >&2
    fail "$3: opening export '$2' failed, expected it to work"
  fi
}

# 1. cbw without snapshot-access is refused: it would pass "snapshot"
# to the plugin as the live disk.
expect_refused 'snapshot-access' --filter="$CBW" file "$disk"
expect_refused 'snapshot-access' --filter="$CBW" --filter="$DB" file "$disk"
[ "$(sha256sum < "$disk")" = "$disk_sum" ] || fail "start-up changed the disk"

# 2. Tracking alone: the snapshot names are not the live disk.
sock=$tmpdir/db.sock
ctl=$tmpdir/db.ctl
start_nbdkit "$sock" --filter="$DB" file "$disk" control="$ctl"
ok "$(ctl "$ctl" 'checkpoint-create c1')"
for e in snapshot snapshot/since/c1 snapshot@x snapshot/foo; do
  expect_open_fails "$sock" "$e" "dirty-bitmap alone"
done
# The live disk still works.
nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null ||
  fail "dirty-bitmap alone: the live export does not open"
stop_nbdkit "$sock"
rm -f "$sock"
[ "$(sha256sum < "$disk")" = "$disk_sum" ] ||
  fail "dirty-bitmap alone: the disk was written through a snapshot name"

# 3. Full stack: malformed snapshot names fail, with and without an
# active snapshot; the real ones work while a snapshot is active.
sock=$tmpdir/full.sock
ctl=$tmpdir/full.ctl
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl"
ok "$(ctl "$ctl" 'checkpoint-create c1')"
for e in snapshot/foo snapshot@nosuch snapshot/since/; do
  expect_open_fails "$sock" "$e" "full stack, no snapshot"
done
ok "$(ctl "$ctl" 'snapshot-begin')"
for e in snapshot/foo snapshot@nosuch snapshot/since/; do
  expect_open_fails "$sock" "$e" "full stack, snapshot active"
done
for e in snapshot snapshot/since/c1; do
  expect_open_works "$sock" "$e" "full stack, snapshot active"
done
ok "$(ctl "$ctl" 'snapshot-end')"
stop_nbdkit "$sock"
rm -f "$sock"
[ "$(sha256sum < "$disk")" = "$disk_sum" ] ||
  fail "full stack: the disk was written through a snapshot name"

# 4. snapshot-export=bk: "bk/foo" fails, and so does "snapshot".
sock=$tmpdir/bk.sock
ctl=$tmpdir/bk.ctl
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl" snapshot-export=bk
ok "$(ctl "$ctl" 'checkpoint-create c1')"
for e in bk/foo snapshot; do
  expect_open_fails "$sock" "$e" "snapshot-export=bk, no snapshot"
done
ok "$(ctl "$ctl" 'snapshot-begin')"
for e in bk/foo snapshot; do
  expect_open_fails "$sock" "$e" "snapshot-export=bk, snapshot active"
done
for e in bk bk/since/c1; do
  expect_open_works "$sock" "$e" "snapshot-export=bk, snapshot active"
done
ok "$(ctl "$ctl" 'snapshot-end')"
stop_nbdkit "$sock"
rm -f "$sock"
[ "$(sha256sum < "$disk")" = "$disk_sum" ] ||
  fail "snapshot-export=bk: the disk was written through a snapshot name"

echo "OK"

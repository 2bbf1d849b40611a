#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# bitmap-sync=write-ahead (the default with bitmap-file=): bad values
# are refused; after kill -9 the checkpoints come back consistent,
# status says the file was recovered after an unclean stop, exactly
# (same boot), and the delta view maps exactly the granules written
# before the kill and after the restart (the next backup is
# incremental); restarted as after a reboot (a test-only boot id), the
# newest checkpoint counts every 4 MiB region written since it as
# changed, and nothing else; with
# bitmap-sync=clean-stop a kill -9 still leaves them inconsistent.
# Status never waits for guest writes: with a write held for 5 s in the
# plugin (delay filter) status answers at once.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat nbdinfo nbdsh jq

disk=$tmpdir/disk.img
bm=$tmpdir/bm
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
truncate -s 32M "$disk"
live="nbd+unix:///?socket=$sock"

expect_refused 'bitmap-sync=sometimes: must be write-ahead .* or clean-stop' \
  --filter="$DB" memory 1M bitmap-file="$bm" bitmap-sync=sometimes
expect_refused 'bitmap-sync=write-ahead: .*needs bitmap-file=PATH' \
  --filter="$DB" memory 1M bitmap-sync=write-ahead
rm -f "$bm"

start ()
{
  rm -f "$sock" "$ctl"
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
    file "$disk" bitmap-file="$bm" control="$ctl" "$@"
  nbdinfo --size "$live" >/dev/null || fail "nbdkit does not serve"
}
kill9 ()
{
  local pid
  pid=$(cat "$sock.pid")
  kill -9 "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$sock.pid"
}
ok () { echo "$1" | jq -e .ok >/dev/null || fail "control: $1"; }
# The data extents of the delta view since $1, in granules "first count".
delta_map ()
{
  ok "$(ctl "$ctl" 'snapshot-begin')"
  nbdinfo --map "nbd+unix:///snapshot/since/$1?socket=$sock" |
    awk '$3 == 0 { print $1 / 65536, $2 / 65536 }'
  ok "$(ctl "$ctl" 'snapshot-end')"
}

echo "=== write-ahead: kill -9"
start
st=$(ctl "$ctl" status)
[ "$(echo "$st" | jq -r .bitmap_file.sync)" = write-ahead ] ||
  fail "default bitmap-sync is not write-ahead: $st"
[ "$(echo "$st" | jq -c .bitmap_file.recovered_after_unclean_stop)" = null ] ||
  fail "recovered after a fresh start: $st"
ok "$(ctl "$ctl" 'checkpoint-create c1')"
nbdsh -u "$live" -c '
h.pwrite(b"a" * 4096, 10 * 65536)
h.pwrite(b"b" * 200000, 20 * 65536 + 100)
h.zero(2 * 65536, 40 * 65536)
h.trim(65536, 50 * 65536)
'
st=$(ctl "$ctl" status)
[ "$(echo "$st" | jq .bitmap_file.syncs)" -ge 1 ] ||
  fail "no sync of the bitmap file counted: $st"
kill9
start
st=$(ctl "$ctl" status)
echo "$st" | jq -c '.checkpoints, .bitmap_file'
[ "$(echo "$st" | jq -c '[.checkpoints[] | .consistent]')" = '[true]' ] ||
  fail "after kill -9 in write-ahead mode c1 is not consistent: $st"
[ "$(echo "$st" | jq -r .bitmap_file.recovery)" = exact ] ||
  fail "after kill -9 in the same boot the recovery is not exact: $st"
echo "$st" | jq -r .bitmap_file.recovered_after_unclean_stop |
  grep -Eq '^20[0-9]{2}-[0-9]{2}-[0-9]{2}T' ||
  fail "status does not say the file was recovered: $st"
nbdsh -u "$live" -c 'h.pwrite(b"c" * 4096, 60 * 65536)'
delta_map c1 > "$tmpdir/map"
printf '%s\n' "10 1" "20 4" "40 2" "50 1" "60 1" | diff -u - "$tmpdir/map" ||
  fail "delta map since c1 after kill -9 is not exactly the written granules"
# A clean stop clears the recovered mark.
stop_nbdkit "$sock"
start
[ "$(ctl "$ctl" status | jq -c .bitmap_file.recovered_after_unclean_stop)" = null ] ||
  fail "still recovered after a clean stop"

echo "=== write-ahead: kill -9, restart as after a reboot"
ok "$(ctl "$ctl" 'checkpoint-create c2')"
# Granules 5 and 63 (region 0), 70 (region 1), 300 (region 4).
nbdsh -u "$live" -c '
h.pwrite(b"f" * 4096, 5 * 65536)
h.pwrite(b"f" * 4096, 63 * 65536)
h.pwrite(b"g" * 8192, 70 * 65536)
h.zero(65536, 300 * 65536)
'
kill9
FLEECE_TEST_BOOT_ID=00000000-0000-4000-8000-000000000001 start
st=$(ctl "$ctl" status)
echo "$st" | jq -c '.bitmap_file'
[ "$(echo "$st" | jq -c '[.checkpoints[] | .consistent]')" = '[true,true]' ] ||
  fail "after a reboot the checkpoints are not consistent: $st"
[ "$(echo "$st" | jq -r .bitmap_file.recovery)" = regions ] &&
  [ "$(echo "$st" | jq -r .bitmap_file.recovery_regions)" = 3 ] ||
  fail "after a reboot the recovery is not 3 regions: $st"
delta_map c2 > "$tmpdir/map"
printf '%s\n' "0 128" "256 64" | diff -u - "$tmpdir/map" ||
  fail "delta map since c2 after a reboot is not the written regions"
stop_nbdkit "$sock"
start
[ "$(ctl "$ctl" status | jq -c .bitmap_file.recovery)" = null ] ||
  fail "still recovered after a clean stop"

echo "=== status during a stuck write"
stop_nbdkit "$sock"
rm -f "$sock" "$ctl"
start_nbdkit "$sock" --filter="$DB" --filter=delay file "$disk" \
  bitmap-file="$bm" control="$ctl" delay-write=5
nbdsh -u "$live" -c 'h.pwrite(b"d" * 4096, 0)' &
writer=$!
# Until the write is surely in the delay (nbdsh starts in well under
# 2 s; the write is marked before it goes down).
sleep 2
t0=$(date +%s%N)
st=$(ctl "$ctl" status)
t1=$(date +%s%N)
ok "$st"
echo "status took $(( (t1 - t0) / 1000000 )) ms with a write in flight"
[ $(( (t1 - t0) / 1000000 )) -lt 1000 ] ||
  fail "status waited for a guest write in flight"
wait $writer
stop_nbdkit "$sock"

echo "=== clean-stop: kill -9"
start bitmap-sync=clean-stop
[ "$(ctl "$ctl" status | jq -r .bitmap_file.sync)" = clean-stop ] ||
  fail "status does not say clean-stop"
nbdsh -u "$live" -c 'h.pwrite(b"e" * 4096, 70 * 65536)'
kill9
start bitmap-sync=clean-stop
st=$(ctl "$ctl" status)
[ "$(echo "$st" | jq -c '[.checkpoints[] | .consistent] | unique')" = '[false]' ] ||
  fail "after kill -9 in clean-stop mode a checkpoint is trusted: $st"
echo "$st" | jq -r '.checkpoints[0].reason' | grep -q 'did not stop cleanly' ||
  fail "no reason: $st"
echo OK

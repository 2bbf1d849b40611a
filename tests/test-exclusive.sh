#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# One server per file.  Server A (in the background, as nbdkit
# runs by default) holds its bitmap-file F and its cbw-target T; server B,
# another disk of the same size, is refused at start-up when it names F
# or T, with one line naming the parameter, the file and A's pid (also
# when B would go to the background), and F is left untouched.  Once A
# stops, B starts.  Then bitmap-disk-id=: disks A and B taking turns on
# one file: B is refused (with or without an id of its own), the file is
# byte for byte what A left and A's checkpoint is still trusted; a file
# without an id adopts the first id given; bad ids are refused.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdinfo nbdsh

size=16M
truncate -s $size "$tmpdir/a.img" "$tmpdir/b.img"
printf 'disk A' | dd of="$tmpdir/a.img" conv=notrunc status=none
printf 'disk B' | dd of="$tmpdir/b.img" conv=notrunc status=none
F=$tmpdir/a.bitmaps
T=$tmpdir/a.fleece
stack=(--filter="$SA" --filter="$CBW" --filter="$DB")

echo "=== A runs in the background with F and T"
rm -f "$tmpdir/a.sock"
_pidfiles+=("$tmpdir/a.pid")
nbdkit -U "$tmpdir/a.sock" -P "$tmpdir/a.pid" "${stack[@]}" \
  file "$tmpdir/a.img" bitmap-file="$F" cbw-target="$T" \
  control="$tmpdir/a.ctl" 2>"$tmpdir/a.log" ||
  fail "server A did not start: $(cat "$tmpdir/a.log")"
for _ in $(seq 100); do
  [ -s "$tmpdir/a.pid" ] && [ -S "$tmpdir/a.sock" ] && break
  sleep 0.1
done
nbdinfo --size "nbd+unix:///?socket=$tmpdir/a.sock" >/dev/null ||
  fail "server A does not serve"
apid=$(cat "$tmpdir/a.pid")
[ "$(cat "$F.lock")" = "$apid" ] ||
  fail "$F.lock holds '$(cat "$F.lock")', expected A's pid $apid"
[ "$(cat "$T.lock")" = "$apid" ] ||
  fail "$T.lock holds '$(cat "$T.lock")', expected A's pid $apid"
echo "checkpoint-create a1" | socat -t 5 - UNIX-CONNECT:"$tmpdir/a.ctl" |
  jq -e .ok >/dev/null || fail "checkpoint-create a1 on A failed"
cp "$F" "$tmpdir/F.before"

echo "=== B with A's bitmap-file is refused"
expect_refused "^nbdkit: .*error: bitmap-file=$F: in use by another nbdkit \(pid $apid\); two servers must never share a bitmap file$" \
  "${stack[@]}" file "$tmpdir/b.img" bitmap-file="$F" \
  cbw-target="$tmpdir/b.fleece"
sed 's/^/  /' "$tmpdir/refused.log"
[ "$(grep -c 'error:' "$tmpdir/refused.log")" = 1 ] ||
  fail "more than one error line: $(cat "$tmpdir/refused.log")"
cmp -s "$F" "$tmpdir/F.before" || fail "B's attempt changed $F"

echo "=== B with A's cbw-target is refused"
expect_refused "^nbdkit: .*error: cbw-target=$T: in use by another nbdkit \(pid $apid\); two servers must never share a fleecing target$" \
  "${stack[@]}" file "$tmpdir/b.img" bitmap-file="$tmpdir/b.bitmaps" \
  cbw-target="$T"
sed 's/^/  /' "$tmpdir/refused.log"
[ "$(grep -c 'error:' "$tmpdir/refused.log")" = 1 ] ||
  fail "more than one error line: $(cat "$tmpdir/refused.log")"

echo "=== B going to the background is refused before it forks"
rm -f "$tmpdir/b.sock" "$tmpdir/b.pid"
_pidfiles+=("$tmpdir/b.pid")
if nbdkit -U "$tmpdir/b.sock" -P "$tmpdir/b.pid" "${stack[@]}" \
     file "$tmpdir/b.img" bitmap-file="$F" cbw-target="$tmpdir/b.fleece" \
     2>"$tmpdir/b.log"; then
  fail "nbdkit B (background) exited 0 with A's bitmap-file"
fi
grep -q "in use by another nbdkit (pid $apid)" "$tmpdir/b.log" ||
  fail "B's error does not name A: $(cat "$tmpdir/b.log")"
[ ! -s "$tmpdir/b.pid" ] || fail "B wrote a pid file"
cmp -s "$F" "$tmpdir/F.before" || fail "B's attempts changed $F"
[ "$(cat "$F.lock")" = "$apid" ] || fail "B's attempts changed $F.lock"

echo "=== after A stops, B starts with its own files, and with T"
kill "$apid"
for _ in $(seq 100); do kill -0 "$apid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$apid" 2>/dev/null && fail "server A did not stop"
rm -f "$tmpdir/a.pid"
expect_accepted "${stack[@]}" file "$tmpdir/b.img" \
  bitmap-file="$tmpdir/b.bitmaps" cbw-target="$tmpdir/b.fleece"
expect_accepted "${stack[@]}" file "$tmpdir/b.img" \
  bitmap-file="$tmpdir/b2.bitmaps" cbw-target="$T"

echo "=== bitmap-disk-id: A and B take turns on one file"
G=$tmpdir/shared.bitmaps
start_a ()
{
  rm -f "$tmpdir/a.sock"
  start_nbdkit "$tmpdir/a.sock" "${stack[@]}" file "$tmpdir/a.img" \
    bitmap-file="$G" control="$tmpdir/a.ctl" "$@"
  nbdinfo --size "nbd+unix:///?socket=$tmpdir/a.sock" >/dev/null ||
    fail "server A does not serve"
}
start_a bitmap-disk-id=vm-a
ctl "$tmpdir/a.ctl" "checkpoint-create c1" | jq -e .ok >/dev/null ||
  fail "checkpoint-create c1 failed"
nbdsh -u "nbd+unix:///?socket=$tmpdir/a.sock" \
  -c 'h.pwrite(b"x" * 65536, 1048576)'
stop_nbdkit "$tmpdir/a.sock"
cp "$G" "$tmpdir/G.before"
expect_refused "^nbdkit: .*error: bitmap-file=$G belongs to disk 'vm-a', this server is disk 'vm-b'" \
  "${stack[@]}" file "$tmpdir/b.img" bitmap-file="$G" bitmap-disk-id=vm-b
sed 's/^/  /' "$tmpdir/refused.log"
expect_refused "^nbdkit: .*error: bitmap-file=$G belongs to disk 'vm-a', this server has no bitmap-disk-id" \
  "${stack[@]}" file "$tmpdir/b.img" bitmap-file="$G"
sed 's/^/  /' "$tmpdir/refused.log"
cmp -s "$G" "$tmpdir/G.before" || fail "B's attempts changed $G"
for p in "$G".damaged*; do
  [ ! -e "$p" ] || fail "B's attempts moved the file aside to $p"
done
start_a bitmap-disk-id=vm-a
ctl "$tmpdir/a.ctl" status >"$tmpdir/status.json"
jq -e '.checkpoints | length == 1 and .[0].name == "c1" and
       .[0].consistent == true and .[0].dirty_bytes == 65536' \
  "$tmpdir/status.json" >/dev/null ||
  fail "A's checkpoint is not intact after B's attempts: $(cat "$tmpdir/status.json")"
stop_nbdkit "$tmpdir/a.sock"

echo "=== a file without an id adopts the first one given"
H=$tmpdir/noid.bitmaps
rm -f "$tmpdir/a.sock"
start_nbdkit "$tmpdir/a.sock" "${stack[@]}" file "$tmpdir/a.img" \
  bitmap-file="$H"
nbdinfo --size "nbd+unix:///?socket=$tmpdir/a.sock" >/dev/null
stop_nbdkit "$tmpdir/a.sock"
grep -aq 'vm-a' "$H" && fail "$H records an id nobody gave"
rm -f "$tmpdir/a.sock"
start_nbdkit "$tmpdir/a.sock" "${stack[@]}" file "$tmpdir/a.img" \
  bitmap-file="$H" bitmap-disk-id=vm-a
nbdinfo --size "nbd+unix:///?socket=$tmpdir/a.sock" >/dev/null
grep -q "bitmap-file=$H: records no disk id; it now belongs to disk 'vm-a'" \
  "$tmpdir/a.sock.log" || fail "the adoption is not logged"
stop_nbdkit "$tmpdir/a.sock"
grep -aq 'vm-a' "$H" || fail "$H does not record the adopted id"
expect_refused "belongs to disk 'vm-a', this server is disk 'vm-b'" \
  "${stack[@]}" file "$tmpdir/b.img" bitmap-file="$H" bitmap-disk-id=vm-b

echo "=== bad ids"
expect_refused "^nbdkit: .*error: bitmap-disk-id=a b: a disk id is 1 to 64 printable" \
  "${stack[@]}" file "$tmpdir/a.img" bitmap-file="$H" "bitmap-disk-id=a b"
expect_refused "bitmap-disk-id=: a disk id is" \
  "${stack[@]}" file "$tmpdir/a.img" bitmap-file="$H" "bitmap-disk-id="
expect_refused "bitmap-disk-id=$(printf 'x%.0s' $(seq 65)): a disk id" \
  "${stack[@]}" file "$tmpdir/a.img" bitmap-file="$H" \
  "bitmap-disk-id=$(printf 'x%.0s' $(seq 65))"
expect_refused "bitmap-disk-id=vm-a: .*needs bitmap-file" \
  "${stack[@]}" file "$tmpdir/a.img" bitmap-disk-id=vm-a

echo "OK"

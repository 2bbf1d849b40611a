#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The disk changes size under the server.
#
# * grow: after a full backup with checkpoint c1 the file grows from 8M
#   to 16M; a new connection writes at 12M and 1M.  The delta export
#   snapshot/since/c1 of the next snapshot is 16M, its map is all of
#   [8M,16M) (new space counts as changed since every checkpoint) plus
#   the granule at 1M, and the stock recipe applied onto the full backup
#   grown to 16M gives exactly the disk.
# * shrink: the file shrinks while a snapshot is active; the server
#   stays up, the snapshot is marked broken and never serves wrong data
#   (safe_resize.py).

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdcopy nbdinfo nbdsh cmp python3-nbd

M=$((1024 * 1024))
ok () { echo "$1" | jq -e '.ok == true' >/dev/null || fail "control: $1"; }

# --- grow
start_stack grow 8M
live="nbd+unix:///?socket=$sock"
snap="nbd+unix:///snapshot?socket=$sock"
delta="nbd+unix:///snapshot/since/c1?socket=$sock"

ok "$(ctl "$ctl" 'snapshot-begin checkpoint=c1')"
nbdcopy "$snap" "$tmpdir/full.img"
ok "$(ctl "$ctl" snapshot-end)"

truncate -s 16M "$disk"
nbdsh -u "$live" -c '
size = h.get_size()
assert size == 16 * 1024 * 1024, "a new connection sees %d bytes" % size
h.pwrite(b"\x5a" * 8192 + bytes(range(256)) * 32, 12 * 1024 * 1024 + 512)
h.pwrite(b"\xc3" * 4096, 1024 * 1024 + 100)
'

ok "$(ctl "$ctl" 'snapshot-begin checkpoint=c2 since=c1')"
cp "$disk" "$tmpdir/truth.img"     # nothing writes while it is active

size=$(nbdinfo --size "$delta") || fail "grow: the delta export does not open"
[ "$size" -eq $((16 * M)) ] ||
  fail "grow: the delta export has $size bytes, the disk has $((16 * M))"

nbdinfo --map "$delta" > "$tmpdir/map" || fail "grow: nbdinfo --map failed"
cat "$tmpdir/map"
# The changed granules, one per line.
awk '$3 == 0 { for (g = $1 / 65536; g < ($1 + $2) / 65536; g++) print g }' \
  "$tmpdir/map" > "$tmpdir/got"
{ echo 16; seq 128 255; } > "$tmpdir/want"
diff -u "$tmpdir/want" "$tmpdir/got" > "$tmpdir/map.diff" || {
  head -n 20 "$tmpdir/map.diff"
  fail "grow: the changed-block map is not the granule at 1M plus [8M,16M)"
}

cp "$tmpdir/full.img" "$tmpdir/incr.img"
truncate -s 16M "$tmpdir/incr.img"
nbdcopy --destination-is-zero -S 0 --request-size=65536 "$delta" -- \
  [ nbdkit file "$tmpdir/incr.img" ] || fail "grow: nbdcopy of the delta failed"
cmp "$tmpdir/incr.img" "$tmpdir/truth.img" ||
  fail "grow: full backup + delta differs from the disk"
ok "$(ctl "$ctl" snapshot-end)"
stop_nbdkit "$sock"
rm -f "$sock"
echo "grow: OK"

# --- shrink
start_stack shrink 8M
/usr/bin/python3 "$abs_top_srcdir/tests/safe_resize.py" \
  --sock "$sock" --ctl "$ctl" --pid-file "$sock.pid" --disk "$disk" ||
  fail "shrink (log: $sock.log)"
stop_nbdkit "$sock"
echo "shrink: OK"

echo "OK"

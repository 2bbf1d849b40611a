#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The incremental backup recipe of the README and the man page, with
# stock tools only (socat, nbdcopy, nbdinfo): a full backup, changes
# (data, zeroes, trims, a changed block whose new contents are zero),
# then the delta export applied onto a copy of the full backup with
# nbdcopy --destination-is-zero must equal the disk at the second
# snapshot, and nbdinfo --map must list exactly the changed granules.
# The nbdcopy options are the ones the man page explains; the test
# fails if nbdcopy stops skipping holes or starts skipping zero data.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat nbdcopy nbdinfo nbdsh jq

start_stack disk 32M

live="nbd+unix:///?socket=$sock"
snap="nbd+unix:///snapshot?socket=$sock"
delta="nbd+unix:///snapshot/since/c1?socket=$sock"

ok () { echo "$1" | jq -e .ok >/dev/null || fail "control: $1"; }

ok "$(ctl "$ctl" 'snapshot-begin checkpoint=c1')"
nbdcopy "$snap" "$tmpdir/full.img"
ok "$(ctl "$ctl" snapshot-end)"

# Changes, granule size 64K: granules 0-3 (zero data), 100 (data),
# 200-201 (zero request), 300-304 (trim).
nbdsh -u "$live" -c '
h.pwrite(bytes(200000), 5000)
h.pwrite(b"new data", 100 * 65536 + 7)
h.zero(2 * 65536, 200 * 65536)
h.trim(5 * 65536, 300 * 65536)
'

ok "$(ctl "$ctl" 'snapshot-begin checkpoint=c2 since=c1')"
# With no writers the live disk is the snapshot point.
nbdcopy "$live" "$tmpdir/truth.img"

# The changed-block map.
nbdinfo --map "$delta" > "$tmpdir/map"
cat "$tmpdir/map"
awk '$3 == 0 { print $1 / 65536, $2 / 65536 }' "$tmpdir/map" > "$tmpdir/data"
printf '%s\n' "0 4" "100 1" "200 2" "300 5" | diff -u - "$tmpdir/data" ||
  fail "changed-block map is not exactly the written granules"

# The recipe: apply the delta onto a copy of the full backup.
cp "$tmpdir/full.img" "$tmpdir/incr.img"
nbdcopy --destination-is-zero -S 0 --request-size=65536 "$delta" -- [ nbdkit file "$tmpdir/incr.img" ]
cmp "$tmpdir/incr.img" "$tmpdir/truth.img" ||
  fail "full backup + delta differs from the disk at the snapshot point"
# And it really needed the delta: the full backup alone differs.
if cmp -s "$tmpdir/full.img" "$tmpdir/truth.img"; then
  fail "the changes did not change the disk"
fi

ok "$(ctl "$ctl" snapshot-end)"
echo "OK"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# A stock nbdkit filter between the project's filters,
# or a caching one above snapshot-access, would make the snapshot or the
# changed-block map describe a different disk than the one cbw and
# dirty-bitmap see (an offset, a private copy, a shared cache).  Such a
# stack is refused at start-up with an error naming the filter, given
# by short name or by path.  A filter above the stack that passes
# requests through (log) and a filter below the lowest project filter
# (offset) are accepted; with offset below, a full backup is exact.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdcopy nbdsh nbdinfo cmp

filterdir=$(nbdkit --dump-config | sed -n 's/^filterdir=//p')
[ -d "$filterdir" ] || fail "nbdkit --dump-config names no filterdir"

disk=$tmpdir/disk.img
head -c 16M /dev/urandom > "$disk"

# X and its parameters.
declare -A params=(
  [offset]="offset=1M"
  [cow]=""
  [cache]=""
  [truncate]="truncate=4M"
)

for x in offset cow cache truncate; do
  # shellcheck disable=SC2206
  p=(${params[$x]})
  for f in "$x" "$filterdir/nbdkit-$x-filter.so"; do
    expect_refused "$x" \
      --filter="$SA" --filter="$f" --filter="$CBW" --filter="$DB" \
      file "$disk" "${p[@]+"${p[@]}"}"
    expect_refused "$x" \
      --filter="$SA" --filter="$CBW" --filter="$f" --filter="$DB" \
      file "$disk" "${p[@]+"${p[@]}"}"
  done
  echo "$x between the project's filters: refused"
done

# A cache above snapshot-access is shared by every export: it would
# serve live blocks as snapshot blocks.
for x in cache cow; do
  for f in "$x" "$filterdir/nbdkit-$x-filter.so"; do
    expect_refused "$x" \
      --filter="$f" --filter="$SA" --filter="$CBW" --filter="$DB" \
      file "$disk"
  done
  echo "$x above snapshot-access: refused"
done

# Accepted: log on top, offset at the bottom.
expect_accepted --filter=log \
  --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" logfile="$tmpdir/nbdkit.log"
expect_accepted --filter="$SA" --filter="$CBW" --filter="$DB" \
  --filter=offset file "$disk" offset=1M

# And a full backup through the offset view is exact.
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  --filter=offset file "$disk" offset=1M control="$ctl"
tail -c +$((1024 * 1024 + 1)) "$disk" > "$tmpdir/before.img"
head -c 1M "$disk" > "$tmpdir/head.img"
r=$(ctl "$ctl" 'snapshot-begin checkpoint=c1')
echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-begin: $r"
nbdsh -u "nbd+unix:///?socket=$sock" -c '
import os
h.pwrite(os.urandom(200000), 0)
h.pwrite(os.urandom(65536), 5 * 1024 * 1024 + 4096)
h.zero(1024 * 1024, 10 * 1024 * 1024)
'
cmp -s "$tmpdir/before.img" <(tail -c +$((1024 * 1024 + 1)) "$disk") &&
  fail "the writes through the offset view did not change the disk"
nbdcopy "nbd+unix:///snapshot?socket=$sock" "$tmpdir/backup.img"
cmp "$tmpdir/backup.img" "$tmpdir/before.img" ||
  fail "offset below the stack: the snapshot differs from the disk at the snapshot point"
# The first MiB of the file is outside the view and untouched.
cmp -n $((1024 * 1024)) "$disk" "$tmpdir/head.img" ||
  fail "offset below the stack: a write landed outside the offset view"
r=$(ctl "$ctl" snapshot-end)
echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-end: $r"
stop_nbdkit "$sock"

# The plugin must serve one disk for every export name, and the
# target and bitmap file are never the disk.
mkdir "$tmpdir/images"
expect_refused 'file plugin with dir=' \
  --filter="$SA" --filter="$CBW" --filter="$DB" file dir="$tmpdir/images"
expect_refused 'dynamic-export' \
  --filter="$DB" nbd socket="$tmpdir/none.sock" dynamic-export=true
cp "$disk" "$tmpdir/disk.copy"
expect_refused 'cbw-target=.* is the disk itself' \
  --filter="$SA" --filter="$CBW" file "$disk" cbw-target="$disk"
expect_refused 'bitmap-file=.* is the disk itself' \
  --filter="$DB" file file="$disk" bitmap-file="$disk"
expect_refused 'are the same file' \
  --filter="$SA" --filter="$CBW" --filter="$DB" file "$disk" \
  bitmap-file="$tmpdir/disk.copy" cbw-target="$tmpdir/disk.copy"
cmp "$disk" "$tmpdir/disk.copy" || fail "a refused start changed the disk or its copy"

echo "OK"

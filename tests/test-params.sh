#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Every bad parameter is refused at start-up with one error naming the
# parameter; good ones are accepted.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo

all=(--filter="$SA" --filter="$CBW" --filter="$DB")

# cbw
expect_refused 'cbw-cluster-size=3K: must be a power of two' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=3K
expect_refused 'cbw-cluster-size=2K: must be a power of two from 4K to 16M' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=2K
expect_refused 'cbw-cluster-size=32M: must be a power of two from 4K to 16M' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=32M
expect_refused 'cbw-cluster-size=lots: expected a number' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=lots
expect_refused 'cbw-cluster-size: given twice' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=64K cbw-cluster-size=64K
expect_refused 'cbw-on-error=ignore: expected break-guest-write or break-snapshot' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-on-error=ignore
expect_refused 'cbw-timeout=-1: expected a number' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-timeout=-1
expect_refused 'cbw-timeout=1s: expected a plain decimal number' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-timeout=1s
expect_refused 'cbw-timeout=86401: number is too large' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-timeout=86401
expect_refused "cbw-target=$tmpdir/no/such/dir/fleece: directory $tmpdir/no/such/dir" \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target="$tmpdir/no/such/dir/fleece"
expect_refused "cbw-target=$tmpdir: not a regular file or block device" \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target="$tmpdir"
expect_refused 'cbw-target=http://example.invalid/x: unsupported URI scheme' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target=http://example.invalid/x
expect_refused 'cbw-target: given twice' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target="$tmpdir/a" cbw-target="$tmpdir/b"
expect_refused 'cbw-colour: unknown cbw parameter' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-colour=blue

# snapshot-access
expect_refused 'snapshot-export: the name is empty' \
  "${all[@]}" memory 1M snapshot-export=
expect_refused 'snapshot-export=a/since/b: the name may not contain' \
  "${all[@]}" memory 1M snapshot-export=a/since/b
expect_refused 'snapshot-export: the name may only contain printable ASCII' \
  "${all[@]}" memory 1M 'snapshot-export=a b'
expect_refused 'snapshot-discard=maybe: expected true or false' \
  "${all[@]}" memory 1M snapshot-discard=maybe

# dirty-bitmap
expect_refused 'bitmap-granularity=100K: must be a power of two' \
  --filter="$DB" memory 1M bitmap-granularity=100K
expect_refused 'bitmap-granularity=32M: must be a power of two from 4K to 16M' \
  --filter="$DB" memory 1M bitmap-granularity=32M
expect_refused "bitmap-file=$tmpdir/none/x: directory $tmpdir/none" \
  --filter="$DB" memory 1M bitmap-file="$tmpdir/none/x"
expect_refused "bitmap-file=$tmpdir: exists and is not a regular file" \
  --filter="$DB" memory 1M bitmap-file="$tmpdir"
expect_refused 'bitmap-colour: unknown dirty-bitmap parameter' \
  --filter="$DB" memory 1M bitmap-colour=red

# control
expect_refused 'control: given twice' \
  --filter="$SA" --filter="$CBW" memory 1M control="$tmpdir/c1" control="$tmpdir/c2"
expect_refused "control=$tmpdir/none/ctl: directory $tmpdir/none" \
  --filter="$SA" --filter="$CBW" memory 1M control="$tmpdir/none/ctl"

expect_refused 'cbw-target-limit=0: must be more than 0' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target-limit=0
expect_refused 'cbw-target-limit=lots' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target-limit=lots
expect_refused 'cbw-target-limit=1024: smaller than one cluster' \
  --filter="$SA" --filter="$CBW" memory 1M cbw-target-limit=1K

# A parameter whose filter is missing from the stack.
expect_refused 'bitmap-file: this parameter belongs to the dirty-bitmap filter, which is not in the stack; add --filter=dirty-bitmap' \
  --filter="$SA" --filter="$CBW" memory 1M bitmap-file="$tmpdir/bm"
expect_refused 'cbw-cluster-size: this parameter belongs to the cbw filter' \
  --filter="$DB" memory 1M cbw-cluster-size=64K
expect_refused 'snapshot-export: this parameter belongs to the snapshot-access filter' \
  --filter="$CBW" memory 1M snapshot-export=snap

# Exactly one error line for a bad value (nbdkit adds nothing else).
nbdkit -U "$(run_sock)" --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=3K --run true \
  >"$tmpdir/one.log" 2>&1 && fail "3K accepted"
[ "$(grep -c . "$tmpdir/one.log")" -eq 1 ] || {
  cat "$tmpdir/one.log"; fail "expected exactly one error line"; }

# Good values, relative paths made absolute.
expect_accepted --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=4K
expect_accepted --filter="$SA" --filter="$CBW" memory 1M cbw-cluster-size=16M \
  cbw-on-error=break-snapshot cbw-timeout=30
expect_accepted --filter="$SA" --filter="$CBW" memory 1M cbw-target=nbd+unix:///?socket=/nonexistent
expect_accepted "${all[@]}" memory 1M \
  cbw-target="$tmpdir/fleece" cbw-cluster-size=1M \
  cbw-on-error=break-guest-write cbw-timeout=0 \
  snapshot-export=snap snapshot-discard=true \
  bitmap-file="$tmpdir/bitmaps" bitmap-granularity=4K \
  control="$tmpdir/ctl.sock"
( cd "$tmpdir" &&
  nbdkit -U "$(run_sock)" -v --filter="$SA" --filter="$CBW" memory 1M cbw-target=rel.fleece \
    --run true ) >"$tmpdir/rel.log" 2>&1 || { cat "$tmpdir/rel.log"; fail "relative target"; }
grep -q "target: file $tmpdir/rel.fleece" "$tmpdir/rel.log" ||
  { cat "$tmpdir/rel.log"; fail "relative cbw-target not made absolute"; }

echo "OK"

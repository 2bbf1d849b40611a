#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# fleecectl restore follows a live restore (the stream filter's
# background population) to completion: plain progress lines when not
# on a terminal, exit status 0 only once every cluster is populated,
# and the local image then equals the base.  Without a stream filter
# it fails with one line.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq
STREAM=$abs_top_builddir/filters/stream/.libs/nbdkit-stream-filter.so
FC=$abs_top_builddir/fleecectl/fleecectl
[ -x "$FC" ] || fail "fleecectl was not built"

head -c 8M /dev/urandom > "$tmpdir/base.img"
truncate -s 8M "$tmpdir/local.img"
start_nbdkit "$tmpdir/base.sock" -r file "$tmpdir/base.img"
ctl=$tmpdir/ctl.sock
start_nbdkit "$tmpdir/nbd.sock" --filter="$STREAM" file "$tmpdir/local.img" \
  stream-base="nbd+unix:///?socket=$tmpdir/base.sock" \
  stream-state="$tmpdir/state" stream-speed=4M control="$ctl"

"$FC" -c "$ctl" restore --interval 200 > "$tmpdir/out" 2>&1 ||
  { cat "$tmpdir/out"; fail "fleecectl restore did not end with success"; }
cat "$tmpdir/out"
[ "$(grep -c '^restore' "$tmpdir/out")" -ge 2 ] ||
  fail "fleecectl restore printed no progress lines"
grep -q 'complete' "$tmpdir/out" || fail "no final line"
st=$(ctl "$ctl" status)
echo "$st" | jq -e '.stream.state == "complete"' >/dev/null ||
  fail "fleecectl restore returned before the stream was complete: $st"
cmp "$tmpdir/local.img" "$tmpdir/base.img" ||
  fail "the restored image differs from the base"

# Without a stream filter.
start_nbdkit "$tmpdir/b.sock" --filter="$DB" memory 1M control="$tmpdir/b.ctl"
if "$FC" -c "$tmpdir/b.ctl" restore > "$tmpdir/out2" 2>&1; then
  fail "fleecectl restore succeeded without a stream filter"
fi
grep -q 'no stream filter' "$tmpdir/out2" || { cat "$tmpdir/out2"; fail "message"; }
echo "OK"

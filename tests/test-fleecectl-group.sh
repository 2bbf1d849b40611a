#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# fleecectl group-snapshot across three servers with writers running:
# consistent cuts, rollback after a bad socket, a failing
# snapshot-begin or expired holds, and a coordinator killed while it
# holds.  See fleecectl_group.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

FC=$abs_top_builddir/fleecectl/fleecectl
[ -x "$FC" ] || fail "fleecectl was not built"

socks= ctls=
for i in 1 2 3; do
  start_stack "d$i" 1M
  socks+=${socks:+,}$sock
  ctls+=${ctls:+,}$ctl
done

/usr/bin/python3 "$abs_top_srcdir/tests/fleecectl_group.py" \
  --socks "$socks" --ctls "$ctls" --fleecectl "$FC" --tmpdir "$tmpdir" ||
  fail "fleecectl group-snapshot"

for i in 1 2 3; do stop_nbdkit "$tmpdir/d$i.sock"; done
echo OK

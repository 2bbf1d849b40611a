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

# Usage errors: exit status 2, one line, nothing sent.
c1=${ctls%%,*}
usage ()
{
  local rc=0
  "$FC" group-snapshot "$@" >"$tmpdir/out" 2>"$tmpdir/err" || rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <"$tmpdir/err")" -eq 1 ] ||
    fail "group-snapshot $*: exit $rc, $(cat "$tmpdir/err")"
}
usage
usage "$c1" "$c1"
usage --timeout 0 "$c1"
usage --timeout 1.5 "$c1"
usage --name 'a b' "$c1"
usage --checkpoint -x "$c1"
usage --bogus "$c1"
"$FC" --help | grep -q 'group-snapshot' || fail "--help does not mention group-snapshot"
[ "$(ctl_ok "$c1" status | jq -c '[.snapshots, .checkpoints, .quiesce.holds]')" = '[[],[],0]' ] ||
  fail "a usage error changed the server: $(ctl "$c1" status)"

/usr/bin/python3 "$abs_top_srcdir/tests/fleecectl_group.py" \
  --socks "$socks" --ctls "$ctls" --fleecectl "$FC" --tmpdir "$tmpdir" ||
  fail "fleecectl group-snapshot"

for i in 1 2 3; do stop_nbdkit "$tmpdir/d$i.sock"; done
echo OK

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Power loss with bitmap-sync=write-ahead: nbdkit runs under an
# LD_PRELOAD shim (powerloss-shim.so) that logs every write and sync of
# the bitmap file and every write issued to the disk; for many crash
# points the bitmap file is rebuilt from only what was synced plus a
# random subset of the unsynced writes, torn at 512-byte sectors, and
# decoded by the filter's decoder (bmfile-dump): it must be valid, every
# checkpoint consistent, and cover every disk write issued after the
# checkpoint was created.  See incr_powerloss.py.
#
#   FLEECE_POWERLOSS_POINTS=N   crash points (default 50, a few seconds;
#                               e.g. 2000 for a long run)
#   FLEECE_POWERLOSS_SECONDS=S  workload length (default 2)
#   FLEECE_POWERLOSS_SEED=N     seed (default 1)

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3 nbdkit
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

shim=$abs_top_builddir/tests/.libs/powerloss-shim.so
dump=$abs_top_builddir/tests/bmfile-dump
[ -f "$shim" ] && [ -x "$dump" ] ||
  fail "$shim or $dump is not built (make -C tests check builds them)"

d=$tmpdir/pl
mkdir "$d"
_pidfiles+=("$d/nbdkit.pid")

if ! /usr/bin/python3 "$abs_top_srcdir/tests/incr_powerloss.py" --dir "$d" \
     --db "$DB" --shim "$shim" --dump "$dump" --pid-file "$d/nbdkit.pid" \
     --points "${FLEECE_POWERLOSS_POINTS:-50}" \
     --seconds "${FLEECE_POWERLOSS_SECONDS:-2}" \
     --seed "${FLEECE_POWERLOSS_SEED:-1}"; then
  tail -n 20 "$d/nbdkit.log" >&2 || true
  fail "power loss on the bitmap file"
fi
echo OK

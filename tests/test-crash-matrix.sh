#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The crash matrix: nbdkit with snapshot-access, cbw and dirty-bitmap
# (bitmap-file=, file plugin on a disk file) is killed with SIGKILL at
# seeded random moments during writes and FLUSHes, snapshot-begin/end
# and checkpoint-create/delete; every 4th trial stops it with SIGTERM
# instead.  After each stop nbdkit restarts on the same disk and bitmap
# file; the live disk must hold every flushed write, the bitmap file
# must always be valid and never moved aside, after SIGKILL every
# checkpoint must be consistent:false, after SIGTERM consistent with a
# delta map covering every later write, and a checkpoint created after
# the restart must track exactly.  See crash_matrix.py.
#
#   FLEECE_CRASH_TRIALS=N   number of trials (default 20, about 12 s)
#   FLEECE_CRASH_SEED=N     seed of the random choices (default 1)

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd

trials=${FLEECE_CRASH_TRIALS:-20}
seed=${FLEECE_CRASH_SEED:-1}
d=$tmpdir/crash
mkdir "$d"
# crash_matrix.py runs nbdkit itself with this pid file; the clean-up
# of functions.sh kills whatever is left if the driver dies.
_pidfiles+=("$d/nbdkit.pid")

if ! /usr/bin/python3 "$abs_top_srcdir/tests/crash_matrix.py" --dir "$d" \
     --sa "$SA" --cbw "$CBW" --db "$DB" --pid-file "$d/nbdkit.pid" \
     --trials "$trials" --seed "$seed"; then
  echo "--- last lines of $d/nbdkit.log:" >&2
  tail -n 40 "$d/nbdkit.log" >&2 || true
  fail "crash matrix (seed $seed, $trials trials)"
fi

echo "OK"

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
# must always be valid and never moved aside, and a checkpoint created
# after the restart must track exactly.  With bitmap-sync=write-ahead
# (the default; 20 trials) every checkpoint is consistent after SIGKILL
# too, status says it was recovered, and its delta map covers every
# write the client saw complete since it; with bitmap-sync=clean-stop
# (8 trials) after SIGKILL every checkpoint is consistent:false.  See
# crash_matrix.py.
#
#   FLEECE_CRASH_TRIALS=N   trials in write-ahead mode (default 20, ~12 s;
#                           clean-stop mode runs N/2.5)
#   FLEECE_CRASH_SEED=N     seed of the random choices (default 1)

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

trials=${FLEECE_CRASH_TRIALS:-20}
seed=${FLEECE_CRASH_SEED:-1}
d=$tmpdir/crash
mkdir "$d"
# crash_matrix.py runs nbdkit itself with this pid file; the clean-up
# of functions.sh kills whatever is left if the driver dies.
_pidfiles+=("$d/nbdkit.pid")

for sync in write-ahead clean-stop; do
  n=$trials
  [ "$sync" = clean-stop ] && n=$(( trials * 2 / 5 > 1 ? trials * 2 / 5 : 2 ))
  rm -rf "$d"/*
  echo "=== bitmap-sync=$sync"
  if ! /usr/bin/python3 "$abs_top_srcdir/tests/crash_matrix.py" --dir "$d" \
       --sa "$SA" --cbw "$CBW" --db "$DB" --pid-file "$d/nbdkit.pid" \
       --trials "$n" --seed "$seed" --sync "$sync"; then
    echo "--- last lines of $d/nbdkit.log:" >&2
    tail -n 40 "$d/nbdkit.log" >&2 || true
    fail "crash matrix (bitmap-sync=$sync, seed $seed, $n trials)"
  fi
done

echo "OK"

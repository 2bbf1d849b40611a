#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The stream filter against a byte model (tests/stream_test.py):
# several clients (reads, partial and whole-cluster writes, zeroes,
# trims, clusters shared between clients) while the job runs slowly,
# pause/resume/set-speed, the base killed and restarted mid-stream,
# completion and a restart without stream-base; then kill -9 of the
# server at random moments and restarts with the same state file.
# About 15 s.  FLEECE_STREAM_TRIALS=N runs N crash trials (default 3),
# FLEECE_SEED=N|random picks the seed.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: $0: Python libnbd bindings (python3-libnbd) are missing" >&2
  exit 77
}
STREAM=$abs_top_builddir/filters/stream/.libs/nbdkit-stream-filter.so

seed=${FLEECE_SEED:-1515}
[ "$seed" = random ] && seed=$(( $(date +%s) % 1000000 ))
trials=${FLEECE_STREAM_TRIALS:-3}
echo "seed: $seed, crash trials: $trials"

run ()
{
  local mode=$1; shift
  mkdir -p "$tmpdir/$mode"
  if ! /usr/bin/python3 "$abs_top_srcdir/tests/stream_test.py" "$mode" \
       --dir "$tmpdir/$mode" --filter "$STREAM" --seed "$seed" "$@"; then
    for f in "$tmpdir/$mode"/*.log; do
      echo "--- last lines of $f:" >&2
      tail -n 30 "$f" >&2
    done
    # Stop what the driver left running.
    for p in "$tmpdir/$mode"/*.pid; do
      [ -s "$p" ] && kill "$(cat "$p")" 2>/dev/null
    done
    fail "stream_test.py $mode (seed $seed)"
  fi
}

run model
run crash --trials "$trials"
echo OK

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The stream filter's stream-sync=flush (a disk's write cache: a first
# write to a cluster is durable at the guest's next flush), against the
# byte model of tests/stream_test.py:
#   - the model run with clients that also flush and write with FUA;
#   - kill -9 at random moments and restarts in the same boot: nothing
#     acknowledged is lost;
#   - simulated power losses (restarts with another fake boot id,
#     tests/stream_powerloss.py): clusters populated before the last
#     completed flush are exact, later ones the model or the base,
#     never a mix; a clean stop makes everything durable;
#   - stream-sync=bogus or given twice is refused, and flush over a
#     plugin without multi-conn; status says "sync".
# About 25 s.  FLEECE_STREAM_TRIALS=N runs N crash and N power-loss
# trials (default 3), FLEECE_SEED=N|random picks the seed.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq python3-nbd
STREAM=$abs_top_builddir/filters/stream/.libs/nbdkit-stream-filter.so

seed=${FLEECE_SEED:-2727}
[ "$seed" = random ] && seed=$(( $(date +%s) % 1000000 ))
trials=${FLEECE_STREAM_TRIALS:-3}
echo "seed: $seed, trials: $trials"

# Bad input, and status.
truncate -s 1M "$tmpdir/local.img" "$tmpdir/base.img"
start_nbdkit "$tmpdir/base.sock" -r file "$tmpdir/base.img"
args=(--filter="$STREAM" file "$tmpdir/local.img"
      stream-base="nbd+unix:///?socket=$tmpdir/base.sock"
      stream-state="$tmpdir/state" control="$tmpdir/ctl")
# One error line, naming the accepted values.
refused_once ()
{
  expect_refused "$@"
  [ "$(grep -c 'error' "$tmpdir/refused.log")" = 1 ] || {
    cat "$tmpdir/refused.log" >&2
    fail "nbdkit ${*:2}: expected exactly one error line"
  }
}
for bad in bogus ''; do
  refused_once "stream-sync=$bad: .*(write.*flush|flush.*write)" \
    "${args[@]}" stream-sync="$bad"
done
refused_once 'stream-sync.*twice' \
  "${args[@]}" stream-sync=flush stream-sync=write
test ! -e "$tmpdir/state" || fail "a refused start created the state file"
# The split plugin's flush does not cover every connection.
expect_refused_fg 'stream-sync=flush needs a disk whose flush covers every connection' \
  --filter="$STREAM" split "$tmpdir/local.img" "${args[@]:3}" stream-sync=flush
rm -f "$tmpdir/state" "$tmpdir/state.lock"
for mode in "" write flush; do
  rm -f "$tmpdir/state" "$tmpdir/state.lock" "$tmpdir/nbd.sock"
  start_nbdkit "$tmpdir/nbd.sock" "${args[@]}" ${mode:+stream-sync=$mode}
  reply=$(ctl_ok "$tmpdir/ctl" status)
  want=${mode:-write}
  jq -e --arg w "$want" '.stream.sync == $w' >/dev/null <<<"$reply" ||
    fail "stream-sync=${mode:-(not given)}: status should say \"sync\":\"$want\": $reply"
  stop_nbdkit "$tmpdir/nbd.sock"
done
stop_nbdkit "$tmpdir/base.sock"

run ()
{
  local mode=$1; shift
  mkdir -p "$tmpdir/$mode"
  if ! "$PY" "$abs_top_srcdir/tests/stream_test.py" "$mode" --sync flush \
       --dir "$tmpdir/$mode" --filter "$STREAM" --seed "$seed" "$@"; then
    show_logs "$tmpdir/$mode" 30
    # Stop what the driver left running.
    for p in "$tmpdir/$mode"/*.pid; do
      [ -s "$p" ] && kill "$(cat "$p")" 2>/dev/null
    done
    fail "stream_test.py $mode --sync flush (seed $seed)"
  fi
}

run model --seconds 2
run crash --trials "$trials"
run powerloss --trials "$trials"
echo OK

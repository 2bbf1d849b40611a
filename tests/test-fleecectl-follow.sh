#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# fleecectl backup's follower and fleecectl status's summary against a
# scripted control socket (fleecectl_fake_ctl.py), so they are tested
# whether or not the server runs backup jobs: the backup-start line it
# sends (absolute target, sync, since, checkpoint, speed,
# target-zeroed), plain progress lines about once a second when stdout
# is not a terminal, a bar redrawn with \r on a terminal, exit status
# 0 only for "completed", 1 with the job's error for "failed", 1 for a
# job that vanishes, job-cancel on SIGINT, and a summary of every part
# of a status document with keys the tool does not know.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3 script

FC=$abs_top_builddir/fleecectl/fleecectl
FAKE=$abs_top_srcdir/tests/fleecectl_fake_ctl.py
[ -x "$FC" ] || fail "fleecectl was not built"
ctl=$tmpdir/ctl.sock
log=$tmpdir/requests

# fake SCENARIO: (re)start the fake server.
fake ()
{
  local pidf=$tmpdir/fake.pid
  if [ -s "$pidf" ]; then
    kill "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
  fi
  rm -f "$ctl" "$log"
  /usr/bin/python3 "$FAKE" "$ctl" "$1" "$log" &
  echo $! > "$pidf"
  _pidfiles+=("$pidf")
  for _ in $(seq 50); do
    [ -S "$ctl" ] && return 0
    sleep 0.1
  done
  fail "the fake control socket did not start"
}

# run EXPECTED-STATUS OUT ARGS...: fleecectl's stdout to OUT, stderr
# to OUT.err, and its exit status must be EXPECTED-STATUS.
run ()
{
  local want=$1 out=$2 rc=0; shift 2
  "$FC" "$@" >"$out" 2>"$out.err" || rc=$?
  if [ "$rc" != "$want" ]; then
    cat "$out" "$out.err" >&2
    fail "fleecectl $*: exit status $rc, expected $want"
  fi
}

cd "$tmpdir"

# --- A job that completes, plain lines (stdout is a file).
fake complete
run 0 out1 -c "$ctl" backup --interval 50 --since c1 --checkpoint c2 \
  --speed 50M --target-zeroed rel/backup.img
cat out1
grep -qx "backup-start target=$tmpdir/rel/backup.img sync=incremental since=c1 checkpoint=c2 speed=50M target-zeroed=true" "$log" ||
  { cat "$log"; fail "backup-start line is wrong"; }
# ~2.5 s at one line a second: 2 to 4 progress lines, then the result.
n=$(grep -c '^backup 7: [0-9.]*% [0-9]*/104857600 bytes, ' out1 || true)
[ "$n" -ge 2 ] && [ "$n" -le 4 ] || fail "expected 2-4 progress lines, got $n"
grep -q '^backup 7: completed, 104857600 bytes in ' out1 ||
  fail "no completion line"
# Percentages grow, and the paused state is shown if a line fell in it.
grep -o '^backup 7: [0-9.]*%' out1 | tr -dc '0-9.\n' | sort -n -c ||
  fail "progress went backwards"
! grep -q $'\r' out1 || fail "a bar was drawn although stdout is no terminal"
[ ! -s out1.err ] || { cat out1.err; fail "unexpected stderr"; }
# Polled status while it ran, a few times per second.
p=$(grep -c '^status$' "$log")
[ "$p" -ge 10 ] || fail "only $p status polls"

# A full backup: sync=full, no since; a numeric job id.
fake numeric
FAKE_DURATION=0.3 run 0 out2 -c "$ctl" backup --interval 20 /abs/t.img
grep -qx "backup-start target=/abs/t.img sync=full" "$log" ||
  { cat "$log"; fail "full backup-start line is wrong"; }
grep -q '^backup 7: completed' out2 || fail "numeric id not followed"

# NBD URIs pass unchanged.
fake numeric
FAKE_DURATION=0.3 run 0 out2b -c "$ctl" backup --interval 20 -q \
  'nbd+unix:///?socket=rel.sock'
grep -qx "backup-start target=nbd+unix:///?socket=rel.sock sync=full" "$log" ||
  { cat "$log"; fail "URI target was changed"; }
[ ! -s out2b ] || fail "-q printed progress"

# --- On a terminal: a bar redrawn in place.
fake complete
FAKE_DURATION=1 script -qec "$FC -c $ctl backup --interval 50 /abs/t.img" \
  /dev/null > out3 < /dev/null || fail "backup on a terminal failed"
cat -v out3 | tail -c 600
[ "$(grep -o $'\r' out3 | wc -l)" -ge 5 ] || fail "the bar was not redrawn"
grep -q 'backup 7 \[#*\.*\] .*%.*MiB / 100 MiB.*ETA' out3 || fail "no bar"
grep -q 'completed, 104857600 bytes' out3 || fail "no completion on a terminal"

# --- A failing job: exit 1, its error on stderr.
fake fail
FAKE_DURATION=1 run 1 out4 -c "$ctl" backup --interval 20 /abs/t.img
grep -q 'backup job 7 failed: writing the target: No space left on device' \
  out4.err || { cat out4.err; fail "error not shown"; }
[ "$(wc -l < out4.err)" = 1 ] || fail "more than one error line"

# --- A job that vanishes from the list: exit 1.
fake vanish
FAKE_DURATION=100 run 1 out5 -c "$ctl" backup --interval 20 /abs/t.img
grep -q 'no longer listed' out5.err || fail "vanished job not reported"

# --- backup-start refused: exit 1, the server's message.
fake refuse
run 1 out6 -c "$ctl" backup /abs/t.img
grep -q "backup-start: unknown command 'backup-start'" out6.err ||
  fail "refusal not shown"

# --- Ctrl-C: job-cancel id=7, exit 1.
fake hang
"$FC" -c "$ctl" backup --interval 50 /abs/t.img > out7 2> out7.err &
fc=$!
for _ in $(seq 50); do
  grep -q '^backup 7: ' out7 && break
  sleep 0.1
done
grep -q '^backup 7: ' out7 || fail "no progress before the interrupt"
kill -INT $fc
rc=0; wait $fc || rc=$?
cat out7 out7.err
[ "$rc" = 1 ] || fail "interrupted backup exited with $rc, expected 1"
grep -qx 'job-cancel id=7' "$log" || fail "job-cancel was not sent"
grep -q 'interrupted: backup job 7 cancelled' out7.err ||
  fail "no cancel message"

# --- status: every part of the contract, unknown keys ignored.
fake rich
run 0 out8 -c "$ctl" status
cat out8
want="snapshot: active since 2026-11-22T15:00:00Z (checkpoint c2, since c1), 12 clusters copied, target 768 KiB, released 64 KiB
snapshot@n1: active since 2026-11-22T15:30:00Z, 3 clusters copied, target 192 KiB, released 0 B
  BROKEN: copy to the target failed: Input/output error
checkpoints:
  c1  created 2026-11-22T14:00:00Z  dirty 1.0 MiB  persistent  INCONSISTENT: server did not stop cleanly
  c2  created 2026-11-22T15:00:00Z  dirty 64 KiB  recording  persistent  consistent
  c3
jobs:
  4  backup incremental  failed  50.0%  1.0 MiB / 2.0 MiB  rate 512 KiB/s  speed limit 50 MiB/s  started 2026-11-22T15:00:00Z  finished 2026-11-22T15:00:02Z
    error: target: Input/output error
  5  job  running
stream: running  25.0%  1.0 MiB / 4.0 MiB  speed unlimited  base connected"
diff -u <(echo "$want") out8 || fail "status summary differs"
run 0 out9 -c "$ctl" status --json
jq -e '.stream.base_connected == true and (.jobs | length) == 2' out9 >/dev/null ||
  fail "--json is not the raw reply"

# --- A reply that is not JSON: exit 1, one line naming the socket.
fake garbage
run 1 out10 -c "$ctl" status
grep -q "$ctl: the reply to 'status' is not valid JSON" out10.err ||
  { cat out10.err; fail "bad JSON not reported"; }
run 1 out11 -c "$ctl" backup /abs/t.img

echo OK

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# fleecectl against a running stack: status as a summary (the
# snapshot with its checkpoint and copied clusters, every checkpoint
# with dirty bytes, recording and consistency, an inconsistent one
# with its reason after kill -9) and as raw JSON; control lines passed
# through (exit status 0 iff "ok":true, the reply printed); bad usage
# (exit status 2) and an absent server (1), each with one line on
# stderr.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdsh

FC=$abs_top_builddir/fleecectl/fleecectl
[ -x "$FC" ] || fail "fleecectl was not built"

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
disk=$tmpdir/disk.img
bm=$tmpdir/disk.bitmaps
truncate -s 16M "$disk"
stack=(--filter="$SA" --filter="$CBW" --filter="$DB" file "$disk"
       control="$ctl" bitmap-file="$bm")
start_nbdkit "$sock" "${stack[@]}"

# run EXPECTED-STATUS OUT ARGS...
run ()
{
  local want=$1 out=$2 rc=0; shift 2
  "$FC" "$@" >"$out" 2>"$out.err" || rc=$?
  if [ "$rc" != "$want" ]; then
    cat "$out" "$out.err" >&2
    fail "fleecectl $*: exit status $rc, expected $want"
  fi
  if [ "$want" != 0 ] && [ "$(wc -l < "$out.err")" != 1 ]; then
    cat "$out.err" >&2
    fail "fleecectl $*: expected one line on stderr"
  fi
}
out=$tmpdir/out

# --- Idle server.
run 0 "$out" -c "$ctl" status
# "jobs: none" only from servers that list jobs.
grep -vx 'jobs: none' "$out" | diff -u - <(printf '%s\n' \
  "snapshot: none" "checkpoints: none") || fail "idle status"

# --- Pass-through control lines.
run 0 "$out" -c "$ctl" checkpoint-create c0
[ "$(cat "$out")" = '{"ok":true}' ] || fail "pass-through reply: $(cat "$out")"
run 0 "$out" -c "$ctl" snapshot-begin checkpoint=c1
jq -e '.ok == true and .id >= 1' "$out" >/dev/null || fail "snapshot-begin reply"
run 1 "$out" -c "$ctl" checkpoint-delete nosuch
jq -e '.ok == false' "$out" >/dev/null || fail "refused reply not printed"
grep -q '^fleecectl: checkpoint-delete: .*nosuch' "$out.err" ||
  fail "refusal not on stderr"
run 1 "$out" -c "$ctl" no-such-command a=b
grep -q "unknown command 'no-such-command'" "$out.err" || fail "unknown command"

# Guest writes while the snapshot is active: 3 clusters copied, c1
# dirty in 3 granules.
nbdsh -u "nbd+unix:///?socket=$sock" -c '
h.pwrite(b"x" * 4096, 0)
h.pwrite(b"y" * 70000, 1048576)
'

# --- status: the summary agrees with the JSON.
run 0 "$tmpdir/json" -c "$ctl" status --json
jq -e '.ok == true and .snapshot.active == true' "$tmpdir/json" >/dev/null ||
  fail "--json is not the status reply"
run 0 "$tmpdir/json2" --json status -c "$ctl"
cmp "$tmpdir/json" "$tmpdir/json2" || fail "--json before the command"
run 0 "$out" -c "$ctl" status
cat "$out"
started=$(jq -r .snapshot.started "$tmpdir/json")
copied=$(jq -r .snapshot.clusters_copied "$tmpdir/json")
[ "$copied" = 3 ] || fail "expected 3 copied clusters, status says $copied"
grep -qx "snapshot: active since $started (checkpoint c1), 3 clusters copied, target 192 KiB, released 0 B" "$out" ||
  fail "snapshot line"
c0=$(jq -r '.checkpoints[0].created' "$tmpdir/json")
c1=$(jq -r '.checkpoints[1].created' "$tmpdir/json")
grep -qx "  c0  created $c0  dirty 0 B  persistent  consistent" "$out" ||
  fail "checkpoint c0 line"
grep -qx "  c1  created $c1  dirty 192 KiB  recording  persistent  consistent" "$out" ||
  fail "checkpoint c1 line"
if jq -e 'has("jobs")' "$tmpdir/json" >/dev/null; then
  grep -qx 'jobs: none' "$out" || fail "no jobs: not said"
else
  ! grep -q '^jobs' "$out" || fail "jobs shown although the server has none"
fi

run 0 "$out" -c "$ctl" snapshot-end
run 0 "$out" -c "$ctl" checkpoint-delete c0
run 0 "$out" -c "$ctl" status
grep -qx "snapshot: none" "$out" || fail "snapshot-end"
! grep -q "  c0 " "$out" || fail "c0 was not deleted"

# --- After kill -9 the checkpoint is inconsistent, with a reason.
kill -9 "$(cat "$sock.pid")"
for _ in $(seq 50); do
  kill -0 "$(cat "$sock.pid")" 2>/dev/null || break
  sleep 0.1
done
rm -f "$sock" "$sock.pid"
run 1 "$out" -c "$ctl" status
grep -q "cannot connect to the control socket $ctl" "$out.err" ||
  fail "absent server not reported"
start_nbdkit "$sock" "${stack[@]}"
run 0 "$tmpdir/json" -c "$ctl" status --json
run 0 "$out" -c "$ctl" status
cat "$out"
if jq -e '.checkpoints[0].consistent == false' "$tmpdir/json" >/dev/null; then
  reason=$(jq -r '.checkpoints[0].reason' "$tmpdir/json")
  grep -qF "  c1  created $c1  dirty " "$out" || fail "c1 after restart"
  grep -qF "INCONSISTENT: $reason" "$out" || fail "reason not shown"
else
  # Crash-safe tracking (bitmap-sync=write-ahead) kept it consistent.
  grep -q "  c1  .*  consistent$" "$out" || fail "c1 after restart"
fi

# --- Bad usage: exit status 2, one line.
run 2 "$out"
run 2 "$out" --no-such-option status
run 2 "$out" status                       # no -c
run 2 "$out" -c "$ctl" status extra
run 2 "$out" checkpoint-delete c1         # no -c
run 2 "$out" -c "$ctl" backup
run 2 "$out" -c "$ctl" backup a b
run 2 "$out" -c "$ctl" backup --speed=fast t.img
run 2 "$out" -c "$ctl" backup --checkpoint=-bad t.img
run 2 "$out" -c "$ctl" backup 'with space.img'
run 2 "$out" -c "$ctl" --timeout=0 status
run 2 "$out" --progress=sometimes status
run 2 "$out" pull "nbd+unix:///snapshot?socket=$sock"
run 2 "$out" pull "nbd+unix:///?socket=$sock" "$tmpdir/x.img"
grep -q 'live disk' "$out.err" || fail "pull of the live disk"
run 2 "$out" pull --since c1 "nbd+unix:///snapshot/since/c0?socket=$sock" x
run 2 "$out" pull --connections 0 "nbd+unix:///snapshot?socket=$sock" x
run 2 "$out" pull --granularity 3000 "nbd+unix:///snapshot?socket=$sock" x
run 2 "$out" pull /not/a/uri x
[ ! -e "$tmpdir/x.img" ] || fail "a refused pull created its destination"
run 0 "$out" --help
grep -q '^Usage:' "$out" || fail "--help"
run 0 "$out" --version
grep -q '^fleecectl [0-9]' "$out" || fail "--version"

echo OK

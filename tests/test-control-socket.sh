#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The control socket: created 0600, answers status and help (the
# commands of the filters in the stack), status without cbw carries
# cbw's own idle keys, bad lines get an error and change nothing,
# several lines in one write, a last line ended by EOF instead of a
# newline is answered at once, a client that leaves mid-line runs
# nothing, removed at exit, never replaces a file.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq

sock=$tmpdir/nbd.sock
ctl=$tmpdir/control.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  memory 64M control="$ctl"

[ -S "$ctl" ] || fail "control socket $ctl was not created"
mode=$(stat -c %a "$ctl")
[ "$mode" = 600 ] || fail "control socket mode is $mode, expected 600"

# status
r=$(ctl "$ctl" status)
status0=$r
echo "status: $r"
echo "$r" | jq -e '.ok == true
  and .snapshot.active == false and .snapshot.broken == null
  and .snapshot.started == null and .snapshot.clusters_copied == 0
  and .snapshot.target_bytes == 0 and .snapshot.released_bytes == 0
  and .checkpoints == []
  and .filters == ["snapshot-access","cbw","dirty-bitmap"]' >/dev/null ||
  fail "unexpected status reply: $r"
[ "$(echo "$r" | wc -l)" -eq 1 ] || fail "reply is not one line"

# Bad lines get {"ok":false,"error":...} and a useful message.
check_error ()
{
  local line=$1 want=$2 r
  r=$(ctl "$ctl" "$line")
  echo "$r" | jq -e --arg w "$want" '.ok == false and (.error | test($w))' \
    >/dev/null || fail "line '$line': reply $r does not match /$want/"
}
check_error 'bogus' "unknown command 'bogus'"
check_error 'STATUS' 'command'
check_error 'status extra=1' "unknown argument"
check_error 'status now' "unexpected argument 'now'"
check_error '' 'empty'
check_error 'snapshot-begin checkpoint=a checkpoint=b' 'duplicate'
r=$(printf 'stat\001us\n' | socat -t 5 - "UNIX-CONNECT:$ctl")
echo "$r" | jq -e '.ok == false' >/dev/null || fail "control byte accepted: $r"

# Several lines in one write: one reply each, in order.
r=$(printf 'status\nbogus\nstatus\n' | socat -t 5 - "UNIX-CONNECT:$ctl")
[ "$(echo "$r" | jq -c .ok | tr '\n' ' ')" = "true false true " ] ||
  fail "replies to three lines: $r"

# A last line without its newline, ended by the client's EOF (socat
# half-closes at the end of its input), is answered at once.  socat
# would wait 5 s for a reply that never comes; timeout kills it at 2 s.
t0=$(date +%s%N)
r=$(printf status | timeout 2 socat -t 5 - "UNIX-CONNECT:$ctl" || true)
t1=$(date +%s%N)
echo "status without a newline: $r ($(( (t1 - t0) / 1000000 )) ms)"
[ "$r" = "$status0" ] || fail "status without a newline: reply '$r'"
[ $(( (t1 - t0) / 1000000 )) -lt 1500 ] ||
  fail "status without a newline: the reply took $(( (t1 - t0) / 1000000 )) ms"
# The same for a bad line, and for a good line after a complete one.
r=$(printf 'stat' | timeout 2 socat -t 5 - "UNIX-CONNECT:$ctl" || true)
echo "$r" | jq -e '.ok == false and (.error | test("unknown command .stat."))' \
  >/dev/null || fail "partial bad line: reply '$r'"
r=$(printf 'bogus\nstatus' | timeout 2 socat -t 5 - "UNIX-CONNECT:$ctl" || true)
[ "$(echo "$r" | jq -c .ok | tr '\n' ' ')" = "false true " ] ||
  fail "a line, then one ended by EOF: $r"

# A client that closes the socket mid-line (no half-close: it is gone)
# gets nothing and breaks nothing: a torn command never runs.
python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"checkpoint-create torn")
s.close()' "$ctl"
sleep 0.2
ctl "$ctl" status | jq -e '.checkpoints == []' >/dev/null ||
  fail "a line torn by a closing client was run"
# A line too long for the server: one error, then the next line works.
r=$( { head -c 5000 /dev/zero | tr '\0' a; printf '\nstatus\n'; } |
     socat -t 5 - "UNIX-CONNECT:$ctl")
[ "$(echo "$r" | jq -c .ok | tr '\n' ' ')" = "false true " ] ||
  fail "over-long line: $r"

# Many clients at once.
pids=()
for i in $(seq 8); do
  ( ctl "$ctl" status > "$tmpdir/par.$i" ) &
  pids+=($!)
done
wait "${pids[@]}"
for i in $(seq 8); do
  jq -e '.ok == true' "$tmpdir/par.$i" >/dev/null ||
    fail "parallel client $i: $(cat "$tmpdir/par.$i")"
done

# help: every command of the stack, each with its filter, keys and a
# line of help; an unknown command lists them all.
r=$(ctl "$ctl" help)
echo "help: $r"
echo "$r" | jq -e '.ok == true
  and ([.commands[].name] == ["status","help","backup-start","job-cancel",
       "job-pause","job-resume","job-set-speed","snapshot-begin",
       "snapshot-end","quiesce","resume","checkpoint-create",
       "checkpoint-delete"])
  and ([.commands[].filter] == [null,null,"snapshot-access",
       "snapshot-access","snapshot-access","snapshot-access",
       "snapshot-access","cbw","cbw","cbw","cbw","dirty-bitmap",
       "dirty-bitmap"])
  and (.commands[7].keys == ["name","checkpoint","since"])
  and (.commands[11].words == 1)
  and all(.commands[]; (.help | length) > 10)' >/dev/null ||
  fail "unexpected help reply: $r"
check_error 'bogus' "^unknown command 'bogus'; the commands of this stack \
are status, help, backup-start, job-cancel, job-pause, job-resume, \
job-set-speed, snapshot-begin, snapshot-end, quiesce, resume, \
checkpoint-create and checkpoint-delete "
check_error 'help me' "unexpected argument 'me'"

# The server survived all of it and the state is unchanged.
[ "$(ctl "$ctl" status)" = "$status0" ] || fail "status changed after bad lines"

# The socket goes away with nbdkit.
stop_nbdkit "$sock"
[ ! -e "$ctl" ] || fail "control socket left behind after exit"

# A regular file at the control path is refused and left alone.
echo precious > "$tmpdir/file"
expect_refused "control=$tmpdir/file: .*exists and is not a socket" \
  --filter="$SA" --filter="$CBW" memory 1M control="$tmpdir/file"
[ "$(cat "$tmpdir/file")" = precious ] || fail "control= replaced a file"

# A stale socket (nobody listening) is replaced.
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$ctl"
[ -S "$ctl" ] || fail "could not make a stale socket"
sock2=$tmpdir/nbd2.sock
start_nbdkit "$sock2" --filter="$SA" --filter="$CBW" memory 1M control="$ctl"
ctl "$ctl" status | jq -e '.ok == true and .checkpoints == [] and .filters == ["snapshot-access","cbw"]' \
  >/dev/null || fail "status after replacing a stale socket"

# Without dirty-bitmap its commands are unknown, and help says so.
ctl "$ctl" help | jq -e '[.commands[].name] == ["status","help",
  "backup-start","job-cancel","job-pause","job-resume","job-set-speed",
  "snapshot-begin","snapshot-end","quiesce","resume"]' >/dev/null ||
  fail "help without dirty-bitmap: $(ctl "$ctl" help)"
check_error 'checkpoint-create c1' "^unknown command 'checkpoint-create'; \
the commands of this stack are status, help, backup-start, job-cancel, \
job-pause, job-resume, job-set-speed, snapshot-begin, snapshot-end, quiesce \
and resume "

# Without cbw, status still carries "snapshot", with exactly the keys
# and values cbw itself reports with no snapshot (its settings aside).
sock3=$tmpdir/nbd3.sock
ctl3=$tmpdir/control3.sock
start_nbdkit "$sock3" --filter="$DB" memory 1M control="$ctl3"
r=$(ctl "$ctl3" status)
echo "status without cbw: $r"
want=$(echo "$status0" |
  jq -c '.snapshot | del(.cluster_size, .target_kind, .on_error)')
[ "$(echo "$r" | jq -c .snapshot)" = "$want" ] ||
  fail "status without cbw: .snapshot is $(echo "$r" | jq -c .snapshot), \
expected $want"
echo "$r" | jq -e '.checkpoints == [] and .filters == ["dirty-bitmap"]' \
  >/dev/null || fail "status without cbw: $r"
stop_nbdkit "$sock3"

# A live control socket is never taken over by a second server.
expect_refused "control=$ctl: .*in use" \
  --filter="$SA" --filter="$CBW" memory 1M control="$ctl"
ctl "$ctl" status | jq -e '.ok == true' >/dev/null ||
  fail "first server lost its control socket"

echo "OK"

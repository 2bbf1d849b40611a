# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Shell library for the tests, and (through bench/lib.sh) for the bench
# scripts and demo.sh.  Source it, then:
#
#   requires TOOL...           skip the test (exit 77) unless every TOOL
#                              runs (probe_tool); python3-nbd stands for
#                              Debian's /usr/bin/python3 with the libnbd
#                              bindings
#   tmp=$(...)                 $tmpdir is a private temporary directory,
#                              removed on exit together with every server
#                              started by start_nbdkit, even on failure
#   start_nbdkit SOCK ARGS...  run nbdkit in the background on Unix socket
#                              SOCK with ARGS, wait until it serves
#   start_stack NAME SIZE      a random disk served by the whole stack
#                              with a control socket: $sock $ctl $disk
#   stop_nbdkit SOCK           stop that server and wait for it
#   expect_refused REGEX ARGS  nbdkit ARGS must fail at start-up with an
#                              error line matching REGEX
#   expect_refused_fg REGEX ARGS  the same for errors of .after_fork
#   fail MESSAGE               report and exit 1
#   run_sock                   a new socket path in $tmpdir, for
#                              nbdkit -U "$(run_sock)" ... --run CMD
#                              (nbdkit 1.32's -U - leaves an empty
#                              /tmp/nbdkitXXXXXX behind when it refuses
#                              to start)
#
# The part before "The test harness" below is a library of its own:
# with FLEECE_LIB_ONLY=1 set, sourcing stops there (no set -e, no
# $tmpdir, no traps), which is how bench/lib.sh uses it:
#
#   probe_tool TOOL            0 if TOOL runs, else 1 and $probe_reason
#   wait_gone PID SECONDS      0 once PID has exited, 1 after SECONDS
#   stop_pid PID [SECONDS]     SIGTERM, SIGKILL after SECONDS (5), reap;
#                              the exit status of PID if it is our child
#   sock_listening PATH        0 once a Unix socket bound to PATH listens
#   serve LOG FILE... -- CMD   run CMD in the background (output to LOG,
#                              $server_pid), wait until every FILE is a
#                              listening socket or a non-empty file (10 s)
#   ctl SOCKET LINE            send one control line, print the reply
#   ctl_ok SOCKET LINE [SECS]  the same; fail unless the reply says ok
#   show_logs DIR LINES        the tail of every DIR/*.log on stderr
#
# $CBW, $SA, $DB are the filter modules built in this tree; $PY is the
# Python that has the libnbd bindings.

: "${abs_top_builddir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${abs_top_srcdir:=$abs_top_builddir}"

CBW=$abs_top_builddir/filters/cbw/.libs/nbdkit-cbw-filter.so
SA=$abs_top_builddir/filters/snapshot-access/.libs/nbdkit-snapshot-access-filter.so
DB=$abs_top_builddir/filters/dirty-bitmap/.libs/nbdkit-dirty-bitmap-filter.so

# nbdsh needs Debian's Python, which owns the libnbd bindings.  The
# sanitizer runs (tests/run-sanitizers.sh) put their nbdkit wrapper first.
export PATH="${FLEECE_WRAP_DIR:+$FLEECE_WRAP_DIR:}/usr/bin:$PATH"
PY=/usr/bin/python3

fail ()
{
  echo "FAIL: $*" >&2
  exit 1
}

# probe_tool TOOL: run TOOL the cheapest way that shows it works (its
# version, or for nbdsh and python3-nbd an import of the libnbd
# bindings).  Returns 1 with $probe_reason set when it is missing or
# does not run.
probe_reason=
probe_tool ()
{
  local t=$1 out
  local -a cmd
  case $t in
    python3-nbd) cmd=("$PY" -c 'import nbd') ;;
    nbdsh) cmd=(nbdsh -c 'import nbd') ;;
    socat) cmd=(socat -V) ;;
    *) cmd=("$t" --version) ;;
  esac
  if ! command -v "${cmd[0]}" >/dev/null 2>&1; then
    case $t in
      python3-nbd) probe_reason="$PY is not installed" ;;
      *) probe_reason="'$t' is not installed" ;;
    esac
    return 1
  fi
  if ! out=$(timeout 30 "${cmd[@]}" </dev/null 2>&1); then
    out=$(printf '%s\n' "$out" | tail -n 1)
    case $t in
      python3-nbd)
        probe_reason="the libnbd Python bindings (Debian: python3-libnbd) do not load in $PY ($out)" ;;
      nbdsh)
        probe_reason="nbdsh is installed but cannot import the libnbd Python bindings in the Python it runs ($(head -n 1 "$(command -v nbdsh)" | cut -c3-)): $out" ;;
      *)
        probe_reason="'$t' is installed but does not run ('${cmd[*]}' fails: $out)" ;;
    esac
    return 1
  fi
}

# requires TOOL...: skip the test unless every TOOL runs.
requires ()
{
  local t
  for t in "$@"; do
    if ! probe_tool "$t"; then
      echo "SKIP: $0: $probe_reason" >&2
      exit 77
    fi
  done
}

# wait_gone PID SECONDS: 0 once PID has exited, 1 if it still runs after
# SECONDS.
wait_gone ()
{
  local pid=$1 i
  for ((i = 0; i < $2 * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  ! kill -0 "$pid" 2>/dev/null
}

# stop_pid PID [SECONDS]: SIGTERM, SIGKILL if it still runs after
# SECONDS (default 5), then reap it.  Returns its exit status when it
# is a child of this shell, else 0.  An empty PID is nothing to stop.
stop_pid ()
{
  local pid=$1 rc=0
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait_gone "$pid" "${2:-5}" || kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  # 127: not our child (nothing to reap).
  [ $rc -eq 127 ] && rc=0
  return $rc
}

# sock_listening PATH: 0 once a Unix socket bound to PATH accepts
# connections.  The file appears at bind(), before listen(), so its
# existence is not enough; /proc/net/unix shows the listening flag
# (__SO_ACCEPTCON, 0x10000: an odd fourth hex digit of the flags)
# without connecting, under the name the server gave bind().  The
# Python tests' twin is listening() in tests/job_lib.py.
sock_listening ()
{
  local abs
  abs=$(realpath -ms -- "$1")
  awk -v p="$1" -v a="$abs" \
    'NR > 1 && index("13579bdfBDF", substr($4, 4, 1)) &&
     ($8 == p || $8 == a) { f = 1 }
     END { exit !f }' /proc/net/unix
}

# serve LOG FILE... -- CMD ARGS...: start CMD in the background with
# its output in LOG ($server_pid), and wait up to 10 s until every FILE
# is a listening socket or a non-empty file (a pidfile).  Fails,
# showing LOG, if CMD exits first or does not get there in time.
server_pid=
serve ()
{
  local log=$1 f ready i
  local -a files=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do files+=("$1"); shift; done
  [ $# -gt 0 ] || fail "serve: no -- before the command"
  shift
  "$@" >"$log" 2>&1 &
  server_pid=$!
  for ((i = 0; i < 200; i++)); do
    ready=1
    for f in "${files[@]}"; do
      if [ -S "$f" ]; then
        sock_listening "$f" || { ready=; break; }
      else
        [ -s "$f" ] || { ready=; break; }
      fi
    done
    [ -z "$ready" ] || return 0
    if ! kill -0 "$server_pid" 2>/dev/null; then
      cat "$log" >&2
      fail "$* exited during start-up"
    fi
    sleep 0.05
  done
  cat "$log" >&2
  fail "$* did not start within 10 s"
}

# ctl SOCKET LINE: send one control line, print the reply.
ctl ()
{
  printf '%s\n' "$2" | socat -t 5 - "UNIX-CONNECT:$1"
}

# ctl_ok SOCKET LINE [SECONDS]: send one control line, print the reply;
# fail unless a reply came within SECONDS (default 10) and says ok.
ctl_ok ()
{
  local reply
  reply=$(printf '%s\n' "$2" | socat -t "${3:-10}" - "UNIX-CONNECT:$1") ||
    fail "control '$2': no reply from $1"
  jq -e '.ok == true' >/dev/null 2>&1 <<<"$reply" ||
    fail "control '$2' failed: $reply"
  printf '%s\n' "$reply"
}

# show_logs DIR LINES: the last LINES lines of every non-empty DIR/*.log
# on stderr (after a failure).
show_logs ()
{
  local f
  for f in "$1"/*.log; do
    [ -s "$f" ] || continue
    echo "--- $f" >&2
    tail -n "$2" "$f" >&2
  done
}

[ -z "${FLEECE_LIB_ONLY-}" ] || return 0

# ---- The test harness ------------------------------------------------

set -e
set -u

requires nbdkit

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/fleece-test.XXXXXX")
_pidfiles=()

_cleanup ()
{
  local rc=$? p
  for p in "${_pidfiles[@]+"${_pidfiles[@]}"}"; do
    [ ! -s "$p" ] || stop_pid "$(cat "$p")" || true
  done
  [ $rc -eq 0 ] || [ ! -d "$tmpdir" ] || show_logs "$tmpdir" 30
  rm -rf "$tmpdir"
  exit $rc
}
trap _cleanup EXIT
trap 'exit 1' INT TERM

# start_nbdkit SOCK ARGS...: the server logs to SOCK.log.
start_nbdkit ()
{
  local sock=$1; shift
  local pid=$sock.pid
  rm -f "$pid"
  _pidfiles+=("$pid")
  serve "$sock.log" "$pid" "$sock" -- nbdkit -f -v -U "$sock" -P "$pid" "$@"
}

# start_stack NAME SIZE [ARGS...]: a disk of SIZE random bytes served
# by the whole stack (snapshot-access, cbw, dirty-bitmap, file) with a
# control socket and ARGS.  Sets sock, ctl and disk to
# $tmpdir/NAME.sock, .ctl and .img.
start_stack ()
{
  local name=$1 size=$2; shift 2
  sock=$tmpdir/$name.sock
  ctl=$tmpdir/$name.ctl
  disk=$tmpdir/$name.img
  head -c "$size" /dev/urandom >"$disk"
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
    file "$disk" control="$ctl" "$@"
}

stop_nbdkit ()
{
  local pid
  pid=$(cat "$1.pid")
  kill "$pid"
  wait_gone "$pid" 10 || fail "nbdkit on $1 did not stop"
  rm -f "$1.pid"
}

# run_sock: a socket path in $tmpdir that does not exist yet.
run_sock ()
{
  mktemp -u "$tmpdir/run.XXXXXX.sock"
}

# expect_refused REGEX ARGS...: nbdkit must refuse ARGS at start-up
# with a message matching REGEX (an extended regular expression).
expect_refused ()
{
  local regex=$1; shift
  local log=$tmpdir/refused.log
  if timeout 20 nbdkit -U "$(run_sock)" "$@" --run true >"$log" 2>&1; then
    cat "$log" >&2
    fail "nbdkit $* was accepted, expected an error matching /$regex/"
  fi
  if ! grep -Eq -- "$regex" "$log"; then
    cat "$log" >&2
    fail "nbdkit $*: the error does not match /$regex/"
  fi
}

# expect_refused_fg REGEX ARGS...: the same for errors found in
# .after_fork (nbdkit --run starts its command before .after_fork, so
# expect_refused cannot see them): nbdkit -f must exit non-zero.
expect_refused_fg ()
{
  local regex=$1; shift
  local log=$tmpdir/refused.log sock=$tmpdir/refused.sock
  rm -f "$sock"
  if timeout 20 nbdkit -f -U "$sock" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "nbdkit $* was accepted, expected an error matching /$regex/"
  fi
  if ! grep -Eq -- "$regex" "$log"; then
    cat "$log" >&2
    fail "nbdkit $*: the error does not match /$regex/"
  fi
}

# expect_accepted ARGS...: nbdkit starts with ARGS and serves.
expect_accepted ()
{
  local log=$tmpdir/accepted.log
  if ! timeout 20 nbdkit -U "$(run_sock)" "$@" --run 'nbdinfo --size "$uri" >/dev/null' \
       >"$log" 2>&1; then
    cat "$log" >&2
    fail "nbdkit $* was refused, expected it to start"
  fi
}

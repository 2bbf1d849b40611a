# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Shell library for the tests.  Source it, then:
#
#   requires CMD...            skip the test (exit 77) if a tool is missing
#   tmp=$(...)                 $tmpdir is a private temporary directory,
#                              removed on exit together with every server
#                              started by start_nbdkit, even on failure
#   start_nbdkit SOCK ARGS...  run nbdkit in the background on Unix socket
#                              SOCK with ARGS, wait until it serves
#   stop_nbdkit SOCK           stop that server and wait for it
#   expect_refused REGEX ARGS  nbdkit ARGS must fail at start-up with an
#                              error line matching REGEX
#   expect_refused_fg REGEX ARGS  the same for errors of .after_fork
#   fail MESSAGE               report and exit 1
#
# $CBW, $SA, $DB are the filter modules built in this tree.

set -e
set -u

: "${abs_top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${abs_top_srcdir:=$abs_top_builddir}"

CBW=$abs_top_builddir/filters/cbw/.libs/nbdkit-cbw-filter.so
SA=$abs_top_builddir/filters/snapshot-access/.libs/nbdkit-snapshot-access-filter.so
DB=$abs_top_builddir/filters/dirty-bitmap/.libs/nbdkit-dirty-bitmap-filter.so

# nbdsh needs Debian's Python, which owns the libnbd bindings.  The
# sanitizer runs (tests/run-sanitizers.sh) put their nbdkit wrapper first.
export PATH="${FLEECE_WRAP_DIR:+$FLEECE_WRAP_DIR:}/usr/bin:$PATH"

fail ()
{
  echo "FAIL: $*" >&2
  exit 1
}

requires ()
{
  local cmd
  for cmd in "$@"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
      echo "SKIP: $0: '$cmd' is not installed" >&2
      exit 77
    fi
  done
}

requires nbdkit

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/fleece-test.XXXXXX")
_pidfiles=()

_cleanup ()
{
  local rc=$? p pid
  for p in "${_pidfiles[@]+"${_pidfiles[@]}"}"; do
    if [ -s "$p" ]; then
      pid=$(cat "$p")
      kill "$pid" 2>/dev/null || true
      # Wait up to 5 s, then insist.
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ $rc -ne 0 ] && [ -d "$tmpdir" ]; then
    for p in "$tmpdir"/*.log; do
      [ -f "$p" ] || continue
      echo "--- $p" >&2
      tail -n 30 "$p" >&2
    done
  fi
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
  nbdkit -f -v -U "$sock" -P "$pid" "$@" >"$sock.log" 2>&1 &
  local bg=$!
  for _ in $(seq 100); do
    if [ -s "$pid" ] && [ -S "$sock" ]; then
      return 0
    fi
    if ! kill -0 $bg 2>/dev/null; then
      cat "$sock.log" >&2
      fail "nbdkit $* exited during start-up"
    fi
    sleep 0.1
  done
  fail "nbdkit $* did not start within 10 s"
}

stop_nbdkit ()
{
  local pid
  pid=$(cat "$1.pid")
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$1.pid"; return 0; }
    sleep 0.1
  done
  fail "nbdkit on $1 did not stop"
}

# expect_refused REGEX ARGS...: nbdkit must refuse ARGS at start-up
# with a message matching REGEX (an extended regular expression).
expect_refused ()
{
  local regex=$1; shift
  local log=$tmpdir/refused.log
  if timeout 20 nbdkit -U - "$@" --run true >"$log" 2>&1; then
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
  if ! timeout 20 nbdkit -U - "$@" --run 'nbdinfo --size "$uri" >/dev/null' \
       >"$log" 2>&1; then
    cat "$log" >&2
    fail "nbdkit $* was refused, expected it to start"
  fi
}

# ctl SOCKET LINE: send one control line, print the reply.
ctl ()
{
  printf '%s\n' "$2" | socat -t 5 - "UNIX-CONNECT:$1"
}

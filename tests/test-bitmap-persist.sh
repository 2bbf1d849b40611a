#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# bitmap-file=: checkpoints survive a clean restart (the file is in the
# documented format, marked in use while nbdkit runs, and a delta view
# after the restart maps exactly the granules written before and after
# it); after kill -9 every checkpoint is inconsistent, its delta view
# refuses to open and snapshot-begin since= fails; a damaged file
# (flipped byte, truncated, random bytes, text, bad magic or bad
# structure with a good CRC) is logged as not trusted, moved aside to
# PATH.damaged and no checkpoint is trusted; a second damaged file goes
# to PATH.damaged.1, keeping the first; a changed disk size or
# granularity keeps the checkpoints but inconsistent.  Status (and the
# file) give each inconsistent checkpoint its reason: unclean stop with
# the file's last write time, size change, granularity change; it
# survives clean restarts.  After each of these, new checkpoints work
# and a further clean restart leaves a valid file.  See incr_persist.py.
# All of this with bitmap-sync=clean-stop (what kill -9 does with the
# default write-ahead mode is test-bitmap-writeahead.sh's).

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

disk=$tmpdir/disk.img
bm=$tmpdir/bm
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
state=$tmpdir/state.json
gran=65536
truncate -s 64M "$disk"

start ()
{
  rm -f "$sock"                 # nbdkit -U leaves its socket file behind
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
    file "$disk" bitmap-file="$bm" bitmap-sync=clean-stop control="$ctl" "$@"
  # The pid file appears before nbdkit's after_fork, where the filter
  # loads and rewrites the bitmap file; a first connection waits for it.
  nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null ||
    fail "nbdkit does not serve (log: $sock.log)"
}

p ()
{
  echo "- $*"
  /usr/bin/python3 "$abs_top_srcdir/tests/incr_persist.py" --sock "$sock" \
    --ctl "$ctl" --state "$state" --bitmap-file "$bm" --disk "$disk" \
    --gran "$gran" "$@" >"$tmpdir/step.out" 2>&1 || {
    cat "$tmpdir/step.out"
    fail "step '$*' (log: $sock.log)"
  }
  grep -v '^([0-9.]* s)$' "$tmpdir/step.out" || true
}

# log_has REGEX...: the server log has a line matching every REGEX.
log_has ()
{
  local lines
  lines=$(grep -i 'error' "$sock.log" || true)
  for re in "$@"; do
    lines=$(echo "$lines" | grep -Ei -- "$re" || true)
  done
  [ -n "$lines" ] || {
    cat "$sock.log" >&2
    fail "no error line in $sock.log matches all of: $*"
  }
  echo "  logged: $(echo "$lines" | head -n1 | sed 's/^.*error: //')"
}

echo "=== fresh start, clean restart"
start
[ -f "$bm" ] || fail "bitmap file $bm was not created at start-up"
p file --in-use 1
p status
p create a
p file --in-use 1
p write 40 1
p status
stop_nbdkit "$sock"
p file --in-use 0
start
p file --in-use 1
p status
p write 40 2
p delta a b
p write 30 3
p status
stop_nbdkit "$sock"
p file --in-use 0
start
p status
p delta b c

echo "=== kill -9"
p write 30 4
pid=$(cat "$sock.pid")
kill -9 "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "nbdkit survived kill -9"
rm -f "$sock" "$sock.pid"
p file --in-use 1
start
p inconsistent
unclean='server did not stop cleanly \(file last written 20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\)'
for c in a b c; do p reason $c "$unclean"; done
log_has 'bitmap-file' 'did not stop cleanly'
p refused a
p refused b
p refused c
p file --in-use 1
# A clean restart must not make them trusted again; new ones work.
p create d
p write 30 5
stop_nbdkit "$sock"
p file --in-use 0
start
p status
for c in a b c; do p reason $c "$unclean"; done
p refused c
p delta d e

seed=10
for mode in flip truncate random text badmagic badstruct; do
  echo "=== damaged file: $mode"
  seed=$((seed+1))
  stop_nbdkit "$sock"
  p file --in-use 0
  p damage "$mode"
  rm -f "$bm.damaged"
  start
  log_has 'bitmap-file' 'not trusted|damaged'
  [ -f "$bm.damaged" ] || fail "$mode: the damaged file was not moved to $bm.damaged"
  cmp -s "$bm.damaged" "$bm.expected-damaged" ||
    fail "$mode: $bm.damaged is not the damaged file"
  p untrusted
  p refused e
  p file --in-use 1
  p create "n$mode"
  p write 20 $seed
  stop_nbdkit "$sock"
  p file --in-use 0
  start
  p status
  p delta "n$mode" "m$mode"
done

echo "=== disk size changed"
stop_nbdkit "$sock"
p file --in-use 0
truncate -s 80M "$disk"
rm -f "$bm.damaged"
start
log_has 'bitmap-file' '67108864|83886080|64 ?Mi?B?|80 ?Mi?B?'
[ ! -e "$bm.damaged" ] || fail "size change: the file was treated as damaged"
p inconsistent
p reason mbadstruct 'disk size changed from 67108864 to 83886080 bytes'
p refused mbadstruct
p file --in-use 1
p create s1
p write 20 30
stop_nbdkit "$sock"
p file --in-use 0
start
p status
p delta s1 s2

echo "=== granularity changed"
stop_nbdkit "$sock"
p file --in-use 0
start bitmap-granularity=128K
gran=131072
log_has 'bitmap-file' 'granularity'
[ ! -e "$bm.damaged" ] || fail "granularity change: the file was treated as damaged"
p inconsistent
p reason s2 'granularity changed from 65536 to 131072 bytes'
p reason mbadstruct 'disk size changed from 67108864 to 83886080 bytes'
p refused s2
p create g1
p write 20 31
stop_nbdkit "$sock"
p file --in-use 0
start bitmap-granularity=128K
p status
p delta g1 g2
stop_nbdkit "$sock"
p file --in-use 0

echo "=== two damaged files: both kept"
rm -f "$bm".damaged*
p damage flip
cp "$bm.expected-damaged" "$tmpdir/first-damaged"
start bitmap-granularity=128K
log_has 'bitmap-file' "moved aside to $bm.damaged,"
p untrusted
p create k1
stop_nbdkit "$sock"
p damage text
start bitmap-granularity=128K
log_has 'bitmap-file' "moved aside to $bm.damaged.1,"
cmp -s "$bm.damaged" "$tmpdir/first-damaged" ||
  fail "the second damaged file replaced the first $bm.damaged"
cmp -s "$bm.damaged.1" "$bm.expected-damaged" ||
  fail "$bm.damaged.1 is not the second damaged file"
p untrusted
p create k2
p write 20 40
stop_nbdkit "$sock"
start bitmap-granularity=128K
p status
p delta k2 k3
stop_nbdkit "$sock"
p file --in-use 0
rm -f "$bm".damaged*

echo "OK"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The stream filter refuses bad input at start-up with one line: a
# missing or bad parameter, stream-speed nonsense, a base smaller than
# the disk, a state file of another disk or cluster size, a state file
# in use by another server, a stack with stream in the wrong place, a
# disk that cannot flush.
# An unreachable base is not an error: the server starts, says so and
# waits; reads of unpopulated clusters fail with EIO.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdsh
STREAM=$abs_top_builddir/filters/stream/.libs/nbdkit-stream-filter.so

truncate -s 4M "$tmpdir/local.img"
truncate -s 4M "$tmpdir/base.img"
truncate -s 2M "$tmpdir/small.img"
head -c 1M /dev/urandom | dd of="$tmpdir/base.img" conv=notrunc status=none
start_nbdkit "$tmpdir/base.sock" -r file "$tmpdir/base.img"
start_nbdkit "$tmpdir/small.sock" -r file "$tmpdir/small.img"
base="nbd+unix:///?socket=$tmpdir/base.sock"
state=$tmpdir/state

s () { echo "--filter=$STREAM file $tmpdir/local.img"; }

# Parameters.
expect_refused 'stream-state=PATH is required' \
  --filter="$STREAM" file "$tmpdir/local.img" stream-base="$base"
expect_refused 'stream-base=http://x: not an NBD URI' \
  $(s) stream-base=http://x stream-state="$state"
for bad in fast -1 10Q 1.5M ''; do
  expect_refused "stream-speed=$bad: .*bytes per second" \
    $(s) stream-base="$base" stream-state="$state" stream-speed="$bad"
done
expect_refused 'stream-speed: given twice' \
  $(s) stream-base="$base" stream-state="$state" stream-speed=1M stream-speed=2M
for bad in 1000 3K 32M 0; do
  expect_refused "stream-cluster-size=$bad: " \
    $(s) stream-base="$base" stream-state="$state" stream-cluster-size=$bad
done
expect_refused 'stream-colour: unknown stream parameter' \
  $(s) stream-base="$base" stream-state="$state" stream-colour=red
expect_refused 'belongs to the stream filter.*--filter=stream' \
  --filter="$DB" file "$tmpdir/local.img" stream-state="$state"
expect_refused_fg 'new restore.*needs stream-base' \
  $(s) stream-state="$state"
test ! -e "$state" || fail "a refused start created the state file"
# The stack: stream directly above the plugin.
expect_refused 'unsupported filter order: --filter=dirty-bitmap must come before --filter=stream' \
  --filter="$STREAM" --filter="$DB" file "$tmpdir/local.img" \
  stream-base="$base" stream-state="$state"
expect_refused '--filter=cow cannot sit below --filter=stream' \
  --filter="$STREAM" --filter=cow file "$tmpdir/local.img" \
  stream-base="$base" stream-state="$state"
expect_refused 'stream-state=.* is the disk itself' \
  $(s) stream-base="$base" stream-state="$tmpdir/local.img"
# A disk that cannot flush (the split plugin): a cluster could be
# recorded as populated before its contents are stored.
expect_refused_fg 'the disk below cannot flush' \
  --filter="$STREAM" split "$tmpdir/local.img" stream-base="$base" \
  stream-state="$tmpdir/state-noflush"

# A base smaller than the disk.
expect_refused_fg 'smaller than the disk' \
  $(s) stream-base="nbd+unix:///?socket=$tmpdir/small.sock" \
  stream-state="$tmpdir/state-small"

# An unreachable base: starts, says so, waits; EIO, never zeroes.
start_nbdkit "$tmpdir/s.sock" $(s) stream-state="$state" \
  stream-base="nbd+unix:///?socket=$tmpdir/nobody.sock" \
  control="$tmpdir/ctl.sock"
# The line comes from the filter's first connection attempt, which
# may still be running when the socket appears: give it a few seconds.
for _ in $(seq 50); do
  grep -q 'the base cannot be reached now' "$tmpdir/s.sock.log" && break
  sleep 0.1
done
grep -q 'the base cannot be reached now' "$tmpdir/s.sock.log" ||
  fail "no log line about the unreachable base"
st=$(ctl "$tmpdir/ctl.sock" status)
[ "$(jq -r .stream.state <<<"$st")" = waiting-for-base ] &&
[ "$(jq -r .stream.base_connected <<<"$st")" = false ] ||
  fail "status with no base: $st"
if nbdsh -u "nbd+unix:///?socket=$tmpdir/s.sock" -c 'h.pread(512, 0)' \
     2>"$tmpdir/err"; then
  fail "a read of an unpopulated cluster succeeded without the base"
fi
grep -q 'Input/output error' "$tmpdir/err" || { cat "$tmpdir/err"; fail "not EIO"; }
# A second server on the same state file.
expect_refused "stream-state=$state: in use by another nbdkit" \
  $(s) stream-base="$base" stream-state="$state"
stop_nbdkit "$tmpdir/s.sock"

# A state file of another disk or cluster size.
truncate -s 8M "$tmpdir/other.img"
expect_refused_fg 'belongs to another disk' \
  --filter="$STREAM" file "$tmpdir/other.img" stream-base="$base" \
  stream-state="$state"
expect_refused_fg 'was made with stream-cluster-size=65536, not 1048576' \
  $(s) stream-base="$base" stream-state="$state" stream-cluster-size=1M
echo garbage > "$tmpdir/garbage"
expect_refused_fg 'not a stream state file' \
  $(s) stream-base="$base" stream-state="$tmpdir/garbage"
# Not complete, and no base to finish it.
expect_refused_fg 'not yet fully populated, so stream-base=URI is needed' \
  $(s) stream-state="$state"
# The same state file with the right parameters is accepted.
expect_accepted $(s) stream-base="$base" stream-state="$state"
echo OK

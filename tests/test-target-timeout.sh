#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# cbw-timeout bounds every wait on a hung NBD target, not only the
# copies of guest writes (those are in test-fault-matrix.sh).  The
# target nbdkit is stopped with SIGSTOP: it still accepts connections
# but never answers.  With cbw-timeout=1:
#   - snapshot-begin is refused within 3 s, saying the connection to
#     cbw-target timed out;
#   - a snapshot read of a copied cluster (served from the target) fails
#     within 3 s and the log says why, while an uncopied cluster (served
#     from the disk) still reads as the snapshot point;
#   - snapshot-end finishes within 3 s (its TRIM of the target gives up);
#   - once the target answers again, a new snapshot works.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdsh

sock=$tmpdir/nbd.sock ctl=$tmpdir/ctl.sock tsock=$tmpdir/target.sock
disk=$tmpdir/disk.img
C=65536
head -c 4M /dev/urandom > "$disk"
cp "$disk" "$tmpdir/point.img"
start_nbdkit "$tsock" memory 4M
tpid=$(cat "$tsock.pid")
# Never leave the target stopped (cleanup could not end it).
trap 'rc=$?; kill -CONT "$tpid" 2>/dev/null; (exit $rc); _cleanup' EXIT
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" file "$disk" \
  control="$ctl" cbw-timeout=1 cbw-target="nbd+unix:///?socket=$tsock"

live="nbd+unix:///?socket=$sock"
snap="nbd+unix:///snapshot?socket=$sock"

# timed LIMIT CMD...: run CMD, fail if it took LIMIT s or more; its
# output is in $out.
timed ()
{
  local limit=$1 t0; shift
  t0=$(date +%s.%N)
  out=$("$@" 2>&1) || true
  awk -v a="$t0" -v b="$(date +%s.%N)" -v l="$limit" \
    'BEGIN { exit !(b - a < l) }' ||
    fail "$* took $limit s or more with cbw-timeout=1: $out"
}
# cluster N of the snapshot export, as hex of its sha256
snap_sum () {
  nbdsh -u "$snap" -c "import hashlib; print(hashlib.sha256(h.pread($C, $1 * $C)).hexdigest())"
}
point_sum () {
  dd if="$tmpdir/point.img" bs=$C skip="$1" count=1 status=none |
    sha256sum | cut -d' ' -f1
}
# live_write CHAR N: write cluster N of the live disk full of CHAR, and
# check that it reached the disk (so its copy-before-write reached the
# target).  The target is healthy here, but on a loaded machine a copy
# can take longer than cbw-timeout=1: the guest's write then fails
# (cbw-on-error=break-guest-write, the snapshot unchanged) and the log
# says the copy timed out.  Only that failure is tried again.
live_write ()
{
  local ch=$1 n=$2 i r before timeouts want
  want="copy-before-write of offset $(($2 * C)) failed (Connection timed out)"
  for i in 1 2 3 4 5; do
    before=$(grep -cF "$want" "$sock.log" || true)
    if r=$(nbdsh -u "$live" -c "h.pwrite(b'$ch' * $C, $n * $C)" 2>&1); then
      [ "$(dd if="$disk" bs=$C skip="$n" count=1 status=none | tr -d "$ch" |
           wc -c)" = 0 ] || fail "the live write of cluster $n did not land"
      return 0
    fi
    timeouts=$(grep -cF "$want" "$sock.log" || true)
    [ "$timeouts" -gt "$before" ] ||
      fail "the live write of cluster $n failed: $r"
    echo "the copy of cluster $n timed out on the healthy target (loaded machine?); again"
  done
  fail "the live write of cluster $n failed $i times: $r"
}

echo "=== snapshot-begin, target hung"
kill -STOP "$tpid"
timed 3 ctl "$ctl" snapshot-begin
echo "$out" | jq -e '.ok == false and (.error | test("cbw-target=.*cannot connect: timed out \\(cbw-timeout\\)"))' \
  >/dev/null || fail "snapshot-begin with a hung target: $out"
kill -CONT "$tpid"

echo "=== a snapshot read from the target, target hung"
ctl "$ctl" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin"
live_write x 0                                      # copies cluster 0
[ "$(snap_sum 0)" = "$(point_sum 0)" ] || fail "snapshot cluster 0"
kill -STOP "$tpid"
# The read alone is timed, in the client: starting Python and
# connecting can take seconds on a loaded machine, and do not wait on
# the target.
out=$(timeout 20 nbdsh -u "$snap" -c "
import time
t = time.monotonic()
try:
    h.pread($C, 0)
    print('read OK')
except nbd.Error as e:
    print('read failed: %s' % e)
print('seconds %.3f' % (time.monotonic() - t))" 2>&1) || true
echo "hung target read: $out"
case $out in
  *"read failed: nbd_pread"*"failed"*) ;;
  *) fail "a snapshot read from a hung target did not fail: $out" ;;
esac
awk '$1 == "seconds" { exit !($2 < 3) }' <<<"$out" ||
  fail "a snapshot read from a hung target took 3 s or more with cbw-timeout=1: $out"
grep -q "reading the fleecing target at 0: .*timed out" "$sock.log" ||
  fail "the log does not say the target read timed out"
[ "$(snap_sum 5)" = "$(point_sum 5)" ] ||
  fail "snapshot cluster 5 (on the disk) with the target hung"

echo "=== snapshot-end, target hung"
kill -CONT "$tpid"
live_write y 1                                      # a connected handle
[ "$(snap_sum 1)" = "$(point_sum 1)" ] || fail "snapshot cluster 1"
kill -STOP "$tpid"
timed 3 ctl "$ctl" snapshot-end
echo "$out" | jq -e .ok >/dev/null ||
  fail "snapshot-end with a hung target: $out"
kill -CONT "$tpid"

echo "=== the next snapshot"
cp "$disk" "$tmpdir/point.img"
ctl "$ctl" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin"
live_write z 2
[ "$(snap_sum 2)" = "$(point_sum 2)" ] || fail "snapshot cluster 2"
ctl "$ctl" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end"

echo "OK"

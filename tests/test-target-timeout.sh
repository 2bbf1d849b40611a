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

echo "=== snapshot-begin, target hung"
kill -STOP "$tpid"
timed 3 ctl "$ctl" snapshot-begin
echo "$out" | jq -e '.ok == false and (.error | test("cbw-target=.*cannot connect: timed out \\(cbw-timeout\\)"))' \
  >/dev/null || fail "snapshot-begin with a hung target: $out"
kill -CONT "$tpid"

echo "=== a snapshot read from the target, target hung"
ctl "$ctl" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin"
nbdsh -u "$live" -c "h.pwrite(b'x' * $C, 0)"        # copies cluster 0
[ "$(snap_sum 0)" = "$(point_sum 0)" ] || fail "snapshot cluster 0"
kill -STOP "$tpid"
timed 3 timeout 20 nbdsh -u "$snap" -c "h.pread($C, 0)"
case $out in
  *"nbd_pread"*"failed"*) ;;
  *) fail "a snapshot read from a hung target did not fail: $out" ;;
esac
grep -q "reading the fleecing target at 0: .*timed out" "$sock.log" ||
  fail "the log does not say the target read timed out"
[ "$(snap_sum 5)" = "$(point_sum 5)" ] ||
  fail "snapshot cluster 5 (on the disk) with the target hung"

echo "=== snapshot-end, target hung"
kill -CONT "$tpid"
nbdsh -u "$live" -c "h.pwrite(b'y' * $C, $C)"       # a connected handle
[ "$(snap_sum 1)" = "$(point_sum 1)" ] || fail "snapshot cluster 1"
kill -STOP "$tpid"
timed 3 ctl "$ctl" snapshot-end
echo "$out" | jq -e .ok >/dev/null ||
  fail "snapshot-end with a hung target: $out"
kill -CONT "$tpid"

echo "=== the next snapshot"
cp "$disk" "$tmpdir/point.img"
ctl "$ctl" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin"
nbdsh -u "$live" -c "h.pwrite(b'z' * $C, 2 * $C)"
[ "$(snap_sum 2)" = "$(point_sum 2)" ] || fail "snapshot cluster 2"
ctl "$ctl" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end"

echo "OK"

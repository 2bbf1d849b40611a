#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# cbw-buffer=SIZE: its parameter checks, then a model test of the buffer
# in front of a slow NBD target (see cbw_buffer.py): guest writes do not
# wait while there is room, snapshot reads see buffered copies, release
# drops them, a full buffer makes writes wait, snapshot-end discards it,
# and a failed background write breaks the snapshot.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: $0: Python libnbd bindings (python3-libnbd) are missing" >&2
  exit 77
}

echo "=== parameters"
stack=(--filter="$SA" --filter="$CBW" memory 1M)
expect_refused 'cbw-buffer=ten: .*expected a size such as 256M' \
  "${stack[@]}" cbw-buffer=ten
expect_refused 'cbw-buffer=4096: smaller than one cluster' \
  "${stack[@]}" cbw-buffer=4K
expect_refused 'cbw-buffer=[0-9]+: more than half of this machine.s memory' \
  "${stack[@]}" cbw-buffer=1E
expect_refused 'cbw-buffer: given twice' \
  "${stack[@]}" cbw-buffer=1M cbw-buffer=2M
expect_accepted "${stack[@]}" cbw-buffer=0
expect_accepted "${stack[@]}" cbw-buffer=64K

echo "=== the buffer in front of a slow target"
disk=$tmpdir/disk.img
head -c 4M /dev/urandom > "$disk"
cp "$disk" "$tmpdir/point.img"
tsock=$tmpdir/target.sock sock=$tmpdir/nbd.sock ctl=$tmpdir/ctl.sock
start_nbdkit "$tsock" --filter=error --filter=delay memory 8M \
  delay-write=200ms error-pwrite=EIO error-pwrite-rate=100% \
  error-pwrite-file="$tmpdir/fail"
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" file "$disk" \
  control="$ctl" snapshot-discard=true cbw-buffer=1M \
  cbw-target="nbd+unix:///?socket=$tsock"
timeout 120 /usr/bin/python3 "$abs_top_srcdir/tests/cbw_buffer.py" \
  --sock "$sock" --ctl "$ctl" --point "$tmpdir/point.img" \
  --fail "$tmpdir/fail" || fail "see the messages above"
grep -q "cbw-buffer: writing .* buffered bytes .* failed" "$sock.log" ||
  fail "the log does not say the background write failed"
echo "OK"

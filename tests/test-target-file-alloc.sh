#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# How a file target allocates space (docs/performance.md):
#   - a copy of 1 MiB or more preallocates the aligned 8 MiB piece it
#     lands in, and is written with O_DIRECT (the log says so), and the
#     snapshot reads it back exactly;
#   - a lone 64K copy elsewhere preallocates nothing;
#   - -D cbw.direct=0 writes through the page cache, same data;
#   - a disk larger than the file system's largest file (16 TiB on
#     ext4) can still take a snapshot to a file target.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdsh

C=65536
disk=$tmpdir/disk.img
head -c 32M /dev/urandom > "$disk"
cp "$disk" "$tmpdir/point.img"
sock=$tmpdir/nbd.sock ctl=$tmpdir/ctl.sock target=$tmpdir/fleece.img
live="nbd+unix:///?socket=$sock"
snap="nbd+unix:///snapshot?socket=$sock"
kib () { du -k "$target" | cut -f1; }
# snap_ok OFFSET LEN: the snapshot's bytes equal the point's
snap_ok () {
  local a b
  a=$(nbdsh -u "$snap" -c "import hashlib; print(hashlib.sha256(h.pread($2, $1)).hexdigest())")
  b=$(dd if="$tmpdir/point.img" bs=$C skip=$(($1 / C)) count=$(($2 / C)) status=none | sha256sum | cut -d' ' -f1)
  [ "$a" = "$b" ] || fail "snapshot bytes at $1+$2 differ from the point"
}

for direct in 1 0; do
  echo "=== -D cbw.direct=$direct"
  rm -f "$target" "$sock"
  start_nbdkit "$sock" -D cbw.direct=$direct --filter="$SA" --filter="$CBW" \
    file "$disk" control="$ctl" cbw-target="$target"
  ctl "$ctl" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin"
  [ "$(kib)" -lt 1024 ] || fail "target allocated $(kib) KiB before any copy"
  # A lone cluster at 20M: no preallocation.
  nbdsh -u "$live" -c "h.pwrite(b'a' * 4096, 20 * 1024 * 1024)"
  sync "$target"
  [ "$(kib)" -lt 1024 ] || fail "a 64K copy allocated $(kib) KiB of target"
  # 1 MiB at 1M: the piece [0, 8M) is allocated at once.
  nbdsh -u "$live" -c "h.pwrite(b'b' * 1048576, 1048576)"
  sync "$target"
  [ "$(kib)" -ge 8192 ] || fail "a 1 MiB copy preallocated only $(kib) KiB"
  [ "$(kib)" -lt 10240 ] || fail "a 1 MiB copy allocated $(kib) KiB"
  snap_ok 1048576 1048576
  snap_ok $((20 * 1024 * 1024)) $C
  if [ $direct = 1 ]; then
    grep -q "copies of 1 MiB or more bypass the page cache" "$sock.log" ||
      fail "the log does not say copies use O_DIRECT"
  elif grep -q "bypass the page cache" "$sock.log"; then
    fail "-D cbw.direct=0 still uses O_DIRECT"
  fi
  ctl "$ctl" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end"
  stop_nbdkit "$sock"
  cp "$disk" "$tmpdir/point.img"
done

echo "=== a 16 TiB disk, file target"
rm -f "$target" "$target.lock" "$sock"
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" memory 16T \
  control="$ctl" cbw-target="$target"
r=$(ctl "$ctl" snapshot-begin)
jq -e .ok <<<"$r" >/dev/null || fail "snapshot-begin on 16 TiB: $r"
nbdsh -u "$live" -c "h.pwrite(b'c' * 4096, 1 << 40)"
nbdsh -u "$snap" -c "assert h.pread(4096, 1 << 40) == bytes(4096)" ||
  fail "snapshot of the 16 TiB disk at 1 TiB"
ctl "$ctl" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end"
stop_nbdkit "$sock"
echo "OK"

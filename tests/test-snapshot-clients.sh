#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The snapshot exports as stock clients see them.
#
# 1. nbdinfo: the export snapshot/since/C describes itself ("changes
#    since checkpoint C, up to snapshot N taken T"), and the export
#    snapshot describes the snapshot, both on the export itself and in
#    nbdinfo --list.
# 2. A broken snapshot (cbw-on-error=break-snapshot, the target's
#    writes fail): every client reading it reports EPERM, "Operation
#    not permitted" -- nbdsh (nbd.Error errno EPERM), qemu-img convert,
#    qemu-io, nbdcopy, for the snapshot and for its delta view -- and
#    the server log says the snapshot is broken.  (fleecing.md section
#    3: never EINVAL, which says the client sent a bad request.)

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo nbdsh nbdcopy qemu-img qemu-io socat jq

sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
tsock=$tmpdir/target.sock
trigger=$tmpdir/trigger
disk=$tmpdir/disk.img

# The target fails every write while $trigger exists.
start_nbdkit "$tsock" --filter=error memory 64M error=EIO \
  error-pwrite-rate=100% error-zero-rate=100% error-file="$trigger"
head -c 8M /dev/urandom >"$disk"
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl" cbw-target="nbd+unix:///?socket=$tsock" \
  cbw-on-error=break-snapshot

uri () { echo "nbd+unix:///${1:-}?socket=$sock"; }
ok () { echo "$1" | jq -e .ok >/dev/null || fail "control: $1"; }

ok "$(ctl "$ctl" 'checkpoint-create c1')"
# Changes since c1, so that the delta view has data to read.
nbdsh -u "$(uri)" -c 'h.pwrite(b"changed" * 10000, 3 * 65536)'
r=$(ctl "$ctl" 'snapshot-begin checkpoint=c2')
ok "$r"
id=$(echo "$r" | jq -r .id)
started=$(echo "$r" | jq -r .started)

# 1. Descriptions.
want_delta="changes since checkpoint c1, up to snapshot $id taken $started"
want_snap="point-in-time snapshot $id of the disk, taken $started; started checkpoint c2"
desc () { nbdinfo --json "$(uri "$1")" | jq -r '.exports[0].description'; }
got=$(desc snapshot/since/c1)
[ "$got" = "$want_delta" ] ||
  fail "nbdinfo snapshot/since/c1: description '$got', expected '$want_delta'"
got=$(desc snapshot)
[ "$got" = "$want_snap" ] ||
  fail "nbdinfo snapshot: description '$got', expected '$want_snap'"
list=$(nbdinfo --list --json "$(uri)")
got=$(echo "$list" | jq -r '.exports[] | select(."export-name" == "snapshot/since/c1") | .description')
[ "$got" = "$want_delta" ] ||
  fail "nbdinfo --list: snapshot/since/c1 described as '$got'"
got=$(echo "$list" | jq -r '.exports[] | select(."export-name" == "snapshot") | .description')
[ "$got" = "$want_snap" ] || fail "nbdinfo --list: snapshot described as '$got'"
echo "descriptions ok"

# 2. Break the snapshot: the copy for this write fails.
touch "$trigger"
nbdsh -u "$(uri)" -c 'h.pwrite(b"x" * 65536, 0)'
broken=$(ctl "$ctl" status | jq -r .snapshot.broken)
[ "$broken" != null ] || fail "the snapshot is not broken"
echo "broken: $broken"

for export in snapshot snapshot/since/c1; do
  u=$(uri "$export")
  # The delta view reads the snapshot only where c1 saw changes.
  off=0
  [ "$export" = snapshot ] || off=$((3 * 65536))

  nbdsh -u "$u" -c "
try:
    h.pread(4096, $off)
    raise SystemExit('nbdsh: a read of the broken $export succeeded')
except nbd.Error as e:
    if e.errno != 'EPERM':
        raise SystemExit('nbdsh: reading the broken $export failed with '
                         '%s (%s), expected EPERM' % (e.errno, e))
" || fail "nbdsh on $export"

  if qemu-img convert -f raw -O raw "$u" "$tmpdir/out.img" \
       >"$tmpdir/qi.out" 2>&1; then
    fail "qemu-img convert of the broken $export succeeded"
  fi
  grep -q 'Operation not permitted' "$tmpdir/qi.out" || {
    cat "$tmpdir/qi.out"; fail "qemu-img convert of $export: no EPERM"; }

  qemu-io -r -f raw -c "read $off 64k" "$u" >"$tmpdir/qio.out" 2>&1 || true
  grep -q 'read failed: Operation not permitted' "$tmpdir/qio.out" || {
    cat "$tmpdir/qio.out"; fail "qemu-io read of $export: no EPERM"; }

  # One request at a time: nbdcopy quits at the first error, and with
  # many requests in flight nbdkit 1.32 can abort while it still sends
  # replies on the closed socket (an assertion in its connections.c,
  # not in the filters).
  if nbdcopy --connections=1 --requests=1 "$u" "$tmpdir/out.img" \
       >"$tmpdir/nc.out" 2>&1; then
    fail "nbdcopy of the broken $export succeeded"
  fi
  grep -q 'Operation not permitted' "$tmpdir/nc.out" || {
    cat "$tmpdir/nc.out"; fail "nbdcopy of $export: no EPERM"; }
  echo "$export: nbdsh, qemu-img, qemu-io, nbdcopy: Operation not permitted"
done

grep -q "is broken" "$sock.log" ||
  fail "the server log does not say why the reads were refused"

ok "$(ctl "$ctl" snapshot-end)"
echo "OK"

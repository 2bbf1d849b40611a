#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The fleecing demo: a live point-in-time backup of a disk that is being
# written to.  On a Debian 12 machine it installs what is missing,
# builds the filters if they are not built, then:
#
#   1. creates a 256 MiB disk full of recognisable data (nbdkit's
#      pattern plugin) and serves it with
#      snapshot-access + cbw + dirty-bitmap + file, with a control socket;
#   2. starts a "guest" that keeps writing random 64 KiB blocks to the
#      live export;
#   3. pauses the guest for a moment, records the sha256 of the disk as
#      it is now (read through the live export), takes the snapshot
#      (snapshot-begin on the control socket) and lets the guest go on;
#   4. copies the snapshot export to a backup file with nbdcopy while
#      the guest keeps writing, then ends the snapshot;
#   5. checks that the backup's sha256 is the one recorded at the
#      snapshot point;
#   6. an incremental backup: the snapshot of step 3 started checkpoint
#      c1; with the guest still writing, a new snapshot (checkpoint=c2
#      since=c1) is taken and only the changed blocks, read from the
#      export snapshot/since/c1, are applied onto a copy of the full
#      backup, which must then equal the disk at the new snapshot point.
#
# It prints PASS or FAIL (exit status 1).
#
# Everything lives in a temporary directory that is removed at exit.
# Environment: FLEECE_NO_APT=1 skips the package step, DEMO_SIZE
# (default 256M) and DEMO_GUEST_SECONDS (how long the guest writes with
# the snapshot active before the backup starts, default 2).

set -euo pipefail
cd "$(dirname "$0")"
top=$PWD

size_arg=${DEMO_SIZE:-256M}
guest_head_start=${DEMO_GUEST_SECONDS:-2}

say () { printf '\n== %s\n' "$*"; }
die () { echo "demo.sh: $*" >&2; echo "FAIL: $*"; exit 1; }

# ---- packages --------------------------------------------------------
packages=(
  build-essential autoconf automake libtool pkg-config
  nbdkit nbdkit-plugin-dev libnbd-dev libnbd-bin python3-libnbd
  socat jq qemu-utils
)

./tools/install-packages.sh demo.sh "${packages[@]}"

# The bench scripts' library: Debian's tools first in PATH (its python3
# owns the libnbd bindings), need, serve, stop_pid, ctl_ok, $SA $CBW $DB.
. "$top/bench/lib.sh"
die () { echo "demo.sh: $*" >&2; echo "FAIL: $*"; exit 1; }
need nbdkit nbdcopy nbdinfo socat jq sha256sum numfmt python3-nbd

# ---- build -----------------------------------------------------------
if [ ! -f "$SA" ] || [ ! -f "$CBW" ] || [ ! -f "$DB" ]; then
  say "building the filters"
  [ -x configure ] || autoreconf -fi
  [ -f Makefile ] || ./configure
  make -j"$(nproc 2>/dev/null || echo 2)"
fi
need_built "$SA" "$CBW" "$DB"

size=$(numfmt --from=iec "$size_arg") || die "DEMO_SIZE=$size_arg: not a size"
if [ $((size % 65536)) -ne 0 ] || [ "$size" -lt $((1024 * 1024)) ]; then
  die "DEMO_SIZE=$size_arg: must be a multiple of 64K, at least 1M"
fi

# ---- temporary directory and cleanup ---------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleece-demo.XXXXXX")
writer_pid=

cleanup ()
{
  local rc=$?
  stop_pid "$writer_pid" || true
  stop_pid "$server_pid" || true
  [ $rc -eq 0 ] || show_logs "$tmp" 20
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

disk=$tmp/disk.img
sock=$tmp/disk.sock
ctlsock=$tmp/control.sock
fleece=$tmp/fleece.img
backup=$tmp/backup.img
live_uri="nbd+unix:///?socket=$sock"
snap_uri="nbd+unix:///snapshot?socket=$sock"

ctl () { ctl_ok "$ctlsock" "$1"; }

# ---- 1. the disk and the server --------------------------------------
say "1. a $size_arg disk with data, served with snapshot-access + cbw + dirty-bitmap"
truncate -s "$size" "$disk"
nbdcopy -- [ nbdkit -r pattern size="$size" ] "$disk"
echo "disk:   $disk (filled by nbdkit's pattern plugin)"

serve "$tmp/nbdkit.log" "$sock" "$ctlsock" -- nbdkit -f -U "$sock" \
  --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" \
  cbw-target="$fleece" \
  control="$ctlsock"
echo "server: nbdkit -U $sock --filter=snapshot-access --filter=cbw --filter=dirty-bitmap \\"
echo "          file $disk cbw-target=$fleece control=$ctlsock"
echo "status: $(ctl status | jq -c '.snapshot | {active, clusters_copied, target_bytes}')"

# ---- 2. the guest ----------------------------------------------------
say "2. a guest writing random 64 KiB blocks to the live export"
cat >"$tmp/guest.py" <<'EOF'
# Writes random 64 KiB blocks (random data, 4 KiB aligned offsets,
# mostly in the first eighth of the disk) to the live export until
# SIGTERM.  While the file PAUSE exists it stops
# writing (no request in flight) and shows that with the file PAUSED.
# After every write it stores its write count in COUNT.
import os, random, signal, sys, time
import nbd

sock, pause, paused, countfile = sys.argv[1:5]
stop = False

def on_term(signum, frame):
    global stop
    stop = True

signal.signal(signal.SIGTERM, on_term)
h = nbd.NBD()
h.connect_unix(sock)
size = h.get_size()
rnd = random.Random()
blk = 65536
n = 0
cfd = os.open(countfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.pwrite(cfd, b"%012d\n" % n, 0)
while not stop:
    if os.path.exists(pause):
        open(paused, "w").close()
        while os.path.exists(pause) and not stop:
            time.sleep(0.002)
        os.unlink(paused)
        continue
    # Like a real guest, mostly a hot area (the first eighth), now and
    # then anywhere.
    hot = size // 8 if rnd.random() < 0.95 else size
    off = rnd.randrange(0, hot - blk + 1, 4096)
    h.pwrite(rnd.randbytes(blk), off)
    n += 1
    os.pwrite(cfd, b"%012d\n" % n, 0)
    time.sleep(0.001)
h.flush()
h.shutdown()
print("guest: %d writes" % n)
EOF
guest_count () { tr -d ' \n' <"$tmp/guest.count" | sed 's/^0*\([0-9]\)/\1/'; }
"$PY" "$tmp/guest.py" "$sock" "$tmp/pause" "$tmp/paused" \
  "$tmp/guest.count" >"$tmp/guest.log" 2>&1 &
writer_pid=$!
sleep 1
kill -0 "$writer_pid" 2>/dev/null || die "the guest writer died (see $tmp/guest.log)"
echo "guest:  running, $(guest_count) writes so far"

# take_snapshot ARGS...: pause the guest, record the disk's sha256 in
# $expected, snapshot-begin ARGS, resume the guest.
take_snapshot ()
{
  touch "$tmp/pause"
  for _ in $(seq 500); do
    [ -e "$tmp/paused" ] && break
    kill -0 "$writer_pid" 2>/dev/null || die "the guest writer died"
    sleep 0.01
  done
  [ -e "$tmp/paused" ] || die "the guest did not pause"
  expected=$(nbdcopy "$live_uri" - | sha256sum | awk '{print $1}')
  reply=$(ctl "snapshot-begin $*")
  rm -f "$tmp/pause"
  echo "sha256 at the snapshot point: $expected"
  echo "snapshot-begin $*: $reply"
}

# ---- 3. the snapshot -------------------------------------------------
say "3. snapshot: pause the guest, record the disk's sha256, snapshot-begin, resume"
take_snapshot checkpoint=c1
full_expected=$expected
writes_at_snapshot=$(guest_count)
echo "the guest writes on for ${guest_head_start} s before the backup starts"
sleep "$guest_head_start"

# ---- 4. the backup ---------------------------------------------------
say "4. backup: nbdcopy --progress $snap_uri $backup"
writes_before=$(guest_count)
t0=$(date +%s.%N)
nbdcopy --progress "$snap_uri" "$backup" || die "nbdcopy of the snapshot failed"
t1=$(date +%s.%N)
writes_after=$(guest_count)
kill -0 "$writer_pid" 2>/dev/null || die "the guest writer died during the backup (see $tmp/guest.log)"
status=$(ctl status)
echo "status before snapshot-end: $(jq -c '.snapshot' <<<"$status")"
clusters_copied=$(jq '.snapshot.clusters_copied' <<<"$status")
target_bytes=$(jq '.snapshot.target_bytes' <<<"$status")
cluster_size=$(jq '.snapshot.cluster_size // 65536' <<<"$status")
broken=$(jq -r '.snapshot.broken' <<<"$status")
ctl snapshot-end >/dev/null
echo "snapshot-end: done; target now $(ctl status | jq '.snapshot.target_bytes') bytes"

writes_total=$(guest_count)

# ---- 5. verify -------------------------------------------------------
say "5. verify"
got=$(sha256sum "$backup" | awk '{print $1}')
live_now=$(nbdcopy "$live_uri" - | sha256sum | awk '{print $1}')
backup_size=$(stat -c %s "$backup")
mbps=$(awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", s / (b - a) / 1e6 }')
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')

echo "sha256 at the snapshot point:   $full_expected"
echo "sha256 of the backup:           $got"
echo "sha256 of the live disk now:    $live_now"
echo
echo "summary:"
echo "  disk size:                       $size bytes"
echo "  clusters copied before the end:  $clusters_copied ($cluster_size bytes each)"
echo "  fleecing target peak:            $target_bytes bytes ($((target_bytes / 1048576)) MiB)"
echo "  backup:                          $size bytes in $secs s = $mbps MB/s"
echo "  guest writes during the backup:  $((writes_after - writes_before))"
echo "  guest writes with the snapshot:  $((writes_total - writes_at_snapshot)) (of $writes_total in all)"
echo

# ---- 6. incremental backup --------------------------------------------
say "6. incremental: new snapshot with checkpoint=c2 since=c1, copy only the changes"
echo "the guest writes for ${guest_head_start} s more"
sleep "$guest_head_start"
take_snapshot checkpoint=c2 since=c1
incr_expected=$expected
delta_uri="nbd+unix:///snapshot/since/c1?socket=$sock"
nbdinfo --map "$delta_uri" >"$tmp/map" || die "nbdinfo --map of the delta export failed"
changed=$(awk '$3 == 0 { n += $2 } END { print n + 0 }' "$tmp/map")
echo "changed since c1: $changed bytes in $(awk '$3 == 0' "$tmp/map" | wc -l) extents (nbdinfo --map $delta_uri)"
incr=$tmp/incremental.img
cp "$backup" "$incr"
# The recipe of the README: skip holes, write every changed block.
nbdcopy --destination-is-zero -S 0 --request-size=65536 "$delta_uri" \
  -- [ nbdkit file "$incr" ] || die "applying the delta failed"
incr_status=$(ctl status)
ctl snapshot-end >/dev/null
incr_got=$(sha256sum "$incr" | awk '{print $1}')
echo "sha256 of full backup + delta: $incr_got"
echo "checkpoints: $(jq -c '[.checkpoints[] | {name, recording, dirty_bytes}]' <<<"$incr_status")"
echo "  incremental backup read:       $changed of $size bytes ($(jq '.snapshot.clusters_copied' <<<"$incr_status") clusters copied, $(jq '.snapshot.target_bytes' <<<"$incr_status") bytes in the target)"

# Stop the guest; it must have run without an error the whole time.
stop_pid "$writer_pid" || true
writer_pid=
grep -q '^guest: ' "$tmp/guest.log" || die "the guest writer failed: $(tail -n 5 "$tmp/guest.log")"
echo

fail=
[ "$broken" = null ] || fail="the snapshot broke: $broken"
[ "$backup_size" = "$size" ] || fail="the backup has $backup_size bytes, expected $size"
[ "$got" = "$full_expected" ] || fail="sha256 of the backup differs from the disk at the snapshot point"
if [ -z "$fail" ] && [ "$((writes_total - writes_at_snapshot))" -gt 0 ] &&
   [ "$live_now" = "$full_expected" ]; then
  fail="the guest wrote, yet the live disk still equals the snapshot"
fi
[ -n "$fail" ] || [ "$incr_got" = "$incr_expected" ] ||
  fail="full backup + delta differs from the disk at the second snapshot point"
[ -n "$fail" ] || [ "$changed" -gt 0 ] && [ "$changed" -lt "$size" ] ||
  fail="the delta export should hold some but not all of the disk ($changed bytes)"
if [ -n "$fail" ]; then
  echo "FAIL: $fail"
  exit 1
fi
echo "PASS: the full backup and the full + incremental backup, taken while the guest wrote, are exactly the disk at their snapshot points"

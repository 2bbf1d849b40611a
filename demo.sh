#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The fleecing demo: live backups of a disk that is being written to,
# taken with fleecectl, kept as a qcow2 chain, restored with qemu-img.
# On a Debian 12 machine it installs what is missing, builds the
# filters and fleecectl if they are not built, then:
#
#   1. creates a disk full of recognisable data (nbdkit's pattern
#      plugin) and serves it with snapshot-access + cbw + dirty-bitmap
#      + file, with a control socket;
#   2. starts a "guest" that keeps writing random 64 KiB blocks to the
#      live export;
#   3. a full backup: the guest is paused, the disk's sha256 recorded,
#      `fleecectl backup --checkpoint c1 full.img` started (the job's
#      snapshot is taken when the server accepts it), the guest let go;
#      the job copies the snapshot while the guest writes, with a
#      progress bar (plain lines when not on a terminal);
#   4. two incrementals the same way, each onto a qcow2 overlay whose
#      backing file is the previous backup, served by qemu-nbd:
#      `fleecectl backup --since c1 --checkpoint c2` and
#      `--since c2 --checkpoint c3`;
#   5. restores the chain with `qemu-img convert` and checks that every
#      restore equals the disk at its snapshot point.
#
# It ends with "demo: OK", or "demo: FAIL: why" (exit status 1).
#
# Everything lives in a temporary directory that is removed at exit,
# with every server it started.  Environment: FLEECE_NO_APT=1 skips
# the package step, DEMO_SIZE (default 256M), DEMO_GUEST_SECONDS (how
# long the guest writes between two backups, default 2), DEMO_SPEED
# (the backups' speed limit, so the progress is seen; default 100M,
# 0 for none).

set -euo pipefail
cd "$(dirname "$0")"
top=$PWD

size_arg=${DEMO_SIZE:-256M}
guest_seconds=${DEMO_GUEST_SECONDS:-2}
speed=${DEMO_SPEED:-100M}

say () { printf '\n== %s\n' "$*"; }
die () { echo "demo.sh: $*" >&2; echo "demo: FAIL: $*"; exit 1; }

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
die () { echo "demo.sh: $*" >&2; echo "demo: FAIL: $*"; exit 1; }
fail () { die "$@"; }
need nbdkit nbdcopy socat jq sha256sum numfmt qemu-img qemu-nbd python3-nbd

# ---- build -----------------------------------------------------------
FC=$top/fleecectl/fleecectl
if [ ! -f "$SA" ] || [ ! -f "$CBW" ] || [ ! -f "$DB" ] || [ ! -x "$FC" ]; then
  say "building the filters and fleecectl"
  [ -x configure ] || autoreconf -fi
  [ -f Makefile ] || ./configure
  make -j"$(nproc 2>/dev/null || echo 2)"
fi
need_built "$SA" "$CBW" "$DB" "$FC"

size=$(numfmt --from=iec "$size_arg") || die "DEMO_SIZE=$size_arg: not a size"
if [ $((size % 65536)) -ne 0 ] || [ "$size" -lt $((1024 * 1024)) ]; then
  die "DEMO_SIZE=$size_arg: must be a multiple of 64K, at least 1M"
fi

# ---- temporary directory and cleanup ---------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleece-demo.XXXXXX")
writer_pid= nbdkit_pid= qnbd_pid= fc_pid=

cleanup ()
{
  local rc=$?
  stop_pid "$fc_pid" || true
  stop_pid "$writer_pid" || true
  stop_pid "$qnbd_pid" || true
  stop_pid "$nbdkit_pid" || true
  [ $rc -eq 0 ] || show_logs "$tmp" 20
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

disk=$tmp/disk.img
sock=$tmp/disk.sock
ctlsock=$tmp/control.sock
live_uri="nbd+unix:///?socket=$sock"

ctl () { ctl_ok "$ctlsock" "$1"; }
hash_of () { sha256sum "$1" | awk '{print $1}'; }
live_hash () { nbdcopy "$live_uri" - | sha256sum | awk '{print $1}'; }

# ---- 1. the disk and the server --------------------------------------
say "1. a $size_arg disk with data, served with snapshot-access + cbw + dirty-bitmap"
truncate -s "$size" "$disk"
nbdcopy -- [ nbdkit -r pattern size="$size" ] "$disk"
echo "disk:   $disk (filled by nbdkit's pattern plugin)"

serve "$tmp/nbdkit.log" "$sock" "$ctlsock" -- nbdkit -f -U "$sock" \
  --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctlsock"
nbdkit_pid=$server_pid
echo "server: nbdkit -U $sock --filter=snapshot-access --filter=cbw --filter=dirty-bitmap \\"
echo "          file $disk control=$ctlsock"

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


# backup WHAT TARGET FLEECECTL-OPTIONS...: pause the guest, record the
# disk's sha256 in $expected, start fleecectl backup in the background,
# let the guest go on as soon as the server lists the new job (its
# snapshot is taken before backup-start replies), wait for fleecectl.
backup ()
{
  local what=$1 target=$2 old i rc=0
  shift 2
  touch "$tmp/pause"
  for _ in $(seq 500); do
    [ -e "$tmp/paused" ] && break
    kill -0 "$writer_pid" 2>/dev/null || die "the guest writer died (see $tmp/guest.log)"
    sleep 0.01
  done
  [ -e "$tmp/paused" ] || die "the guest did not pause"
  expected=$(live_hash)
  old=$(ctl status | jq -c '[.jobs[]?.id]')
  echo "guest paused after $(guest_count) writes; sha256 of the disk now: $expected"
  echo "\$ fleecectl -c \$CTL backup $* ${target//$tmp\//}"
  "$FC" -c "$ctlsock" backup "$@" "$target" &
  fc_pid=$!
  for ((i = 0; i < 500; i++)); do
    kill -0 "$fc_pid" 2>/dev/null || break
    ctl status | jq -e --argjson old "$old" \
      '[.jobs[]?.id] - $old | length > 0' >/dev/null && break
    sleep 0.02
  done
  rm -f "$tmp/pause"
  wait "$fc_pid" || rc=$?
  fc_pid=
  [ $rc -eq 0 ] || die "$what: fleecectl backup exited with $rc"
  kill -0 "$writer_pid" 2>/dev/null || die "the guest writer died during the $what (see $tmp/guest.log)"
  echo "the guest wrote on during the backup: $(guest_count) writes so far"
}

# serve_qcow2 FILE: qemu-nbd serves the qcow2 FILE on $qsock.
qsock=$tmp/qemu-nbd.sock
serve_qcow2 ()
{
  rm -f "$qsock"
  serve "$tmp/qemu-nbd.log" "$qsock" -- qemu-nbd -t -k "$qsock" -f qcow2 "$1"
  qnbd_pid=$server_pid
}
stop_qcow2 ()
{
  stop_pid "$qnbd_pid" || die "qemu-nbd failed (see $tmp/qemu-nbd.log)"
  qnbd_pid=
}

speed_opt=()
[ "$speed" = 0 ] || speed_opt=(--speed "$speed")

# ---- 3. full backup --------------------------------------------------
say "3. full backup while the guest writes (speed limit ${speed}, so the progress shows)"
full=$tmp/full.img
backup "full backup" "$full" --checkpoint c1 "${speed_opt[@]}"
hash_full=$expected
sleep "$guest_seconds"

# ---- 4. two incrementals onto a qcow2 chain ---------------------------
say "4. incremental 1: only what changed since c1, onto a qcow2 overlay of full.img served by qemu-nbd"
incr1=$tmp/incr1.qcow2
echo "\$ qemu-img create -f qcow2 -b full.img -F raw incr1.qcow2"
qemu-img create -q -f qcow2 -b "$full" -F raw "$incr1"
echo "\$ qemu-nbd -t -k qemu-nbd.sock -f qcow2 incr1.qcow2 &"
serve_qcow2 "$incr1"
backup "first incremental" "nbd+unix:///?socket=$qsock" \
  --since c1 --checkpoint c2 "${speed_opt[@]}"
hash_incr1=$expected
stop_qcow2
echo "\$ fleecectl -c \$CTL checkpoint-delete c1     # c1's changes merge away; c2 records on"
"$FC" -c "$ctlsock" checkpoint-delete c1
sleep "$guest_seconds"

say "4. incremental 2: only what changed since c2, onto a qcow2 overlay of incr1.qcow2"
incr2=$tmp/incr2.qcow2
echo "\$ qemu-img create -f qcow2 -b incr1.qcow2 -F qcow2 incr2.qcow2"
qemu-img create -q -f qcow2 -b "$incr1" -F qcow2 "$incr2"
serve_qcow2 "$incr2"
backup "second incremental" "nbd+unix:///?socket=$qsock" \
  --since c2 --checkpoint c3 "${speed_opt[@]}"
hash_incr2=$expected
stop_qcow2

echo
echo "\$ fleecectl -c \$CTL status"
"$FC" -c "$ctlsock" status

# Stop the guest; it must have run without an error the whole time.
stop_pid "$writer_pid" || true
writer_pid=
grep -q '^guest: ' "$tmp/guest.log" || die "the guest writer failed: $(tail -n 5 "$tmp/guest.log")"
live_now=$(live_hash)

# ---- 5. restore and verify -------------------------------------------
say "5. restore the chain with qemu-img convert and compare with the disk at each snapshot point"
echo "the backup chain (allocated bytes):"
for f in "$full" "$incr1" "$incr2"; do
  printf '  %-12s %s\n' "$(basename "$f")" \
    "$(numfmt --to=iec "$(($(stat -c %b "$f") * 512))")"
done
restore1=$tmp/restore1.img restore2=$tmp/restore2.img
echo "\$ qemu-img convert -f qcow2 -O raw incr1.qcow2 restore1.img"
qemu-img convert -f qcow2 -O raw "$incr1" "$restore1"
echo "\$ qemu-img convert -f qcow2 -O raw incr2.qcow2 restore2.img"
qemu-img convert -f qcow2 -O raw "$incr2" "$restore2"

fail=
check_restore ()
{
  local what=$1 file=$2 want=$3 got
  got=$(hash_of "$file")
  if [ "$got" = "$want" ]; then
    printf '  %-40s %s  equal\n' "$what" "$got"
  else
    printf '  %-40s %s  DIFFERS from %s\n' "$what" "$got" "$want"
    fail=${fail:-"$what differs from the disk at its snapshot point"}
  fi
}
check_restore "full.img (the full backup)" "$full" "$hash_full"
check_restore "restore1.img (full + incremental 1)" "$restore1" "$hash_incr1"
check_restore "restore2.img (full + incrementals 1, 2)" "$restore2" "$hash_incr2"
[ "$(stat -c %s "$restore2")" = "$size" ] || fail="restore2.img has the wrong size"
if [ "$hash_full" = "$hash_incr1" ] || [ "$hash_incr1" = "$hash_incr2" ] ||
   [ "$live_now" = "$hash_incr2" ]; then
  fail="${fail:-the guest did not change the disk between the backups}"
fi
[ -z "$fail" ] || die "$fail"
echo
echo "a full and two incremental backups, taken with fleecectl while the guest wrote and"
echo "restored from the qcow2 chain, are each exactly the disk at its snapshot point"
echo "demo: OK"

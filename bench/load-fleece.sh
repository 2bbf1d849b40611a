#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Load/soak test of the full stack (manual, not part of make check):
# 16 guest connections of mixed reads, writes, zeroes and trims on a
# 1 GiB file disk for LOAD_SECONDS, with a snapshot active nearly all
# the time (a snapshot-begin/end cycle every LOAD_CYCLE seconds, each
# with a new checkpoint), a snapshot reader, and a delta-view map per
# cycle.  Samples nbdkit's VmRSS every few seconds and checks that it
# stays flat, that no request fails, and that the snapshot holds
# exactly the data of its snapshot point (recorded regions, checked
# during and at the end of every cycle, and once more for the last
# snapshot after the load stopped).  See load_fleece.py.
#
# Environment: LOAD_SECONDS (default 120), LOAD_CYCLE (10),
# LOAD_CLIENTS (16), LOAD_SIZE (disk size, default 1G), LOAD_REGIONS
# (1 MiB regions recorded per cycle, 16), LOAD_SEED (1), TMPDIR (where
# the disk, the bitmap file and the fleecing target live).
#
# Exit 0 when the verdict is PASS.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$top/bench/lib.sh"

seconds=${LOAD_SECONDS:-120}
cycle=${LOAD_CYCLE:-10}
clients=${LOAD_CLIENTS:-16}
size_arg=${LOAD_SIZE:-1G}
regions=${LOAD_REGIONS:-16}
seed=${LOAD_SEED:-1}

need nbdkit nbdcopy nbdinfo numfmt python3-nbd
need_built "$SA" "$CBW" "$DB"

size=$(numfmt --from=iec "$size_arg")
work=$(mktemp -d "${TMPDIR:-/var/tmp}/load-fleece.XXXXXX")
cleanup ()
{
  local rc=$?
  stop_pid "$server_pid" || true
  [ $rc -eq 0 ] || show_logs "$work" 20
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

disk=$work/disk.img
sock=$work/nbd.sock
ctl=$work/ctl.sock

echo "== load-fleece: $clients clients, disk $size_arg, ${seconds} s, a snapshot cycle every ${cycle} s"
echo "workdir $work"
# Real data in every block, so copies and checksums see real contents.
head -c "$size" /dev/urandom > "$disk"

# The default fleecing target: an unlinked temporary file in TMPDIR.
serve "$work/nbdkit.log" "$sock" "$ctl" -- env TMPDIR="$work" \
  nbdkit -f -U "$sock" \
  --filter="$SA" --filter="$CBW" --filter="$DB" \
  file "$disk" control="$ctl" bitmap-file="$work/disk.bitmaps"
pid=$server_pid
nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null ||
  die "nbdkit does not serve"
echo "nbdkit pid $pid: $(nbdkit --version | head -n 1)"

rc=0
"$PY" "$here/load_fleece.py" --sock "$sock" --ctl "$ctl" \
  --pid "$pid" --size "$size" --seconds "$seconds" --cycle "$cycle" \
  --clients "$clients" --regions "$regions" --seed "$seed" || rc=$?

kill -0 "$pid" 2>/dev/null || { echo "nbdkit died during the load" >&2; rc=1; }
if grep -E 'error|assert|Aborted|Segmentation' "$work/nbdkit.log" | grep -v 'debug:' | head -n 5 | grep -q .; then
  echo "nbdkit logged errors:" >&2
  grep -E 'error|assert|Aborted|Segmentation' "$work/nbdkit.log" | head -n 5 >&2
  rc=1
fi
exit $rc

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Numbers for changed-block tracking, in one run:
#
#   overhead  4 KiB random writes at queue depth 16 (fio, nbd engine)
#             on a file disk: plain nbdkit against the dirty-bitmap
#             filter with a recording checkpoint.  Target >= 0.98x.
#   map       the time for `nbdinfo --map` of the delta export of a
#             1 TiB sparse disk (memory plugin) with 1% of its 64K
#             granules changed, in 1 MiB runs and as single scattered
#             granules (the worst case: two extents per changed
#             granule).  Target < 100 ms.  nbdkit 1.32 sends every
#             block status descriptor with its own send(2), about
#             1.5 us each, so the scattered case costs ~0.5 s in
#             nbdkit's reply code, whatever the filter does.
#   bytes     bytes an incremental backup reads (the data extents of
#             the delta export) against bytes changed, rounded out to
#             granules.  Target: equal.
#
# Environment: BENCH_REPEAT (default 5), BENCH_SECONDS (fio runtime per
# measurement, default 5), MAP_PERCENT (default 1), TMPDIR.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$top/bench/lib.sh"
py=$PY

repeat=${BENCH_REPEAT:-5}
seconds=${BENCH_SECONDS:-5}
percent=${MAP_PERCENT:-1}

need_built "$SA" "$CBW" "$DB"
need nbdkit fio nbdinfo socat jq python3-nbd

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleece-bench.XXXXXX")
cleanup ()
{
  stop_pid "$server_pid" || true
  rm -rf "$tmp"
}
trap cleanup EXIT

sock=$tmp/nbd.sock
ctl=$tmp/ctl.sock

start ()
{
  rm -f "$sock" "$ctl"
  serve "$tmp/nbdkit.log" "$sock" -- nbdkit -f -U "$sock" "$@"
}

stop ()
{
  stop_pid "$server_pid" 30 || true
  server_pid=
}

ctlcmd () { ctl_ok "$ctl" "$1" 30 >/dev/null; }

median ()
{
  sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench-tracking: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- overhead --------------------------------------------------------
disk=$tmp/disk.img
truncate -s 1G "$disk"
fio_iops ()
{
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$sock" \
      --rw=randwrite --bs=4k --iodepth=16 --size=1G --time_based \
      --runtime="$seconds" --randrepeat=1 --output-format=json 2>/dev/null |
    sed -n '/^{/,$p' | jq '.jobs[0].write.iops | floor'
}
: >"$tmp/plain"; : >"$tmp/tracked"
for i in $(seq "$repeat"); do
  # Alternate the order so drift on a shared machine hits both.
  for cfg in plain tracked; do
    [ $((i % 2)) -eq 0 ] && cfg=$([ "$cfg" = plain ] && echo tracked || echo plain)
    if [ "$cfg" = plain ]; then
      start file "$disk"
    else
      start --filter="$DB" file "$disk" control="$ctl"
      ctlcmd "checkpoint-create c1"
    fi
    fio_iops >>"$tmp/$cfg"
    stop
  done
done
plain=$(median <"$tmp/plain")
tracked=$(median <"$tmp/tracked")
overhead_ratio=$(awk -v a="$tracked" -v b="$plain" 'BEGIN { printf "%.3f", a / b }')
echo "overhead: plain $(tr '\n' ' ' <"$tmp/plain")-> median $plain IOPS"
echo "overhead: tracked $(tr '\n' ' ' <"$tmp/tracked")-> median $tracked IOPS"

# ---- map of a 1 TiB disk with 1% changed -----------------------------
# Two patterns of change: "scattered", single granules at random (one
# extent per changed granule, the worst case), and "clustered", runs of
# 16 granules (1 MiB) at random, closer to how guests write.
map_run ()
{
  local pattern=$1 changed bytes
  start --filter="$SA" --filter="$CBW" --filter="$DB" memory 1T control="$ctl"
  ctlcmd "checkpoint-create c1"
  # Zero requests mark granules like writes but keep the memory plugin
  # from allocating anything.
  changed=$($py - "$sock" "$percent" "$pattern" <<'PYEOF'
import random, sys, nbd
sock, percent, pattern = sys.argv[1], float(sys.argv[2]), sys.argv[3]
h = nbd.NBD()
h.connect_unix(sock)
g = 65536
run = 16 if pattern == "clustered" else 1
n = h.get_size() // (g * run)
picks = random.Random(1).sample(range(n), int(n * percent / 100))
for i in picks:
    h.aio_zero(run * g - 8192, i * run * g + 4096)
    if h.aio_in_flight() >= 64:
        while h.aio_in_flight() >= 32:
            h.poll(-1)
while h.aio_in_flight() > 0:
    h.poll(-1)
h.flush()
h.shutdown()
print(len(picks) * run)
PYEOF
)
  ctlcmd "snapshot-begin checkpoint=c2"
  delta="nbd+unix:///snapshot/since/c1?socket=$sock"
  : >"$tmp/map"
  for i in $(seq "$repeat"); do
    t0=$(date +%s%N)
    nbdinfo --map "$delta" >"$tmp/map.out"
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 )) >>"$tmp/map"
  done
  bytes=$(awk '$3 == 0 { n += $2 } END { printf "%.0f\n", n }' "$tmp/map.out")
  map_ms=$(median <"$tmp/map")
  echo "map ($pattern): $changed granules changed, $(awk '$3 == 0' "$tmp/map.out" | wc -l) data extents; nbdinfo --map $(tr '\n' ' ' <"$tmp/map")-> median $map_ms ms"
  [ "$bytes" -eq $((changed * 65536)) ] ||
    { echo "bench-tracking: the map shows $bytes changed bytes, expected $((changed * 65536))" >&2; exit 1; }
  ctlcmd snapshot-end
  stop
}
map_run scattered
map_scattered=$map_ms
map_run clustered
map_clustered=$map_ms

# ---- bytes read by an incremental backup -----------------------------
start --filter="$SA" --filter="$CBW" --filter="$DB" file "$disk" control="$ctl"
ctlcmd "snapshot-begin checkpoint=c1"
ctlcmd snapshot-end
read -r changed_bytes read_bytes < <($py - "$sock" "$ctl" "$top/tests" <<'PYEOF'
import random, sys, nbd
sock, ctl = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
from fleece_lib import Ctl
control = Ctl(ctl).ok
g = 65536
h = nbd.NBD()
h.connect_unix(sock)
rnd = random.Random(2)
touched = set()
for _ in range(2000):
    length = rnd.choice([512, 4096, 65536, 200000])
    off = rnd.randrange(0, h.get_size() - length)
    h.pwrite(rnd.randbytes(length), off)
    touched.update(range(off // g, (off + length - 1) // g + 1))
h.shutdown()
control("snapshot-begin checkpoint=c2")
d = nbd.NBD()
d.add_meta_context("base:allocation")
d.set_export_name("snapshot/since/c1")
d.connect_unix(sock)
size = d.get_size()
extents = []
def cb(ctx, off, entries, err):
    pos = off
    for i in range(0, len(entries), 2):
        extents.append((pos, entries[i], entries[i + 1]))
        pos += entries[i]
    return 0
off = 0
while off < size:
    n = len(extents)
    d.block_status(min(size - off, 1 << 30), off, cb)
    off = extents[-1][0] + extents[-1][1]
read = 0
for pos, length, flags in extents:
    if flags == 0:
        d.pread(length, pos)
        read += length
control("snapshot-end")
print(len(touched) * g, read)
PYEOF
)
stop
bytes_ratio=$(awk -v a="$read_bytes" -v b="$changed_bytes" 'BEGIN { printf "%.3f", a / b }')
echo "bytes: changed (granules touched x 64K) $changed_bytes, read by the incremental backup $read_bytes"

verdict () { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v >= t : (op == "<") ? v < t : v == t; print ok ? "met" : "MISSED" }'; }
echo
echo "| measure | value | target | |"
echo "|---|---:|---:|---|"
echo "| tracking overhead, 4K random writes QD16, tracked / plain | $overhead_ratio | >= 0.98 | $(verdict "$overhead_ratio" 0.98 '>=') |"
echo "| nbdinfo --map of the delta of a 1 TiB disk, ${percent}% changed in 1 MiB runs | $map_clustered ms | < 100 ms | $(verdict "$map_clustered" 100 '<') |"
echo "| the same, ${percent}% changed as single scattered granules (worst case) | $map_scattered ms | < 100 ms | $(verdict "$map_scattered" 100 '<') |"
echo "| incremental bytes read / bytes changed | $bytes_ratio | 1.000 | $(verdict "$bytes_ratio" 1.000 '==') |"

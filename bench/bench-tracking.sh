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
#   crashsafe bitmap-sync=write-ahead against clean-stop (bitmap-file=
#             on a 1 GiB file disk in the page cache, dirty-bitmap
#             filter alone), rounds interleaved, medians: 4K random
#             writes QD16 with every granule already marked (steady
#             state, target >= 0.98x); a pass of 4K random writes QD16
#             over the whole disk on a fresh checkpoint, every 4K block
#             once, so every 64K granule gets its first touch during
#             the pass (first touch, >= 0.7x); the worst case, one 4K
#             write per granule (fio zonemode=strided), stated; 1 MiB
#             sequential writes QD16 on a fresh checkpoint (first
#             touch, >= 0.9x); syncs per second and writes per sync
#             during the 4K first touch; CPU time of nbdkit per request
#             (utime + stime from /proc/PID/stat); and the bytes an
#             incremental backup reads after kill -9 against the same
#             workload without a crash, and after a restart as after a
#             power loss (another boot id: whole 4 MiB regions).
#
# Environment: BENCH_REPEAT (default 5), BENCH_SECONDS (fio runtime per
# measurement, default 5), MAP_PERCENT (default 1), TMPDIR,
# BENCH_PARTS (default "overhead map bytes crashsafe": which to run).

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

want () { [[ " ${BENCH_PARTS:-overhead map bytes crashsafe} " == *" $1 "* ]]; }

median ()
{
  sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench-tracking: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- overhead --------------------------------------------------------
disk=$tmp/disk.img
truncate -s 1G "$disk"
if want overhead; then
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
fi

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
if want map; then
map_run scattered
map_scattered=$map_ms
map_run clustered
map_clustered=$map_ms
fi

# ---- bytes read by an incremental backup -----------------------------
if want bytes; then
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
fi

# ---- crash-safe tracking: write-ahead against clean-stop --------------
cpu_ticks () { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
status_key () { echo status | socat -t 30 - "UNIX-CONNECT:$ctl" | jq "$1"; }
# fio_job ARGS...: prints "iops total_ios bw_KiB/s"
fio_job ()
{
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$sock" \
      --iodepth=16 --output-format=json "$@" 2>/dev/null |
    sed -n '/^{/,$p' | jq -r '.jobs[0].write | "\(.iops | floor) \(.total_ios) \(.bw)"'
}
if want crashsafe; then
  wa_disk=$tmp/wa.img
  truncate -s 1G "$wa_disk"
  ngran=$((1024 * 1024 * 1024 / 65536))
  for f in steady first4k worst4k first1m syncs wps cpu_steady cpu_first4k; do
    : >"$tmp/cs.write-ahead.$f"; : >"$tmp/cs.clean-stop.$f"
  done
  for i in $(seq "$repeat"); do
    for mode in write-ahead clean-stop; do
      [ $((i % 2)) -eq 0 ] && mode=$([ "$mode" = write-ahead ] && echo clean-stop || echo write-ahead)
      rm -f "$tmp/wa.bm"
      start --filter="$DB" file "$wa_disk" bitmap-file="$tmp/wa.bm" \
        bitmap-sync=$mode control="$ctl"
      # Worst case: one 4K write per granule, each a first touch.
      ctlcmd "checkpoint-create w$i"
      read -r iops _ _ < <(fio_job --rw=randwrite --bs=4k --size=1G \
        --zonemode=strided --zonesize=4k --zonerange=64k --number_ios=$ngran)
      echo "$iops" >>"$tmp/cs.$mode.worst4k"
      # First touch, 4K random: a pass over the whole disk (fio's
      # random map: every 4K block once) on a fresh checkpoint.
      ctlcmd "checkpoint-create a$i"
      s0=$(status_key .bitmap_file.syncs); c0=$(cpu_ticks)
      read -r iops ios _ < <(fio_job --rw=randwrite --bs=4k --size=1G \
        --randrepeat=1)
      s1=$(status_key .bitmap_file.syncs); c1=$(cpu_ticks)
      dirty=$(status_key '.checkpoints[-1].dirty_bytes')
      echo "$iops" >>"$tmp/cs.$mode.first4k"
      echo "$(( (c1 - c0) * 10000000 / $(getconf CLK_TCK) / (ios > 0 ? ios : 1) ))" >>"$tmp/cs.$mode.cpu_first4k"
      if [ "$mode" = write-ahead ]; then
        # fio's run time is not reported per job here: syncs per
        # second from the IOPS and the writes per sync.
        echo "$(( ios / (s1 - s0 > 0 ? s1 - s0 : 1) ))" >>"$tmp/cs.$mode.wps"
        echo "$(( iops * (s1 - s0) / (ios > 0 ? ios : 1) ))" >>"$tmp/cs.$mode.syncs"
      fi
      [ "$i" -eq 1 ] && echo "crashsafe ($mode): first touch 4K: $ios writes marked $((dirty / 65536)) of $ngran granules, $((s1 - s0)) syncs"
      # Steady state: every granule marked already.
      c0=$(cpu_ticks)
      read -r iops ios _ < <(fio_job --rw=randwrite --bs=4k --size=1G \
        --time_based --runtime="$seconds" --randrepeat=1)
      c1=$(cpu_ticks)
      echo "$iops" >>"$tmp/cs.$mode.steady"
      echo "$(( (c1 - c0) * 10000000 / $(getconf CLK_TCK) / (ios > 0 ? ios : 1) ))" >>"$tmp/cs.$mode.cpu_steady"
      # First touch, 1 MiB sequential on a fresh checkpoint.
      ctlcmd "checkpoint-create b$i"
      read -r _ _ bw < <(fio_job --rw=write --bs=1M --size=1G)
      echo "$(( bw / 1024 ))" >>"$tmp/cs.$mode.first1m"
      stop
    done
  done
  for f in steady first4k worst4k first1m cpu_steady cpu_first4k; do
    for mode in write-ahead clean-stop; do
      eval "cs_${f}_${mode%%-*}=\$(median <\"\$tmp/cs.\$mode.\$f\")"
      echo "crashsafe $f ($mode): $(tr '\n' ' ' <"$tmp/cs.$mode.$f")-> median $(median <"$tmp/cs.$mode.$f")"
    done
  done
  cs_syncs=$(median <"$tmp/cs.write-ahead.syncs")
  cs_wps=$(median <"$tmp/cs.write-ahead.wps")
  ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
  cs_r_steady=$(ratio "$cs_steady_write" "$cs_steady_clean")
  cs_r_first4k=$(ratio "$cs_first4k_write" "$cs_first4k_clean")
  cs_r_first1m=$(ratio "$cs_first1m_write" "$cs_first1m_clean")
  cs_r_worst4k=$(ratio "$cs_worst4k_write" "$cs_worst4k_clean")

  # Incremental after kill -9 mid-workload: 2000 random writes, a kill
  # right after the last one is acknowledged (nbdkit never saves), a
  # restart; the delta view's data bytes against the granules touched,
  # and against the same workload with no crash.
  incr_bytes ()
  {
    rm -f "$tmp/wa.bm"
    start --filter="$SA" --filter="$CBW" --filter="$DB" file "$wa_disk" \
      bitmap-file="$tmp/wa.bm" control="$ctl"
    ctlcmd "checkpoint-create c1"
    touched=$($py - "$sock" <<'PYEOF'
import random, sys, nbd
h = nbd.NBD()
h.connect_unix(sys.argv[1])
g, rnd, touched = 65536, random.Random(3), set()
for _ in range(2000):
    length = rnd.choice([512, 4096, 65536, 200000])
    off = rnd.randrange(0, h.get_size() - length)
    h.pwrite(rnd.randbytes(length), off)
    touched.update(range(off // g, (off + length - 1) // g + 1))
h.shutdown()
print(len(touched) * g)
PYEOF
)
    if [ "$1" != nocrash ]; then
      kill -9 "$server_pid"
      sleep 0.5
      # reboot: restarted as after a power loss (another boot id, a
      # test-only override), so whole regions count as changed.
      if [ "$1" = reboot ]; then
        FLEECE_TEST_BOOT_ID=00000000-0000-4000-8000-00000000b007 \
          start --filter="$SA" --filter="$CBW" --filter="$DB" file \
          "$wa_disk" bitmap-file="$tmp/wa.bm" control="$ctl"
      else
        start --filter="$SA" --filter="$CBW" --filter="$DB" file "$wa_disk" \
          bitmap-file="$tmp/wa.bm" control="$ctl"
      fi
    fi
    ctlcmd "snapshot-begin checkpoint=c2"
    read_b=$(nbdinfo --map "nbd+unix:///snapshot/since/c1?socket=$sock" |
      awk '$3 == 0 { n += $2 } END { printf "%.0f\n", n }')
    ctlcmd snapshot-end
    stop
    echo "$touched $read_b"
  }
  read -r cs_touched cs_nocrash < <(incr_bytes nocrash)
  read -r _ cs_crash < <(incr_bytes crash)
  read -r _ cs_reboot < <(incr_bytes reboot)
  echo "crashsafe: incremental after kill -9 reads $cs_crash bytes, without a crash $cs_nocrash, granules touched x 64K $cs_touched; restarted as after a power loss $cs_reboot"
fi

verdict () { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v >= t : (op == "<") ? v < t : v == t; print ok ? "met" : "MISSED" }'; }
echo
echo "| measure | value | target | |"
echo "|---|---:|---:|---|"
if want overhead; then
echo "| tracking overhead, 4K random writes QD16, tracked / plain | $overhead_ratio | >= 0.98 | $(verdict "$overhead_ratio" 0.98 '>=') |"
fi
if want map; then
echo "| nbdinfo --map of the delta of a 1 TiB disk, ${percent}% changed in 1 MiB runs | $map_clustered ms | < 100 ms | $(verdict "$map_clustered" 100 '<') |"
echo "| the same, ${percent}% changed as single scattered granules (worst case) | $map_scattered ms | < 100 ms | $(verdict "$map_scattered" 100 '<') |"
fi
if want bytes; then
echo "| incremental bytes read / bytes changed | $bytes_ratio | 1.000 | $(verdict "$bytes_ratio" 1.000 '==') |"
fi
if want crashsafe; then
echo "| write-ahead / clean-stop, steady state, 4K random QD16 ($cs_steady_write / $cs_steady_clean IOPS) | $cs_r_steady | >= 0.98 | $(verdict "$cs_r_steady" 0.98 '>=') |"
echo "| write-ahead / clean-stop, first touch of every 64K granule, 4K random QD16 ($cs_first4k_write / $cs_first4k_clean IOPS) | $cs_r_first4k | >= 0.7 | $(verdict "$cs_r_first4k" 0.7 '>=') |"
echo "| the same, worst case: one 4K write per granule, every write a first touch ($cs_worst4k_write / $cs_worst4k_clean IOPS) | $cs_r_worst4k | stated | |"
echo "| write-ahead / clean-stop, first touch, 1 MiB sequential QD16 ($cs_first1m_write / $cs_first1m_clean MiB/s) | $cs_r_first1m | >= 0.9 | $(verdict "$cs_r_first1m" 0.9 '>=') |"
echo "| syncs per second during the 4K first-touch pass; writes of the pass per sync | $cs_syncs /s; $cs_wps | stated; > 1 | $(verdict "$cs_wps" 1 '>=') |"
echo "| nbdkit CPU per request, steady / first touch, write-ahead vs clean-stop (us) | $(awk -v a="$cs_cpu_steady_write" -v b="$cs_cpu_steady_clean" -v c="$cs_cpu_first4k_write" -v d="$cs_cpu_first4k_clean" 'BEGIN { printf "%.1f vs %.1f; %.1f vs %.1f", a / 10, b / 10, c / 10, d / 10 }') | stated | |"
echo "| incremental after kill -9: bytes read, crash / no crash (granules touched x 64K = $cs_touched) | $cs_crash / $cs_nocrash | equal | $(verdict "$cs_crash" "$cs_nocrash" '==') |"
echo "| incremental after a power loss (restart with another boot id): bytes read (the 4 MiB regions written) | $cs_reboot | stated | |"
echo "| the same with QEMU: persistent bitmap in qcow2 after kill -9 of qemu-storage-daemon | inconsistent (in_use flag left set) | | full backup needed |"
fi

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Several snapshots at once: what they cost a guest and memory.
#
#   firsttouch  fio (nbd engine), 4 KiB writes at queue depth 16, one in
#               every 64 KiB cluster (zonemode=strided), with 1, 2 and 4
#               named snapshots taken at one point (begun back to back
#               with no write between): every write is the first touch
#               of its cluster and copies it once for all of them
#               (checked: the target holds one copy per cluster, every
#               snapshot counts every cluster).  Rounds are interleaved
#               (each round runs 1, 2, 4 once, in a rotating order, each
#               on a fresh server), medians of BENCH_REPEAT rounds; the
#               latency percentiles and the server's CPU time per write
#               (user+system ticks from /proc/PID/stat) too.  Targets:
#               2 snapshots >= 0.9x one, 4 >= 0.8x one.
#   memory      a 1 TiB sparse disk (nbdkit's memory plugin) with one
#               checkpoint: 8 named snapshots begun one after another;
#               per snapshot, the growth of the server's resident
#               memory (VmRSS) and of its allocated memory (VmData, an
#               upper bound: what calloc reserved, touched or not), and
#               how long snapshot-begin takes (one control exchange,
#               timed in-process).  Target < 8 MiB per snapshot.
#   group       if fleecectl supports group-snapshot: the hold time of a
#               4-server group snapshot with writers running, median
#               and max of 20.  Target < 20 ms.
#
# Environment: BENCH_SIZE (1G), BENCH_REPEAT (5), BENCH_PARTS
# ("firsttouch memory group"), BENCH_QUICK=1 (a smoke run: 128M, one
# round; not numbers to publish), TMPDIR.
# Results: stdout and bench/results/snapshots.md.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$top/bench/lib.sh"

if [ -n "${BENCH_QUICK-}" ]; then
  : "${BENCH_SIZE:=128M}" "${BENCH_REPEAT:=1}"
fi
size=${BENCH_SIZE:-1G}
repeat=${BENCH_REPEAT:-5}
parts=${BENCH_PARTS:-firsttouch memory group}
want () { [[ " $parts " == *" $1 "* ]]; }

need_built "$SA" "$CBW" "$DB"
need nbdkit fio socat jq python3-nbd

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-snapshots.XXXXXX")
group_pids=()
cleanup ()
{
  local p
  stop_pid "$server_pid" || true
  for p in "${group_pids[@]+"${group_pids[@]}"}"; do stop_pid "$p" || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

sock=$tmp/nbd.sock
ctlsock=$tmp/ctl.sock
hz=$(getconf CLK_TCK)

# start ARGS...: nbdkit with ARGS and the control socket ($server_pid).
start ()
{
  rm -f "$sock" "$ctlsock"
  serve "$tmp/nbdkit.log" "$sock" "$ctlsock" -- \
    nbdkit -f -U "$sock" "$@" control="$ctlsock"
}
stop () { stop_pid "$server_pid" 30 || die "nbdkit exited with an error: $(tail -3 "$tmp/nbdkit.log")"; server_pid=; }
ok () { ctl_ok "$ctlsock" "$1" 30 >/dev/null; }
ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
median () { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
rec () { echo "$2" >>"$tmp/r.$1"; }
med () { median <"$tmp/r.$1"; }
all () { tr '\n' ' ' <"$tmp/r.$1"; }
verdict () { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v < t; print ok ? "met" : "MISSED" }'; }

echo "bench-snapshots.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
res=$here/results/snapshots.md
mkdir -p "$here/results"
: >"$tmp/report"; : >"$tmp/targets"

# ---- firsttouch -------------------------------------------------------
if want firsttouch; then
  disk=$tmp/disk.img
  echo "bench-snapshots.sh: a $size disk of random data in $tmp"
  head -c "$size" /dev/urandom >"$disk"
  bytes=$(stat -c %s "$disk")
  writes=$((bytes / 65536))
  counts=(1 2 4)
  for round in $(seq "$repeat"); do
    for k in 0 1 2; do
      n=${counts[$(( (k + round - 1) % 3 ))]}
      rm -f "$tmp/t.fleece"
      sync
      start --filter="$SA" --filter="$CBW" file "$disk" cbw-target="$tmp/t.fleece"
      for i in $(seq "$n"); do ok "snapshot-begin name=s$i"; done
      t0=$(ticks "$server_pid")
      out=$(fio --name=ft --ioengine=nbd --uri="nbd+unix:///?socket=$sock" \
              --rw=write --bs=4k --zonemode=strided --zonesize=4k \
              --zonerange=64k --iodepth=16 --size="$bytes" \
              --io_size=$((writes * 4096)) --output-format=json 2>/dev/null |
            sed -n '/^{/,$p')
      t1=$(ticks "$server_pid")
      ios=$(jq '.jobs[0].write.total_ios' <<<"$out")
      [ "$ios" = "$writes" ] || die "fio wrote $ios times, expected $writes"
      # Copy once: one copy per cluster in the target, and every
      # snapshot has every cluster.
      st=$(ctl_ok "$ctlsock" status)
      held=$(jq '.target.held_bytes' <<<"$st")
      [ "$held" = $((writes * 65536)) ] ||
        die "$n snapshots: the target holds $held bytes, expected $((writes * 65536)) (one copy per cluster)"
      jq -e --argjson w "$writes" '[.snapshots[] | .clusters_copied == $w and .broken == null] | all' \
        <<<"$st" >/dev/null ||
        die "$n snapshots: clusters_copied or broken wrong: $(jq -c '[.snapshots[] | {name, clusters_copied, broken}]' <<<"$st")"
      stop
      rec "ft.$n" "$(jq '.jobs[0].write.iops | floor' <<<"$out")"
      rec "ft.$n.p50" "$(jq '.jobs[0].write.clat_ns.percentile["50.000000"] / 1000 | floor' <<<"$out")"
      rec "ft.$n.p99" "$(jq '.jobs[0].write.clat_ns.percentile["99.000000"] / 1000 | floor' <<<"$out")"
      rec "ft.$n.cpu" "$(awk -v t=$((t1 - t0)) -v hz="$hz" -v w="$writes" 'BEGIN { printf "%.1f", t / hz * 1e6 / w }')"
      echo "round $round, $n snapshot(s): $(tail -1 "$tmp/r.ft.$n") IOPS, $(tail -1 "$tmp/r.ft.$n.cpu") us CPU per write"
    done
  done
  rm -f "$disk" "$tmp/t.fleece"
  m1=$(med ft.1)
  {
    echo "| first-touch 4K writes, QD16, $writes writes, one per 64K cluster | IOPS (median) | rounds | vs 1 snapshot | p50 / p99 latency (us) | server CPU us/write |"
    echo "|---|---:|---|---:|---:|---:|"
    for n in 1 2 4; do
      echo "| $n snapshot(s) at one point | $(med "ft.$n") | $(all "ft.$n")| $(awk -v a="$(med "ft.$n")" -v b="$m1" 'BEGIN { printf "%.2f", a / b }') | $(med "ft.$n.p50") / $(med "ft.$n.p99") | $(med "ft.$n.cpu") |"
    done
    echo
  } >>"$tmp/report"
  r2=$(awk -v a="$(med ft.2)" -v b="$m1" 'BEGIN { printf "%.2f", a / b }')
  r4=$(awk -v a="$(med ft.4)" -v b="$m1" 'BEGIN { printf "%.2f", a / b }')
  echo "| first-touch 4K writes, 2 snapshots at one point / 1 | $r2 | >= 0.9 | $(verdict "$r2" 0.9 '>=') |" >>"$tmp/targets"
  echo "| first-touch 4K writes, 4 snapshots at one point / 1 | $r4 | >= 0.8 | $(verdict "$r4" 0.8 '>=') |" >>"$tmp/targets"
fi

# ---- memory -----------------------------------------------------------
if want memory; then
  start --filter="$SA" --filter="$CBW" --filter="$DB" memory 1T
  ok "checkpoint-create c0"
  "$PY" - "$ctlsock" "$server_pid" "$top/tests" >"$tmp/mem" <<'PYEOF'
import sys, time
sys.path.insert(0, sys.argv[3])
from fleece_lib import Ctl
ctl, pid = Ctl(sys.argv[1]), sys.argv[2]
def mem():
    d = {}
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmData"):
                d[k] = int(v.split()[0])
    return d["VmRSS"], d["VmData"]
r0, d0 = mem()
for i in range(1, 9):
    t0 = time.monotonic()
    ctl.ok("snapshot-begin name=m%d" % i)
    t = time.monotonic() - t0
    r, d = mem()
    print(i, "%.2f" % (t * 1000), r - r0, d - d0)
PYEOF
  stop
  awk '{ print $2 }' "$tmp/mem" >"$tmp/r.begin"
  n=$(wc -l <"$tmp/mem")
  rss=$(awk -v n="$n" 'END { printf "%.2f", $3 / 1024 / n }' "$tmp/mem")
  vmd=$(awk -v n="$n" 'END { printf "%.2f", $4 / 1024 / n }' "$tmp/mem")
  first_rss=$(awk 'NR == 1 { printf "%.2f", $3 / 1024 }' "$tmp/mem")
  first_vmd=$(awk 'NR == 1 { printf "%.2f", $4 / 1024 }' "$tmp/mem")
  {
    echo "| 1 TiB sparse disk (memory plugin), 64K clusters, one checkpoint, $n named snapshots | measured |"
    echo "|---|---:|"
    echo "| resident memory (VmRSS) per snapshot, mean of $n (first one) | $rss MiB ($first_rss MiB) |"
    echo "| allocated memory (VmData) per snapshot, mean of $n (first one) | $vmd MiB ($first_vmd MiB) |"
    echo "| snapshot-begin, median / max of $n | $(med begin) / $(sort -g "$tmp/r.begin" | tail -1) ms |"
    echo
  } >>"$tmp/report"
  echo "memory: per snapshot (ms, KiB RSS, KiB VmData, cumulative): $(tr '\n' ';' <"$tmp/mem")"
  echo "| memory per snapshot of a 1 TiB sparse disk at 64K (allocated, VmData) | $vmd MiB | < 8 MiB | $(verdict "$vmd" 8 '<') |" >>"$tmp/targets"
fi

# ---- group ------------------------------------------------------------
fc=$top/fleecectl/fleecectl
if want group; then
  if [ -x "$fc" ] && "$fc" --help 2>&1 | grep -q group-snapshot; then
    ctls=()
    for i in 1 2 3 4; do
      truncate -s 64M "$tmp/g$i.img"
      rm -f "$tmp/g$i.sock" "$tmp/g$i.ctl"
      serve "$tmp/g$i.log" "$tmp/g$i.sock" "$tmp/g$i.ctl" -- \
        nbdkit -f -U "$tmp/g$i.sock" --filter="$SA" --filter="$CBW" \
        file "$tmp/g$i.img" control="$tmp/g$i.ctl"
      group_pids+=("$server_pid")
      server_pid=
      ctls+=("$tmp/g$i.ctl")
      "$PY" - "$tmp/g$i.sock" "$tmp/stop-writers" <<'PYEOF' &
import os, sys, nbd
h = nbd.NBD()
h.connect_unix(sys.argv[1])
i = 0
while not os.path.exists(sys.argv[2]):
    h.pwrite(os.urandom(4096), (i * 65536) % (64 << 20))
    i += 1
h.shutdown()
PYEOF
      group_pids+=($!)
    done
    holds=()
    for k in $(seq 20); do
      out=$("$fc" group-snapshot --json --name "g$k" "${ctls[@]}") ||
        die "fleecectl group-snapshot failed: $out"
      holds+=("$(jq '[.servers[].held_ms] | max' <<<"$out")")
      for cc in "${ctls[@]}"; do ctl_ok "$cc" "snapshot-end name=g$k" >/dev/null; done
    done
    touch "$tmp/stop-writers"
    hm=$(printf '%s\n' "${holds[@]}" | median)
    hx=$(printf '%s\n' "${holds[@]}" | sort -g | tail -1)
    {
      echo "| 4-server group snapshot, writers running | ms |"
      echo "|---|---:|"
      echo "| hold time, median of 20 | $hm |"
      echo "| hold time, max of 20 | $hx |"
      echo
    } >>"$tmp/report"
    echo "| 4-server group snapshot hold time, median and max of 20 | $hm / $hx ms | < 20 ms | $(verdict "$hx" 20 '<') |" >>"$tmp/targets"
  else
    echo "| 4-server group snapshot hold time | not measured: fleecectl has no group-snapshot in this tree | < 20 ms | skipped |" >>"$tmp/targets"
  fi
fi

{
  echo "# bench-snapshots.sh, $(date -u +%Y-%m-%dT%H:%MZ)${BENCH_QUICK:+ (BENCH_QUICK smoke run: not for publishing)}"
  echo
  echo "Machine: $(nproc) vCPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(nbdkit --version | head -1), $(fio --version); disk $size, 64K clusters, medians of $repeat interleaved rounds."
  echo
  cat "$tmp/report"
  echo "| target | measured | | |"
  echo "|---|---:|---:|---|"
  cat "$tmp/targets"
} >"$res"
echo
cat "$res"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Several snapshots at once: what they cost a guest and memory.
#
#   firsttouch  fio (nbd engine), 4 KiB writes at queue depth 16, one in
#               every 64 KiB cluster (zonemode=strided), with 1, 2 and 4
#               snapshots taken at one point (begun back to back with no
#               write between): every write is the first touch of its
#               cluster and copies it once for all of them.  Rounds are
#               interleaved (each round runs 1, 2, 4 once, on a fresh
#               server), medians of BENCH_REPEAT rounds; the server's CPU
#               time per write (user+system from /proc/PID/stat) too.
#   memory      RSS growth per snapshot of a 1 TiB sparse disk (nbdkit's
#               memory plugin) with one checkpoint, and how long
#               snapshot-begin takes.
#   group       if fleecectl is built and supports group-snapshot: the
#               hold time of a 4-server group snapshot with writers
#               running, median and max of 20.
#
# Environment: BENCH_SIZE (default 1G), BENCH_REPEAT (default 5), TMPDIR.
# Results: stdout and bench/results/snapshots.md.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
export PATH="/usr/bin:$PATH"
size=${BENCH_SIZE:-1G}
repeat=${BENCH_REPEAT:-5}
SA=$top/filters/snapshot-access/.libs/nbdkit-snapshot-access-filter.so
CBW=$top/filters/cbw/.libs/nbdkit-cbw-filter.so
DB=$top/filters/dirty-bitmap/.libs/nbdkit-dirty-bitmap-filter.so

for cmd in nbdkit fio socat jq /usr/bin/python3; do
  command -v "$cmd" >/dev/null || { echo "bench-snapshots.sh: $cmd missing" >&2; exit 1; }
done
[ -f "$CBW" ] || { echo "bench-snapshots.sh: build first (make)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-snapshots.XXXXXX")
pids=()
cleanup ()
{
  local p
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

ctl () { printf '%s\n' "$2" | socat -t 30 - "UNIX-CONNECT:$1"; }
ok () { local r; r=$(ctl "$1" "$2"); jq -e .ok >/dev/null <<<"$r" || { echo "control '$2': $r" >&2; exit 1; }; }

# start SOCK CTL ARGS...: an nbdkit in the background; prints its pid.
start ()
{
  local sock=$1 ctl=$2; shift 2
  rm -f "$sock" "$ctl" "$sock.pid"
  nbdkit -U "$sock" -P "$sock.pid" "$@" control="$ctl"
  for _ in $(seq 100); do [ -S "$ctl" ] && [ -s "$sock.pid" ] && break; sleep 0.05; done
  pids+=("$(cat "$sock.pid")")
  cat "$sock.pid"
}

stop () { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }

ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

median () { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

disk=$work/disk.img
echo "bench-snapshots.sh: a $size disk of random data in $work" >&2
head -c "$size" /dev/urandom > "$disk"
bytes=$(stat -c %s "$disk")
writes=$((bytes / 65536))

declare -A iops cpu
for round in $(seq "$repeat"); do
  for n in 1 2 4; do
    sock=$work/s.sock c=$work/c.sock
    pid=$(start "$sock" "$c" --filter="$SA" --filter="$CBW" file "$disk" \
            cbw-target="$work/t.fleece")
    for i in $(seq "$n"); do ok "$c" "snapshot-begin name=s$i"; done
    t0=$(ticks "$pid")
    v=$(fio --name=ft --ioengine=nbd --uri="nbd+unix:///?socket=$sock" \
          --rw=write --bs=4k --zonemode=strided --zonesize=4k \
          --zonerange=64k --iodepth=16 --size="$bytes" \
          --io_size=$((writes * 4096)) --output-format=json 2>/dev/null |
          sed -n '/^{/,$p' | jq '.jobs[0].write.iops')
    t1=$(ticks "$pid")
    iops[$n]+="$v "
    cpu[$n]+="$(awk -v t=$((t1 - t0)) -v w="$writes" 'BEGIN { printf "%.2f", t * 10000 / w }') "
    stop "$pid"
    rm -f "$work/t.fleece"
    echo "round $round, $n snapshot(s): $v IOPS" >&2
  done
done

res=$here/results/snapshots.md
mkdir -p "$here/results"
{
  echo "# bench-snapshots.sh, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) vCPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(nbdkit --version | head -1); disk $size, 64K clusters, medians of $repeat interleaved rounds."
  echo
  echo "| first-touch 4K writes, QD16 | IOPS | vs 1 snapshot | server CPU us/write |"
  echo "|---|---:|---:|---:|"
  m1=$(tr ' ' '\n' <<<"${iops[1]}" | grep . | median)
  for n in 1 2 4; do
    m=$(tr ' ' '\n' <<<"${iops[$n]}" | grep . | median)
    c=$(tr ' ' '\n' <<<"${cpu[$n]}" | grep . | median)
    printf '| %d snapshot(s) at one point | %.0f | %.2f | %s |\n' "$n" "$m" \
      "$(awk -v a="$m" -v b="$m1" 'BEGIN { print a / b }')" "$c"
  done
} > "$res"

# Memory per snapshot: a 1 TiB sparse disk, one checkpoint.
sock=$work/m.sock c=$work/mc.sock
pid=$(start "$sock" "$c" --filter="$SA" --filter="$CBW" --filter="$DB" memory 1T)
ok "$c" "checkpoint-create c0"
rss () { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
r0=$(rss "$pid")
t0=$(date +%s%N)
ok "$c" "snapshot-begin name=m1"
t1=$(date +%s%N)
r1=$(rss "$pid")
ok "$c" "snapshot-begin name=m2"
r2=$(rss "$pid")
stop "$pid"
{
  echo
  echo "| 1 TiB sparse disk, 64K clusters, one checkpoint | measured |"
  echo "|---|---:|"
  echo "| RSS growth, first snapshot | $(( (r1 - r0) / 1024 )) MiB |"
  echo "| RSS growth, second snapshot | $(( (r2 - r1) / 1024 )) MiB |"
  echo "| snapshot-begin (first) | $(( (t1 - t0) / 1000000 )) ms |"
} >> "$res"

# Group snapshot hold time, if fleecectl can do it.
fc=$top/fleecectl/fleecectl
if [ -x "$fc" ] && "$fc" --help 2>&1 | grep -q group-snapshot; then
  ctls=()
  for i in 1 2 3 4; do
    truncate -s 64M "$work/g$i.img"
    start "$work/g$i.sock" "$work/g$i.ctl" --filter="$SA" --filter="$CBW" \
      file "$work/g$i.img" >/dev/null
    ctls+=("$work/g$i.ctl")
    ( while :; do nbdsh -u "nbd+unix:///?socket=$work/g$i.sock" \
        -c 'import os
for i in range(200): h.pwrite(os.urandom(4096), (i * 65536) % (64 << 20))' \
        2>/dev/null || break; done ) &
    pids+=($!)
  done
  holds=()
  for k in $(seq 20); do
    out=$("$fc" group-snapshot --json --name "g$k" "${ctls[@]}")
    holds+=("$(jq '[.servers[].held_ms] | max' <<<"$out")")
    for cc in "${ctls[@]}"; do ok "$cc" "snapshot-end name=g$k"; done
  done
  {
    echo
    echo "| 4-server group snapshot, writers running | ms |"
    echo "|---|---:|"
    echo "| hold time, median of 20 | $(printf '%s\n' "${holds[@]}" | median) |"
    echo "| hold time, max of 20 | $(printf '%s\n' "${holds[@]}" | sort -g | tail -1) |"
  } >> "$res"
fi
cat "$res"

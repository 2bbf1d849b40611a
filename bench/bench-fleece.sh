#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Throughput of the fleecing stack, side by side in one run on one
# image, against the plain nbdkit file plugin and against QEMU's
# copy-before-write + snapshot-access in qemu-storage-daemon.
#
# Configurations (each server started fresh for every measurement
# round, logs without -v):
#   plain  nbdkit file DISK
#   idle   nbdkit --filter=snapshot-access --filter=cbw file DISK,
#          no snapshot active
#   snap   the same stack with a snapshot active (a fresh one for every
#          workload: snapshot-end, then snapshot-begin)
#   qsd    qemu-storage-daemon: raw disk, raw fleecing target,
#          copy-before-write (file=disk, target=fleece) and
#          snapshot-access over it, NBD exports of the cbw node
#          (writable) and of the snapshot-access node; restarted with
#          an empty target for every workload (= a fresh snapshot)
#
# Workloads:
#   seqwrite   fio (nbd engine), 1 MiB sequential writes over the whole
#              disk, queue depth 16
#   firsttouch fio (nbd engine), 4 KiB writes at queue depth 16, one in
#              every 64 KiB cluster of the disk, in a seeded random
#              order, so with a fresh snapshot every write is the first
#              touch of its cluster and triggers a copy.  fio 3.33
#              turns its random map off as soon as blockalign= is used,
#              so the permutation is generated here and replayed with
#              read_iolog.  A replayed log ends with fio setting
#              td->done, and td_io_getevents() then returns at once, so
#              the last iodepth-1 requests are never reaped: fio closes
#              the connection with them in flight (fio's stats show
#              io_bytes short of total_ios, and nbdkit 1.32 can abort
#              in raw_send_socket on the broken pipe).  thinktime with
#              thinktime_blocks=<number of writes> and
#              thinktime_blocks_type=issue makes fio quiesce (reap
#              everything) right after issuing the last write.
#   read       nbdcopy URI null:: the plain server's disk, the idle
#              stack's live export, the untouched snapshot (every
#              cluster still read from the live disk) of ours and QSD's
#   snapread-copied  nbdcopy of the snapshot right after firsttouch,
#              when every cluster has been copied to the target (after
#              sync, so the writeback of the copies does not compete)
#
# Latency: p50 and p99 completion latency of BENCH_LAT_WRITES
# (default 1000) first-touch 4 KiB writes (one per cluster, seeded
# random order) at QD1 and at QD16, in five configurations:
#   nosnap   the stack, no snapshot
#   snapfile the stack, snapshot to a local file target
#   slow     the stack, snapshot to an NBD target behind nbdkit's delay
#            filter (delay-write=5ms, memory plugin)
#   slowbuf  the same with cbw-buffer=256M (1000 copies of 64K fit, so
#            this is "until the buffer fills")
#   qsdslow  qemu-storage-daemon's copy-before-write to the same slow
#            NBD target
# Server CPU time: for every fio and nbdcopy run, user+system ticks of
# the server process (/proc/PID/stat) over the run, reported as CPU ms
# per 1000 requests (writes) or per GiB (reads); it moves far less than
# throughput on a shared machine.
# snapshot-begin on a 16 TiB disk (nbdkit memory plugin, temporary file
# target): the time of the control command and the server's resident
# memory before and after, median of BENCH_REPEAT.
#
# The disk is a sparse raw file pre-filled with data once (nbdkit's
# pattern plugin), so copies read real data; writes keep it allocated.
# Rounds are interleaved (each round runs every configuration once, in
# a rotating order) and every figure is the median of BENCH_REPEAT
# rounds (default 5).  Results: a table on stdout, in
# bench/results/latest.md, and a chart of every ratio against its
# target in bench/results/latest.png (gnuplot; gnuplot-nox is installed
# through tools/install-packages.sh when missing).
#
# Environment: BENCH_SIZE (disk size, default 1G, a multiple of 1M),
# BENCH_REPEAT (default 5), BENCH_LAT_WRITES (default 1000), TMPDIR
# (where the disk and targets live), BENCH_NO_QSD=1 to leave
# qemu-storage-daemon out, BENCH_NO_LATENCY=1 to skip the latency
# rounds, BENCH_OURS_DEBUG (below) for nbdkit debug flags of the stack.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
# sock_listening; Debian's tools (nbdcopy, python3 with libnbd) first.
# shellcheck source=lib.sh
. "$top/bench/lib.sh"

size_arg=${BENCH_SIZE:-1G}
repeat=${BENCH_REPEAT:-5}
lat_writes=${BENCH_LAT_WRITES:-1000}
cluster=65536
qd=16

die () { echo "bench-fleece.sh: $*" >&2; exit 1; }

# ---- prerequisites ---------------------------------------------------
"$top/tools/install-packages.sh" bench-fleece.sh gnuplot-nox ||
  echo "bench-fleece.sh: could not install gnuplot-nox; no chart" >&2
for cmd in nbdkit nbdcopy nbdinfo fio socat jq numfmt /usr/bin/python3; do
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is not installed (./check.sh installs it)"
done
if ! fio --enghelp=nbd >/dev/null 2>&1; then
  die "this fio ($(fio --version)) has no 'nbd' ioengine (fio --enghelp=nbd fails); install a fio built with libnbd (Debian 12's fio has it)"
fi
use_qsd=1
if [ "${BENCH_NO_QSD:-0}" = 1 ]; then
  use_qsd=0
elif ! command -v qemu-storage-daemon >/dev/null 2>&1; then
  echo "bench-fleece.sh: qemu-storage-daemon not found (Debian: qemu-system-common); QSD column left out" >&2
  use_qsd=0
fi

SA_SRC=$top/filters/snapshot-access/.libs/nbdkit-snapshot-access-filter.so
CBW_SRC=$top/filters/cbw/.libs/nbdkit-cbw-filter.so
for f in "$SA_SRC" "$CBW_SRC"; do
  [ -f "$f" ] || die "filter not built: $f is missing; build first (./check.sh, or autoreconf -fi && ./configure && make)"
done

size=$(numfmt --from=iec "$size_arg" 2>/dev/null) || die "BENCH_SIZE=$size_arg: not a size"
if [ "$size" -lt $((16 * 1024 * 1024)) ] || [ $((size % (1024 * 1024))) -ne 0 ]; then
  die "BENCH_SIZE=$size_arg: must be a multiple of 1M, at least 16M"
fi
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT=$repeat: must be a positive integer"

# ---- temporary directory, servers, cleanup ---------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-fleece.XXXXXX")
server_pid=

server_log=
# stop_server: stop the running server (SIGTERM) and reap it.  Fails if
# it had already died or does not exit cleanly (nbdkit and
# qemu-storage-daemon both exit 0 on SIGTERM).
stop_server ()
{
  [ -n "$server_pid" ] || return 0
  local pid=$server_pid rc=0
  server_pid=
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  if [ $rc -ne 0 ]; then
    echo "bench-fleece.sh: the server exited with status $rc (log: $server_log)" >&2
    return 1
  fi
}

slow_pid=
cleanup ()
{
  local rc=$?
  stop_server || rc=1
  if [ -n "$slow_pid" ]; then
    kill "$slow_pid" 2>/dev/null || true
    wait "$slow_pid" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ]; then
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2; tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies of the modules, so a rebuild in the tree during the
# run cannot swap them under a running server.
mkdir "$tmp/mod"
# They keep their names: the filters find each other's place in the
# stack by them.
cp "$SA_SRC" "$CBW_SRC" "$tmp/mod/"
SA=$tmp/mod/nbdkit-snapshot-access-filter.so
CBW=$tmp/mod/nbdkit-cbw-filter.so

disk=$tmp/disk.img
sock=$tmp/nbd.sock
ctlsock=$tmp/ctl.sock
slowsock=$tmp/slow.sock
fleece=$tmp/fleece.img
results=$tmp/results.tsv
: >"$results"

# wait_socket PID SOCK LOG: until SOCK accepts connections.
wait_socket ()
{
  local pid=$1 s=$2 log=$3
  for _ in $(seq 200); do
    if sock_listening "$s"; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "server exited during start-up"; }
    sleep 0.05
  done
  cat "$log" >&2
  die "server did not start within 10 s"
}

start_plain ()
{
  rm -f "$sock"
  nbdkit -f -U "$sock" file "$disk" >"$tmp/plain.log" 2>&1 &
  server_pid=$!
  server_log=$tmp/plain.log
  wait_socket "$server_pid" "$sock" "$server_log"
}

# BENCH_OURS_DEBUG="FLAG=V ...": -D FLAG=V for the stack's nbdkit, to
# compare a copy-path choice (cbw.turns=0, cbw.direct=0) in the same
# conditions.
ours_debug=()
for f in ${BENCH_OURS_DEBUG:-}; do ours_debug+=(-D "$f"); done

# start_ours [CBW-ARGS...]: the stack; cbw-target=FLEECE unless given.
start_ours ()
{
  local args=("$@")
  [ ${#args[@]} -gt 0 ] || args=(cbw-target="$fleece")
  rm -f "$sock" "$ctlsock" "$fleece" "$fleece.lock"
  nbdkit "${ours_debug[@]}" -f -U "$sock" --filter="$SA" --filter="$CBW" file "$disk" \
    control="$ctlsock" cbw-cluster-size=$cluster "${args[@]}" \
    >"$tmp/ours.log" 2>&1 &
  server_pid=$!
  server_log=$tmp/ours.log
  wait_socket "$server_pid" "$sock" "$server_log"
  wait_socket "$server_pid" "$ctlsock" "$server_log"
}

qsd_cmd=()
# start_qsd [slow]: with "slow", the fleecing target is the slow NBD
# target of the latency rounds.
start_qsd ()
{
  local target=("--blockdev" "driver=file,node-name=fleece-file,filename=$fleece")
  rm -f "$sock" "$fleece"
  truncate -s "$size" "$fleece"
  [ "${1:-}" != slow ] ||
    target=("--blockdev" "driver=nbd,node-name=fleece-file,server.type=unix,server.path=$slowsock")
  qsd_cmd=(qemu-storage-daemon
    --blockdev "driver=file,node-name=disk-file,filename=$disk"
    --blockdev "driver=raw,node-name=disk,file=disk-file"
    "${target[@]}"
    --blockdev "driver=raw,node-name=fleece,file=fleece-file"
    --blockdev "driver=copy-before-write,node-name=cbw,file=disk,target=fleece"
    --blockdev "driver=snapshot-access,node-name=snap,file=cbw"
    --nbd-server "addr.type=unix,addr.path=$sock"
    --export "type=nbd,id=live,node-name=cbw,name=live,writable=on"
    --export "type=nbd,id=snapshot,node-name=snap,name=snapshot")
  "${qsd_cmd[@]}" >"$tmp/qsd.log" 2>&1 &
  server_pid=$!
  server_log=$tmp/qsd.log
  wait_socket "$server_pid" "$sock" "$server_log"
}

ctl ()
{
  local reply
  reply=$(printf '%s\n' "$1" | socat -t 10 - "UNIX-CONNECT:$ctlsock") ||
    die "control '$1': socat failed"
  jq -e '.ok == true' >/dev/null <<<"$reply" || die "control '$1' failed: $reply"
  printf '%s\n' "$reply"
}

fresh_snapshot ()
{
  local active
  active=$(ctl status | jq -r '.snapshot.active')
  [ "$active" != true ] || ctl snapshot-end >/dev/null
  ctl snapshot-begin >/dev/null
}

live_uri ()
{
  case $1 in
    qsd) echo "nbd+unix:///live?socket=$sock" ;;
    *) echo "nbd+unix:///?socket=$sock" ;;
  esac
}
snap_uri () { echo "nbd+unix:///snapshot?socket=$sock"; }

# record WORKLOAD CONFIG VALUE
record () { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$round" "$3" >>"$results"; }

# Server CPU time (user+system) in clock ticks.
clk_tck=$(getconf CLK_TCK)
cpu_ticks () { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
# record_cpu WORKLOAD CONFIG TICKS PER: CPU ms per PER units.
record_cpu ()
{
  record "cpu-$1" "$2" "$(awk -v t="$3" -v hz="$clk_tck" -v per="$4" \
    'BEGIN { printf "%.2f", t * 1000 / hz * per }')"
}

# fio_run WORKLOAD CONFIG URI FIO-ARGS...: run one fio job, record
# MB/s (seqwrite) or IOPS (firsttouch).
fio_run ()
{
  local w=$1 c=$2 uri=$3; shift 3
  local out=$tmp/fio-$w-$c.json t0
  sync
  t0=$(cpu_ticks)
  fio --name=t --ioengine=nbd --uri="$uri" --iodepth=$qd \
    --output-format=json --output="$out" "$@" >>"$tmp/fio.log" 2>&1 ||
    die "fio $w on $c failed (see $tmp/fio.log)"
  record_cpu "$w" "$c" $(($(cpu_ticks) - t0)) \
    "$(jq '1000 / .jobs[0].write.total_ios' "$out")"
  local err
  err=$(jq '.jobs[0].error' "$out")
  [ "$err" = 0 ] || die "fio $w on $c: job error $err"
  # Every request must have completed (see firsttouch above).
  local want written
  case $w in
    seqwrite) want=$size ;;
    firsttouch) want=$((nwrites * 4096)) ;;
  esac
  written=$(jq '.jobs[0].write.io_bytes' "$out")
  [ "$written" = "$want" ] || die "fio $w on $c: $written bytes written, expected $want"
  case $w in
    seqwrite) record "$w" "$c" "$(jq '.jobs[0].write.bw_bytes / 1000000' "$out")" ;;
    firsttouch) record "$w" "$c" "$(jq '.jobs[0].write.iops' "$out")" ;;
  esac
}

# copy_run WORKLOAD CONFIG URI: nbdcopy URI null:, record MB/s.
copy_run ()
{
  local w=$1 c=$2 uri=$3 t0 t1 c0
  sync
  c0=$(cpu_ticks)
  t0=$(date +%s.%N)
  nbdcopy "$uri" null: 2>>"$tmp/nbdcopy.log" || die "nbdcopy $uri null: failed ($w on $c)"
  t1=$(date +%s.%N)
  record "$w" "$c" "$(echo "$size $t0 $t1" | awk '{ printf "%.1f", $1 / ($3 - $2) / 1e6 }')"
  record_cpu "$w" "$c" $(($(cpu_ticks) - c0)) "$(awk -v s="$size" 'BEGIN { print 1073741824 / s }')"
}

seq_args=(--rw=write --bs=1M)
nwrites=$((size / cluster))
ft_args=(--read_iolog="$tmp/firsttouch.iolog" --thinktime=1
         "--thinktime_blocks=$nwrites" --thinktime_blocks_type=issue)

# The rounds of one configuration.
run_plain ()
{
  start_plain
  fio_run seqwrite plain "$(live_uri plain)" "${seq_args[@]}"
  fio_run firsttouch plain "$(live_uri plain)" "${ft_args[@]}"
  copy_run read plain "$(live_uri plain)"
  stop_server || die "server failed"
}

run_idle ()
{
  start_ours
  fio_run seqwrite idle "$(live_uri idle)" "${seq_args[@]}"
  fio_run firsttouch idle "$(live_uri idle)" "${ft_args[@]}"
  copy_run read idle "$(live_uri idle)"
  local copied
  copied=$(ctl status | jq '.snapshot.clusters_copied')
  [ "$copied" = 0 ] || die "idle stack copied $copied clusters without a snapshot"
  stop_server || die "server failed"
}

# check_copied WHAT N: the snapshot status says N clusters were copied.
check_copied ()
{
  local st copied broken
  st=$(ctl status)
  copied=$(jq '.snapshot.clusters_copied' <<<"$st")
  broken=$(jq -r '.snapshot.broken' <<<"$st")
  [ "$broken" = null ] || die "$1: snapshot broken: $broken"
  [ "$copied" = "$2" ] || echo "bench-fleece.sh: note: $1: clusters_copied=$copied, expected $2" >&2
}

run_snap ()
{
  local nclusters=$((size / cluster))
  start_ours
  fresh_snapshot
  fio_run seqwrite snap "$(live_uri snap)" "${seq_args[@]}"
  check_copied seqwrite $nclusters
  fresh_snapshot
  fio_run firsttouch snap "$(live_uri snap)" "${ft_args[@]}"
  check_copied firsttouch $nclusters
  sync                          # read without the copy pass's writeback
  copy_run snapread-copied snap "$(snap_uri)"
  fresh_snapshot
  copy_run read snap "$(snap_uri)"
  check_copied read 0
  ctl snapshot-end >/dev/null
  stop_server || die "server failed"
}

# check_qsd_copied WHAT: QEMU's copy-before-write really copied (nearly)
# the whole disk to the fleecing target, so QSD did the same work.
check_qsd_copied ()
{
  local used
  used=$(du -B1 "$fleece" | awk '{print $1}')
  [ "$used" -ge $((size * 9 / 10)) ] ||
    echo "bench-fleece.sh: note: $1 on qsd: only $used bytes in the fleecing target" >&2
}

run_qsd ()
{
  start_qsd
  fio_run seqwrite qsd "$(live_uri qsd)" "${seq_args[@]}"
  check_qsd_copied seqwrite
  stop_server || die "server failed"
  start_qsd
  fio_run firsttouch qsd "$(live_uri qsd)" "${ft_args[@]}"
  check_qsd_copied firsttouch
  sync
  copy_run snapread-copied qsd "$(snap_uri)"
  stop_server || die "server failed"
  start_qsd
  copy_run read qsd "$(snap_uri)"
  stop_server || die "server failed"
}

# ---- the run ---------------------------------------------------------
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
machine="$(nproc) CPUs, ${cpu:-unknown CPU}, $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
versions="nbdkit $(nbdkit --version | awk '{print $2}'), $(nbdcopy --version | head -1), $(fio --version)"
[ $use_qsd = 0 ] || versions="$versions, $(qemu-storage-daemon --version | head -1)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "date:    $started"
echo "machine: $machine"
echo "tools:   $versions"
echo "load:    $load_start (1/5/15 min load average at the start)"
echo "disk:    $size bytes ($size_arg) in $tmp, cluster $cluster, queue depth $qd, repeat $repeat"
echo

# The disk: sparse, then filled with a recognisable non-zero pattern.
truncate -s "$size" "$disk"
nbdcopy -- [ nbdkit -r pattern size="$size" ] "$disk" ||
  die "pre-filling the disk with nbdkit's pattern plugin failed"

# One write in every cluster, in a seeded random order (fio iolog v2).
/usr/bin/python3 - "$size" "$cluster" >"$tmp/firsttouch.iolog" <<'EOF'
import random, sys
size, cluster = int(sys.argv[1]), int(sys.argv[2])
offs = list(range(0, size, cluster))
random.Random(20261122).shuffle(offs)
out = ["fio version 2 iolog", "t.0.0 add", "t.0.0 open"]
out += ["t.0.0 write %d 4096" % o for o in offs]
print("\n".join(out))
EOF

# Warm-up, not recorded: one write pass and one read through the plain
# server, so the first measured configuration does not pay for the
# page cache and file system state the pre-fill left behind.
echo "warm-up"
round=0
start_plain
fio_run seqwrite warmup "$(live_uri plain)" "${seq_args[@]}"
copy_run read warmup "$(live_uri plain)"
stop_server || die "server failed"
: >"$results"

configs=(plain idle snap)
[ $use_qsd = 0 ] || configs+=(qsd)
t_start=$SECONDS
for round in $(seq "$repeat"); do
  # Rotate the order from round to round so slow drift of the shared
  # machine does not always hit the same configuration.
  n=${#configs[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${configs[$(((i + round - 1) % n))]}
    echo "round $round/$repeat: $c"
    "run_$c"
  done
done
echo "measured in $((SECONDS - t_start)) s"
echo

# ---- latency ---------------------------------------------------------
# lat_run CONFIG QD: BENCH_LAT_WRITES first-touch 4K writes at queue
# depth QD on the live export; record p50 and p99 completion latency
# in microseconds.
lat_run ()
{
  local c=$1 q=$2 out=$tmp/lat-$1-$2.json t0 uri
  uri=$(live_uri "$c")
  [ "$c" != qsdslow ] || uri=$(live_uri qsd)
  sync
  t0=$(cpu_ticks)
  fio --name=t --ioengine=nbd --uri="$uri" --iodepth="$q" \
    --output-format=json --output="$out" \
    --read_iolog="$tmp/lat.iolog" --thinktime=1 \
    "--thinktime_blocks=$lat_writes" --thinktime_blocks_type=issue \
    >>"$tmp/fio.log" 2>&1 || die "fio latency QD$q on $c failed (see $tmp/fio.log)"
  [ "$(jq '.jobs[0].write.total_ios' "$out")" = "$lat_writes" ] ||
    die "fio latency QD$q on $c: not every write completed"
  record "lat-qd$q-p50" "$c" "$(jq '.jobs[0].write.clat_ns.percentile["50.000000"] / 1000' "$out")"
  record "lat-qd$q-p99" "$c" "$(jq '.jobs[0].write.clat_ns.percentile["99.000000"] / 1000' "$out")"
  record_cpu "lat-qd$q" "$c" $(($(cpu_ticks) - t0)) "$(awk -v n="$lat_writes" 'BEGIN { print 1000 / n }')"
}

# wait_resident: until cbw-buffer's memory is resident (a thread
# populates it after start-up, ~0.3 s for 256 MiB here; a server in
# use has long finished), at most 10 s.
wait_resident ()
{
  local b
  for _ in $(seq 100); do
    b=$(ctl status | jq -c '.buffer')
    jq -e '.resident_bytes >= .size' >/dev/null <<<"$b" && return 0
    sleep 0.1
  done
  echo "bench-fleece.sh: cbw-buffer not resident after 10 s: $b" >&2
}

lat_ours ()
{
  local c=$1; shift
  start_ours "$@"
  [ "$c" != slowbuf ] || wait_resident
  for q in 1 16; do
    [ "$c" = nosnap ] || fresh_snapshot
    lat_run "$c" $q
  done
  [ "$c" = nosnap ] || ctl snapshot-end >/dev/null
  stop_server || die "server failed"
}
lat_nosnap () { lat_ours nosnap; }
lat_snapfile () { lat_ours snapfile; }
lat_slow () { lat_ours slow cbw-target="nbd+unix:///?socket=$slowsock"; }
lat_slowbuf () {
  lat_ours slowbuf cbw-target="nbd+unix:///?socket=$slowsock" cbw-buffer=256M
}
lat_qsdslow ()
{
  for q in 1 16; do
    start_qsd slow
    lat_run qsdslow $q
    stop_server || die "server failed"
  done
}

if [ "${BENCH_NO_LATENCY:-0}" != 1 ]; then
  # The first BENCH_LAT_WRITES clusters of another seeded order.
  /usr/bin/python3 - "$size" "$cluster" "$lat_writes" >"$tmp/lat.iolog" <<'EOF2'
import random, sys
size, cluster, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
offs = list(range(0, size, cluster))
random.Random(13).shuffle(offs)
out = ["fio version 2 iolog", "t.0.0 add", "t.0.0 open"]
out += ["t.0.0 write %d 4096" % o for o in offs[:n]]
print("\n".join(out))
EOF2
  rm -f "$slowsock"
  nbdkit -f -U "$slowsock" --filter=delay memory "$size" delay-write=5ms \
    >"$tmp/slow.log" 2>&1 &
  slow_pid=$!
  wait_socket "$slow_pid" "$slowsock" "$tmp/slow.log"
  lconfigs=(nosnap snapfile slow slowbuf)
  [ $use_qsd = 0 ] || lconfigs+=(qsdslow)
  t_start=$SECONDS
  for round in $(seq "$repeat"); do
    n=${#lconfigs[@]}
    for i in $(seq 0 $((n - 1))); do
      c=${lconfigs[$(((i + round - 1) % n))]}
      echo "latency round $round/$repeat: $c"
      "lat_$c"
    done
  done
  kill "$slow_pid"; wait "$slow_pid" 2>/dev/null || true; slow_pid=
  echo "latency measured in $((SECONDS - t_start)) s"
  echo
fi

# ---- snapshot-begin on a 16 TiB disk ---------------------------------
rss_kib () { awk '/^VmRSS/ { print $2 }' "/proc/$server_pid/status"; }
rm -f "$sock" "$ctlsock"
TMPDIR=$tmp nbdkit -f -U "$sock" --filter="$SA" --filter="$CBW" memory 16T \
  control="$ctlsock" >"$tmp/big.log" 2>&1 &
server_pid=$!
server_log=$tmp/big.log
wait_socket "$server_pid" "$sock" "$server_log"
wait_socket "$server_pid" "$ctlsock" "$server_log"
rss0=$(rss_kib)
# The time from sending the line to the reply, measured in one Python
# process (socat's and jq's start-up would count otherwise).
ctl_ms ()
{
  /usr/bin/python3 - "$ctlsock" "$1" <<'EOF2'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
t = time.monotonic()
s.sendall((sys.argv[2] + "\n").encode())
b = b""
while not b.endswith(b"\n"):
    d = s.recv(65536)
    if not d:
        break
    b += d
t = time.monotonic() - t
if not json.loads(b).get("ok"):
    sys.exit("%s failed: %s" % (sys.argv[2], b))
print("%.1f" % (t * 1000))
EOF2
}
for round in $(seq "$repeat"); do
  ms=$(ctl_ms snapshot-begin) || die "snapshot-begin on the 16 TiB disk failed"
  record begin16t stack "$ms"
  record begin16t-rss stack "$(awk -v a="$rss0" -v b="$(rss_kib)" 'BEGIN { printf "%.1f", (b - a) / 1024 }')"
  ctl snapshot-end >/dev/null
done
stop_server || die "server failed"

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average at the end: $load_end"
mkdir -p "$here/results"
qsd_line=
if [ $use_qsd = 1 ]; then
  # One argument per line; $TMP stands for the run's directory.
  qsd_line=$(printf '%s\n' "${qsd_cmd[@]}" | sed "s|$tmp|\$TMP|g")
fi
/usr/bin/python3 "$here/bench-report.py" \
  --results "$results" --date "$started" --machine "$machine" \
  --versions "$versions" --size "$size" --repeat "$repeat" \
  --load "$load_start -> $load_end" \
  --qsd-cmd "$qsd_line" --markdown "$here/results/latest.md" \
  --chart "$here/results/latest.png" --lat-writes "$lat_writes"
echo
echo "written: $here/results/latest.md, $here/results/latest.png"

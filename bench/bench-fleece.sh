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
# The disk is a sparse raw file pre-filled with data once (nbdkit's
# pattern plugin), so copies read real data; writes keep it allocated.
# Every measurement is repeated BENCH_REPEAT times (default 3) and the
# median is reported.  Results: a table on stdout and in
# bench/results/latest.md.
#
# Environment: BENCH_SIZE (disk size, default 1G, a multiple of 1M),
# BENCH_REPEAT (default 3), TMPDIR (where the disk and targets live),
# BENCH_NO_QSD=1 to leave qemu-storage-daemon out.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
# Debian's tools (nbdcopy, python3 with libnbd) first.
. "$top/bench/lib.sh"

size_arg=${BENCH_SIZE:-1G}
repeat=${BENCH_REPEAT:-3}
cluster=65536
qd=16

# ---- prerequisites ---------------------------------------------------
need nbdkit nbdcopy nbdinfo fio socat jq numfmt
if ! fio --enghelp=nbd >/dev/null 2>&1; then
  die "this fio ($(fio --version)) has no 'nbd' ioengine (fio --enghelp=nbd fails); install a fio built with libnbd (Debian 12's fio has it)"
fi
use_qsd=1
if [ "${BENCH_NO_QSD:-0}" = 1 ]; then
  use_qsd=0
elif ! probe_tool qemu-storage-daemon; then
  echo "bench-fleece.sh: $probe_reason (Debian: qemu-system-common); QSD column left out" >&2
  use_qsd=0
fi

need_built "$SA" "$CBW"
SA_SRC=$SA
CBW_SRC=$CBW

size=$(numfmt --from=iec "$size_arg" 2>/dev/null) || die "BENCH_SIZE=$size_arg: not a size"
if [ "$size" -lt $((16 * 1024 * 1024)) ] || [ $((size % (1024 * 1024))) -ne 0 ]; then
  die "BENCH_SIZE=$size_arg: must be a multiple of 1M, at least 16M"
fi
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT=$repeat: must be a positive integer"

# ---- temporary directory, servers, cleanup ---------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-fleece.XXXXXX")
server_log=
# stop_server: stop the running server (SIGTERM) and reap it.  Fails if
# it had already died or does not exit cleanly (nbdkit and
# qemu-storage-daemon both exit 0 on SIGTERM).
stop_server ()
{
  [ -n "$server_pid" ] || return 0
  local pid=$server_pid rc=0
  server_pid=
  stop_pid "$pid" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "bench-fleece.sh: the server exited with status $rc (log: $server_log)" >&2
    return 1
  fi
}

cleanup ()
{
  local rc=$?
  stop_server || rc=1
  [ $rc -eq 0 ] || show_logs "$tmp" 20
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies of the modules, so a rebuild in the tree during the
# run cannot swap them under a running server.
# They keep their names: the filters find their place in the stack by
# them (nbdkit-NAME-filter.so).
mkdir "$tmp/mod"
cp "$SA_SRC" "$CBW_SRC" "$tmp/mod/"
SA=$tmp/mod/$(basename "$SA_SRC")
CBW=$tmp/mod/$(basename "$CBW_SRC")

disk=$tmp/disk.img
sock=$tmp/nbd.sock
ctlsock=$tmp/ctl.sock
fleece=$tmp/fleece.img
results=$tmp/results.tsv
: >"$results"

start_plain ()
{
  rm -f "$sock"
  server_log=$tmp/plain.log
  serve "$server_log" "$sock" -- nbdkit -f -U "$sock" file "$disk"
}

start_ours ()
{
  rm -f "$sock" "$ctlsock" "$fleece"
  server_log=$tmp/ours.log
  serve "$server_log" "$sock" "$ctlsock" -- \
    nbdkit -f -U "$sock" --filter="$SA" --filter="$CBW" file "$disk" \
    control="$ctlsock" cbw-target="$fleece" cbw-cluster-size=$cluster
}

qsd_cmd=()
start_qsd ()
{
  rm -f "$sock" "$fleece"
  truncate -s "$size" "$fleece"
  qsd_cmd=(qemu-storage-daemon
    --blockdev "driver=file,node-name=disk-file,filename=$disk"
    --blockdev "driver=raw,node-name=disk,file=disk-file"
    --blockdev "driver=file,node-name=fleece-file,filename=$fleece"
    --blockdev "driver=raw,node-name=fleece,file=fleece-file"
    --blockdev "driver=copy-before-write,node-name=cbw,file=disk,target=fleece"
    --blockdev "driver=snapshot-access,node-name=snap,file=cbw"
    --nbd-server "addr.type=unix,addr.path=$sock"
    --export "type=nbd,id=live,node-name=cbw,name=live,writable=on"
    --export "type=nbd,id=snapshot,node-name=snap,name=snapshot")
  server_log=$tmp/qsd.log
  serve "$server_log" "$sock" -- "${qsd_cmd[@]}"
}

ctl () { ctl_ok "$ctlsock" "$1"; }

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

# fio_run WORKLOAD CONFIG URI FIO-ARGS...: run one fio job, record
# MB/s (seqwrite) or IOPS (firsttouch).
fio_run ()
{
  local w=$1 c=$2 uri=$3; shift 3
  local out=$tmp/fio-$w-$c.json
  sync
  fio --name=t --ioengine=nbd --uri="$uri" --iodepth=$qd \
    --output-format=json --output="$out" "$@" >>"$tmp/fio.log" 2>&1 ||
    die "fio $w on $c failed (see $tmp/fio.log)"
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
  local w=$1 c=$2 uri=$3 t0 t1
  sync
  t0=$(date +%s.%N)
  nbdcopy "$uri" null: 2>>"$tmp/nbdcopy.log" || die "nbdcopy $uri null: failed ($w on $c)"
  t1=$(date +%s.%N)
  record "$w" "$c" "$(echo "$size $t0 $t1" | awk '{ printf "%.1f", $1 / ($3 - $2) / 1e6 }')"
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
"$PY" - "$size" "$cluster" >"$tmp/firsttouch.iolog" <<'EOF'
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

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average at the end: $load_end"
mkdir -p "$here/results"
qsd_line=
if [ $use_qsd = 1 ]; then
  # One argument per line; $TMP stands for the run's directory.
  qsd_line=$(printf '%s\n' "${qsd_cmd[@]}" | sed "s|$tmp|\$TMP|g")
fi
"$PY" "$here/bench-report.py" \
  --results "$results" --date "$started" --machine "$machine" \
  --versions "$versions" --size "$size" --repeat "$repeat" \
  --load "$load_start -> $load_end" \
  --qsd-cmd "$qsd_line" --markdown "$here/results/latest.md"
echo
echo "written: $here/results/latest.md"

#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The stream filter (live restore) against QEMU's block-stream run by
# qemu-storage-daemon, in one run.  One base, a sparse 1 GiB file with
# 30% holes (70% of its 1 MiB chunks, picked by a seeded RNG, hold
# random data), served read-only by one nbdkit file plugin on a Unix
# socket to both sides for the whole run.  Ours: nbdkit --filter=stream
# file on an empty sparse raw image.  QEMU: a qcow2 overlay (64K
# clusters) whose backing is the same base through an nbd node.  Local
# images on the same filesystem as the base (TMPDIR).  Rounds
# interleaved (the order of the two sides alternates), medians.
#
#   populate  the whole disk populated at unlimited speed.  Ours: the
#             server starts with stream-speed=1 (the job takes one
#             cluster and waits), the clock starts at
#             "stream-set-speed speed=0" and stops when status says
#             "complete", which the filter reaches only after the disk
#             was flushed and the state file synced: durable.  QEMU:
#             from block-stream (no speed) to BLOCK_JOB_COMPLETED, then
#             an fsync of the overlay, so both end durable (the time to
#             the event is shown too).  Rate = disk size / time.  Both
#             results are compared with the base in the first round.
#             Target: ours >= 1.2x QEMU.
#   read      first touch: 4K reads, then 4K writes, each in a
#             different cluster not yet populated (random clusters of
#             the upper half of the disk, a random 4K inside each),
#             while the job runs at 10 MiB/s in the lower half: QD1 and
#             QD16, BENCH_READS (1500) requests each, libnbd in Python
#             (the same client for both).  Ours serves a read by
#             copy-on-read, a write by filling the cluster from the
#             base and making it durable before the reply; QEMU reads
#             through the copy-on-read node block-stream puts above the
#             overlay (the export's node), so both copy the cluster
#             into the local image, and a write copies the cluster's
#             rest from the base into a new qcow2 cluster (no flush).
#             Latency p50/p99, server CPU per request.
#   write     fio (nbd engine) 4K random writes, QD16, BENCH_SECONDS
#             (5), in the upper half: during streaming (a fresh image,
#             the job at 10 MiB/s in the lower half, so nearly every
#             write lands in a cluster not yet populated) and after
#             completion (the image the populate part completed, served
#             without a base; QEMU: the overlay with no backing).
#             Target: during >= 0.8x after, ours; the same ratio shown
#             for QEMU.  Server CPU per write.
#
# The read and write parts run ours twice: "ours" with the default
# stream-sync=write (a first write to a cluster is durable before its
# reply) and "flush" with stream-sync=flush (durable at the guest's
# next flush, as QEMU's overlay allocation is).
#
# Environment: BENCH_REPEAT (5), BENCH_SECONDS (5), BENCH_SIZE (1G),
# BENCH_READS (2000), BENCH_PARTS ("populate read write"), BENCH_QUICK=1
# (256M, one round, 2 s: a smoke run, not numbers to publish), TMPDIR
# (needs ~3x BENCH_SIZE free).  Results: stdout and
# bench/results/stream.md.  Run it alone on the machine (other
# benchmarks under the same flock).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$top/bench/lib.sh"

if [ -n "${BENCH_QUICK-}" ]; then
  : "${BENCH_SIZE:=256M}" "${BENCH_REPEAT:=1}" "${BENCH_SECONDS:=2}" "${BENCH_READS:=250}"
fi
size_arg=${BENCH_SIZE:-1G}
repeat=${BENCH_REPEAT:-5}
seconds=${BENCH_SECONDS:-5}
nreads=${BENCH_READS:-1500}
parts=${BENCH_PARTS:-populate read write}
want () { [[ " $parts " == *" $1 "* ]]; }

STREAM=$top/filters/stream/.libs/nbdkit-stream-filter.so
need_built "$STREAM"
need nbdkit fio socat jq python3-nbd qemu-storage-daemon qemu-img

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-stream.XXXXXX")
base_pid=
cleanup ()
{
  stop_pid "$server_pid" || true
  stop_pid "$base_pid" || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

bsock=$tmp/base.sock
sock=$tmp/nbd.sock
ctlsock=$tmp/ctl.sock
qmp=$tmp/qmp.sock
base=$tmp/base.img
res=$here/results/stream.md
mkdir -p "$here/results"
base_uri="nbd+unix:///?socket=$bsock"

# ---- the Python half ----------------------------------------------------
cat >"$tmp/bs.py" <<'PYEOF'
import json, os, random, sys, time
sys.path.insert(0, os.environ["FLEECE_TESTS"])
from fleece_lib import Ctl, Qmp, chunky_disk, close, connect_uri, cpu_ticks
import nbd

CL = 65536

ticks = cpu_ticks

mkdisk = chunky_disk

def out(**kw):
    print(json.dumps(kw))

def ours_pop(ctlpath, pid, bpid):
    ctl = Ctl(ctlpath)
    c0, b0 = ticks(pid), ticks(bpid)
    t0 = time.monotonic()
    ctl.ok("stream-set-speed speed=0")
    while True:
        st = ctl.ok("status")["stream"]
        if st["state"] == "complete":
            break
        time.sleep(0.005)
    t = time.monotonic() - t0
    out(t=round(t, 4), cpu=ticks(pid) - c0, bcpu=ticks(bpid) - b0)

def qsd_pop(qmppath, pid, bpid, overlay):
    q = Qmp(qmppath)
    c0, b0 = ticks(pid), ticks(bpid)
    t0 = time.monotonic()
    q.cmd("block-stream", **{"job-id": "s0", "device": "ovl"})
    e = q.event("BLOCK_JOB_COMPLETED")
    te = time.monotonic() - t0
    c1, b1 = ticks(pid), ticks(bpid)
    d = e["data"]
    if "error" in d or d["offset"] != d["len"]:
        raise SystemExit("block-stream: %r" % d)
    fd = os.open(overlay, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t = time.monotonic() - t0
    out(t=round(t, 4), t_event=round(te, 4), cpu=c1 - c0, bcpu=b1 - b0)

def qsd_start(qmppath, speed):
    Qmp(qmppath).cmd("block-stream", **{"job-id": "s0", "device": "ovl",
                                        "speed": int(speed)})

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]

def lat(uri, pid, n, seed):
    """4K reads, then 4K writes, QD1 then QD16, n requests each, each
    in a cluster of the upper half not touched before."""
    n = int(n)
    h = connect_uri(uri)
    size = h.get_size()
    half = size // 2 // CL
    rnd = random.Random(int(seed))
    cl = rnd.sample(range(half, 2 * half), 4 * n)
    offs = [c * CL + rnd.randrange(0, CL // 4096) * 4096 for c in cl]
    data = rnd.randbytes(4096)
    res = {}
    pos = 0
    for op in ("read", "write"):
        for qd in (1, 16):
            todo = offs[pos:pos + n]
            pos += n
            lats = []
            c0 = ticks(pid)
            t0 = time.perf_counter_ns()
            if qd == 1:
                for o in todo:
                    s = time.perf_counter_ns()
                    if op == "read":
                        h.pread(4096, o)
                    else:
                        h.pwrite(data, o)
                    lats.append(time.perf_counter_ns() - s)
            else:
                bufs = [nbd.Buffer.from_bytearray(bytearray(data))
                        for _ in range(qd)]
                inflight = {}
                free = list(range(qd))
                k = 0
                while k < len(todo) or inflight:
                    while free and k < len(todo):
                        b = free.pop()
                        if op == "read":
                            ck = h.aio_pread(bufs[b], todo[k])
                        else:
                            ck = h.aio_pwrite(bufs[b], todo[k])
                        inflight[ck] = (b, time.perf_counter_ns())
                        k += 1
                    h.poll(-1)
                    for ck in list(inflight):
                        if h.aio_command_completed(ck):
                            b, s = inflight.pop(ck)
                            lats.append(time.perf_counter_ns() - s)
                            free.append(b)
            t = (time.perf_counter_ns() - t0) / 1e9
            cpu = ticks(pid) - c0
            res["%s%d" % (op, qd)] = {
                "p50": pct(lats, 50) / 1000, "p99": pct(lats, 99) / 1000,
                "iops": len(lats) / t,
                "cpu_us": cpu / os.sysconf("SC_CLK_TCK") * 1e6 / len(lats)}
    close(h)
    print(json.dumps(res))

fn = {"mkdisk": mkdisk, "ours_pop": ours_pop, "qsd_pop": qsd_pop,
      "qsd_start": qsd_start, "lat": lat}[sys.argv[1]]
fn(*sys.argv[2:])
PYEOF
export FLEECE_TESTS=$top/tests
bs () { "$PY" "$tmp/bs.py" "$@"; }

median ()
{
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med () { median <"$tmp/r.$1"; }
all () { tr '\n' ' ' <"$tmp/r.$1"; }
rec () { echo "$2" >>"$tmp/r.$1"; }
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict () { awk -v v="$1" -v t="$2" 'BEGIN { print (v >= t) ? "met" : "MISSED" }'; }
j () { jq -r ".$2" <<<"$1"; }
ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# start_ours LOCAL [ARGS...]: the stream filter on LOCAL.
start_ours ()
{
  rm -f "$sock" "$ctlsock"
  serve "$tmp/nbdkit.log" "$sock" "$ctlsock" -- \
    nbdkit -f -U "$sock" --filter="$STREAM" file "$1" \
    stream-state="$1.state" control="$ctlsock" "${@:2}"
}

# new_ours: an empty local image and no state: a new restore.
new_ours () { rm -f "$tmp/ours.img" "$tmp/ours.img.state"; truncate -s "$bytes" "$tmp/ours.img"; }

# start_qsd OVERLAY [BACKING]: the overlay (with the base as its backing
# when BACKING is "base"), exported over NBD as "disk", QMP on $qmp.
start_qsd ()
{
  local -a bk=()
  rm -f "$qmp" "$sock"
  if [ "${2-}" = base ]; then
    bk=(--blockdev "driver=nbd,node-name=base0,server.type=unix,server.path=$bsock,read-only=on")
    ovl="driver=qcow2,node-name=ovl,file=ovl-file,backing=base0"
  else
    ovl="driver=qcow2,node-name=ovl,file=ovl-file"
  fi
  serve "$tmp/qsd.log" "$qmp" "$sock" -- qemu-storage-daemon "${bk[@]}" \
    --blockdev "driver=file,node-name=ovl-file,filename=$1" \
    --blockdev "$ovl" \
    --nbd-server "addr.type=unix,addr.path=$sock" \
    --export "type=nbd,id=exp0,node-name=ovl,name=disk,writable=on" \
    --chardev "socket,id=qmp,path=$qmp,server=on,wait=off" \
    --monitor chardev=qmp
}

new_qsd ()
{
  rm -f "$tmp/qsd.qcow2"
  qemu-img create -q -f qcow2 -o cluster_size=65536 -u -F raw \
    -b "$base_uri" "$tmp/qsd.qcow2" "$bytes"
}

stop () { stop_pid "$server_pid" 30 || die "server exited with an error"; server_pid=; }

bytes=$(numfmt --from=iec "$size_arg")
mib=$((bytes / 1048576))
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
machine="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
versions="nbdkit $(nbdkit --version | awk '{print $2}'), $(qemu-storage-daemon --version | head -1), fio $(fio --version | sed 's/fio-//')"
echo "bench-stream.sh: $stamp, $machine, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-stream.sh: $versions"
echo "bench-stream.sh: a $size_arg base, 30% holes in 1 MiB chunks, in $tmp"
bs mkdisk "$base" "$bytes" 1 70
serve "$tmp/base.log" "$bsock" -- nbdkit -f -r -U "$bsock" file "$base"
base_pid=$server_pid
server_pid=

# ---- populate -----------------------------------------------------------
pop_ours ()
{
  local o
  new_ours; sync
  start_ours "$tmp/ours.img" stream-base="$base_uri" stream-speed=1
  o=$(bs ours_pop "$ctlsock" "$server_pid" "$base_pid")
  stop
  rec pop.ours.t "$(j "$o" t)"
  rec pop.ours.cpu "$(awk -v c="$(j "$o" cpu)" -v hz=$hz -v m=$mib 'BEGIN { printf "%.2f", c / hz * 1000 / m }')"
  rec pop.ours.bcpu "$(awk -v c="$(j "$o" bcpu)" -v hz=$hz -v m=$mib 'BEGIN { printf "%.2f", c / hz * 1000 / m }')"
  [ "$round" -gt 1 ] || cmp -s "$base" "$tmp/ours.img" || die "populate: ours differs from the base"
  mv "$tmp/ours.img" "$tmp/done.img"; mv "$tmp/ours.img.state" "$tmp/done.img.state"
}

pop_qsd ()
{
  local o
  new_qsd; sync
  start_qsd "$tmp/qsd.qcow2" base
  o=$(bs qsd_pop "$qmp" "$server_pid" "$base_pid" "$tmp/qsd.qcow2")
  stop
  rec pop.qsd.t "$(j "$o" t)"; rec pop.qsd.te "$(j "$o" t_event)"
  rec pop.qsd.cpu "$(awk -v c="$(j "$o" cpu)" -v hz=$hz -v m=$mib 'BEGIN { printf "%.2f", c / hz * 1000 / m }')"
  rec pop.qsd.bcpu "$(awk -v c="$(j "$o" bcpu)" -v hz=$hz -v m=$mib 'BEGIN { printf "%.2f", c / hz * 1000 / m }')"
  if [ "$round" -eq 1 ]; then
    qemu-img info -U "$tmp/qsd.qcow2" | grep -q '^backing file' && die "populate: the overlay still has a backing file"
    qemu-img convert -f qcow2 -O raw "$tmp/qsd.qcow2" "$tmp/qsd.raw"
    cmp -s "$base" "$tmp/qsd.raw" || die "populate: QEMU's overlay differs from the base"
    rm -f "$tmp/qsd.raw"
  fi
  mv "$tmp/qsd.qcow2" "$tmp/done.qcow2"
}

# sync_arg SIDE: the stream filter's parameter for side ours (the
# default, stream-sync=write) or flush (stream-sync=flush).
sync_arg () { [ "$1" = flush ] && echo stream-sync=flush || :; }

# ---- read ---------------------------------------------------------------
read_run ()
{
  local srv=$1 o uri
  if [ "$srv" != qsd ]; then
    new_ours; sync
    start_ours "$tmp/ours.img" stream-base="$base_uri" stream-speed=10M \
               $(sync_arg "$srv")
    uri="nbd+unix:///?socket=$sock"
  else
    new_qsd; sync
    start_qsd "$tmp/qsd.qcow2" base
    bs qsd_start "$qmp" $((10 * 1048576))
    uri="nbd+unix:///disk?socket=$sock"
  fi
  o=$(bs lat "$uri" "$server_pid" "$nreads" "$round")
  stop
  for q in read1 read16 write1 write16; do
    for k in p50 p99 iops cpu_us; do
      rec "ft.$srv.$q.$k" "$(jq -r ".$q.$k" <<<"$o" | xargs printf %.0f)"
    done
  done
}

# ---- write --------------------------------------------------------------
write_run ()
{
  local srv=$1 when=$2 uri c0 c1 o ios
  if [ "$srv" != qsd ]; then
    if [ "$when" = during ]; then
      new_ours; sync
      start_ours "$tmp/ours.img" stream-base="$base_uri" stream-speed=10M \
                 $(sync_arg "$srv")
    else
      start_ours "$tmp/done.img"
    fi
    uri="nbd+unix:///?socket=$sock"
  else
    if [ "$when" = during ]; then
      new_qsd; sync
      start_qsd "$tmp/qsd.qcow2" base
      bs qsd_start "$qmp" $((10 * 1048576))
    else
      start_qsd "$tmp/done.qcow2"
    fi
    uri="nbd+unix:///disk?socket=$sock"
  fi
  c0=$(ticks "$server_pid")
  o=$(fio --name=w --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k \
        --iodepth=16 --offset=$((bytes / 2)) --size=$((bytes / 2)) \
        --time_based --runtime="$seconds" --randrepeat=0 \
        --output-format=json 2>/dev/null | sed -n '/^{/,$p')
  c1=$(ticks "$server_pid")
  stop
  ios=$(jq -r '.jobs[0].write.total_ios' <<<"$o")
  rec "wr.$srv.$when.iops" "$(jq -r '.jobs[0].write.iops' <<<"$o")"
  rec "wr.$srv.$when.p50" "$(jq -r '.jobs[0].write.clat_ns.percentile["50.000000"] / 1000' <<<"$o")"
  rec "wr.$srv.$when.p99" "$(jq -r '.jobs[0].write.clat_ns.percentile["99.000000"] / 1000' <<<"$o")"
  rec "wr.$srv.$when.cpu" "$(awk -v c=$((c1 - c0)) -v hz=$hz -v n="$ios" 'BEGIN { printf "%.1f", c / hz * 1e6 / n }')"
}

for round in $(seq "$repeat"); do
  if [ $((round % 2)) = 1 ]; then sides=(ours flush qsd); else sides=(qsd flush ours); fi
  if want populate || { want write && [ "$round" = 1 ]; }; then
    for s in "${sides[@]}"; do [ "$s" = flush ] || "pop_$s"; done
    echo "populate, round $round: ours $(tail -1 "$tmp/r.pop.ours.t") s, qsd $(tail -1 "$tmp/r.pop.qsd.t") s"
  fi
  if want read; then
    for s in "${sides[@]}"; do read_run "$s"; done
    echo "first touch, round $round: QD1 p50 read / write: ours $(tail -1 "$tmp/r.ft.ours.read1.p50") / $(tail -1 "$tmp/r.ft.ours.write1.p50") us, qsd $(tail -1 "$tmp/r.ft.qsd.read1.p50") / $(tail -1 "$tmp/r.ft.qsd.write1.p50") us"
  fi
  if want write; then
    for s in "${sides[@]}"; do write_run "$s" during; write_run "$s" after; done
    echo "write, round $round: ours $(tail -1 "$tmp/r.wr.ours.during.iops") / $(tail -1 "$tmp/r.wr.ours.after.iops"), qsd $(tail -1 "$tmp/r.wr.qsd.during.iops") / $(tail -1 "$tmp/r.wr.qsd.after.iops") IOPS (during / after)"
  fi
done

# ---- report -------------------------------------------------------------
{
  echo "# bench-stream.sh, $stamp"
  echo
  echo "$machine; $versions; a $size_arg base, 30% holes; $repeat rounds, medians; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  if want populate; then
    ot=$(med pop.ours.t) qt=$(med pop.qsd.t)
    orate=$(awk -v m=$mib -v t="$ot" 'BEGIN { printf "%.0f", m / t }')
    qrate=$(awk -v m=$mib -v t="$qt" 'BEGIN { printf "%.0f", m / t }')
    r=$(ratio "$qt" "$ot")
    echo "## Populate $size_arg at unlimited speed, to durable"
    echo
    echo "| | time (s) | rate (MiB/s) | server CPU (ms/MiB) | base server CPU (ms/MiB) |"
    echo "|---|---|---|---|---|"
    echo "| ours | $ot ($(all pop.ours.t)) | $orate | $(med pop.ours.cpu) | $(med pop.ours.bcpu) |"
    echo "| QEMU block-stream | $qt ($(all pop.qsd.t); to the event $(med pop.qsd.te)) | $qrate | $(med pop.qsd.cpu) | $(med pop.qsd.bcpu) |"
    echo
    echo "ours / QEMU: ${r}x (target >= 1.2x: $(verdict "$r" 1.2))"
    echo
  fi
  if want read; then
    echo "## 4K requests to clusters not yet populated, while streaming (job at 10 MiB/s)"
    echo
    echo "Each request in a different cluster of the upper half; $nreads requests per row and round."
    echo
    echo "| | request | QD1 p50 / p99 (us) | QD1 IOPS | QD16 p50 / p99 (us) | QD16 IOPS | server CPU per request QD1 / QD16 (us) |"
    echo "|---|---|---|---|---|---|---|"
    for s in ours flush qsd; do
      for op in read write; do
        echo "| $s | $op | $(med ft.$s.${op}1.p50) / $(med ft.$s.${op}1.p99) | $(med ft.$s.${op}1.iops) | $(med ft.$s.${op}16.p50) / $(med ft.$s.${op}16.p99) | $(med ft.$s.${op}16.iops) | $(med ft.$s.${op}1.cpu_us) / $(med ft.$s.${op}16.cpu_us) |"
      done
    done
    echo
  fi
  if want write; then
    echo "## 4K random writes, QD16, ${seconds} s, upper half: during streaming vs after completion"
    echo
    echo "| | during IOPS | after IOPS | during / after | p50 / p99 during (us) | p50 / p99 after (us) | server CPU per write during / after (us) |"
    echo "|---|---|---|---|---|---|---|"
    for s in ours flush qsd; do
      echo "| $s | $(med wr.$s.during.iops | xargs printf %.0f) | $(med wr.$s.after.iops | xargs printf %.0f) | $(ratio "$(med wr.$s.during.iops)" "$(med wr.$s.after.iops)") | $(med wr.$s.during.p50) / $(med wr.$s.during.p99) | $(med wr.$s.after.p50) / $(med wr.$s.after.p99) | $(med wr.$s.during.cpu) / $(med wr.$s.after.cpu) |"
    done
    r=$(ratio "$(med wr.ours.during.iops)" "$(med wr.ours.after.iops)")
    echo
    rf=$(ratio "$(med wr.flush.during.iops)" "$(med wr.flush.after.iops)")
    echo "ours during / after: ${r}x with stream-sync=write, ${rf}x with stream-sync=flush (target >= 0.8x: $(verdict "$r" 0.8) / $(verdict "$rf" 0.8)); all rounds (IOPS during): ours $(all wr.ours.during.iops), flush $(all wr.flush.during.iops), qsd $(all wr.qsd.during.iops)"
    echo
  fi
} | tee "$res"

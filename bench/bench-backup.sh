#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Push backup jobs (backup-start) against the alternatives, in one run:
#
#   full   a full backup of a 1 GiB disk of random data with 30% holes
#          (a sparse file: 70% of its 1 MiB chunks, picked by a seeded
#          RNG, hold random data) to a new file, three ways, rounds
#          interleaved (the order rotates each round), medians:
#            push    backup-start target=FILE sync=full on the whole
#                    stack (snapshot-access, cbw, dirty-bitmap, file),
#                    status polled every 2 ms until "completed";
#            qsd     qemu-storage-daemon's backup job: blockdev-backup
#                    sync=full to a raw file over QMP on a Unix socket
#                    (--chardev socket,...,server=on,wait=off --monitor:
#                    7.2 has no --qmp option), until BLOCK_JOB_COMPLETED;
#            nbdcopy snapshot-begin, nbdcopy of the snapshot export to
#                    the file, snapshot-end, on the same stack.
#          The push job fdatasyncs its target before it completes, so
#          the others are timed to the same point: qsd's target is
#          fsynced after the event, nbdcopy runs with --flush.  The
#          copy phase alone is shown too (push: bytes_done reaching
#          bytes_total; qsd: the event).  Targets: push >= 1.2x qsd
#          and >= 0.9x nbdcopy (as rates).  Every target is compared
#          with the disk in the first round.  The server's CPU time
#          (user+system ticks from /proc/PID/stat; for nbdcopy also the
#          client's) per MiB of data.
#   incr   a push full backup with checkpoint c0, then BENCH_REPEAT
#          rounds of: 1% of the 64K granules, scattered, written (a
#          tenth of them with zeroes), an incremental push since the
#          previous checkpoint into the same file.  Bytes the job read
#          and wrote (rchar/wchar of /proc/PID/io; the control socket
#          uses send/recv, which are not counted there, and zero
#          granules become punched holes, which write nothing; no
#          client is connected meanwhile), its bytes_total and
#          bytes_done, and the granules of the target that changed,
#          against the granules written;
#          time against the median push full time.  The target equals
#          the disk at the end.  Targets: equal; < 5% of the full.
#   iops   4K random writes, QD16, BENCH_SECONDS (6) on the live
#          export (fio nbd engine), on a fresh copy of the disk each
#          time: with no backup, with one full backup running for the
#          whole fio run (its speed= set so it takes BENCH_SECONDS +
#          3 s), and with full-speed backups back to back (the worst
#          case: each job a new snapshot, so the guest's writes copy
#          clusters all the time, and the job's own I/O competes).
#          The same on qemu-storage-daemon (its disk node exported
#          over NBD, with no backup and with one speed-limited backup
#          job) for comparison.  Rounds interleaved, medians; latency
#          percentiles and server CPU per write.  Target >= 0.8x.
#   profile  (only when asked: BENCH_PARTS=profile) perf record -g on
#          nbdkit for BENCH_PROFILE_SECONDS (20) while push full
#          backups run back to back; the top of the report in
#          bench/results/backup-profile.txt.
#
# Environment: BENCH_REPEAT (5), BENCH_SECONDS (6; about 5 minutes in
# all, 7 with 10), BENCH_SIZE (1G), BENCH_PROFILE_SECONDS (20),
# BENCH_POLL (seconds between status polls of a push job, 0.002),
# BENCH_PARTS ("full incr iops"), BENCH_QUICK=1 (a smoke run: 256M,
# one round, 3 s fio runs; not numbers to publish), TMPDIR (the disk,
# targets and servers' files; needs ~3x BENCH_SIZE free).
# Results: stdout, and bench/results/backup.md (and backup-profile.txt).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$top/bench/lib.sh"

if [ -n "${BENCH_QUICK-}" ]; then
  : "${BENCH_SIZE:=256M}" "${BENCH_REPEAT:=1}" "${BENCH_SECONDS:=3}"
fi
size_arg=${BENCH_SIZE:-1G}
repeat=${BENCH_REPEAT:-5}
seconds=${BENCH_SECONDS:-6}
parts=${BENCH_PARTS:-full incr iops}
want () { [[ " $parts " == *" $1 "* ]]; }

need_built "$SA" "$CBW" "$DB"
need nbdkit nbdcopy fio socat jq python3-nbd
use_qsd=1
if ! probe_tool qemu-storage-daemon; then
  echo "bench-backup.sh: $probe_reason: leaving qemu-storage-daemon out" >&2
  use_qsd=0
fi
want profile && need perf

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-backup.XXXXXX")
loop_pid=
cleanup ()
{
  [ -z "$loop_pid" ] || kill "$loop_pid" 2>/dev/null || true
  stop_pid "$server_pid" || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

sock=$tmp/nbd.sock
ctlsock=$tmp/ctl.sock
qmp=$tmp/qmp.sock
disk=$tmp/disk.img
res=$here/results/backup.md
mkdir -p "$here/results"

# ---- the Python half: drivers that time things precisely --------------
cat >"$tmp/bb.py" <<'PYEOF'
import hashlib, json, os, random, select, sys, time
sys.path.insert(0, os.environ["FLEECE_TESTS"])
from fleece_lib import Ctl, Qmp, chunky_disk, close, connect, cpu_ticks

G = 65536
HZ = os.sysconf("SC_CLK_TCK")
POLL = float(os.environ.get("BENCH_POLL", "0.002"))

ticks = cpu_ticks

def io(pid):
    d = {}
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            k, v = line.split(":")
            d[k] = int(v)
    return d["rchar"], d["wchar"]

def mkdisk(path, size, seed, pct):
    print(chunky_disk(path, size, seed, pct))

def job_of(st, jid):
    for j in st.get("jobs", []):
        if j["id"] == jid:
            return j
    raise SystemExit("job %s not in status: %r" % (jid, st))

def push(ctlpath, pid, args):
    """backup-start ARGS; poll until the job ends.  Prints JSON: t (to
    completed), t_copy (bytes_done reached bytes_total), cpu (ticks),
    rd/wr (rchar/wchar of the server: bytes passed to read(2),
    pread(2), write(2), pwrite(2) and the like; the control socket's
    send(2)/recv(2) are not counted there, nor are punched holes),
    bytes_total, bytes_done."""
    pid = int(pid)
    ctl = Ctl(ctlpath)
    c0 = ticks(pid); r0, w0 = io(pid)
    t0 = time.monotonic()
    r = ctl.ok("backup-start " + args)
    jid = r["job"]
    t_copy = None
    while True:
        j = job_of(ctl("status"), jid)
        now = time.monotonic()
        if t_copy is None and j["bytes_total"] > 0 and \
           j["bytes_done"] == j["bytes_total"]:
            t_copy = now - t0
        if j["state"] not in ("running", "paused"):
            break
        time.sleep(POLL)
    t = now - t0
    c1 = ticks(pid); r1, w1 = io(pid)
    if j["state"] != "completed":
        raise SystemExit("job %s: %s (%s)" % (jid, j["state"], j["error"]))
    print(json.dumps({"t": round(t, 4),
                      "t_copy": round(t if t_copy is None else t_copy, 4),
                      "cpu": c1 - c0, "rd": r1 - r0, "wr": w1 - w0,
                      "bytes_total": j["bytes_total"],
                      "bytes_done": j["bytes_done"]}))

def qsd(qmppath, pid, target):
    """blockdev-backup sync=full from node disk to node tgt; time to
    BLOCK_JOB_COMPLETED (t_copy), then to the target's fsync (t)."""
    pid = int(pid)
    q = Qmp(qmppath)
    c0 = ticks(pid)
    t0 = time.monotonic()
    q.cmd("blockdev-backup", **{"job-id": "bk", "device": "disk",
                                "target": "tgt", "sync": "full"})
    e = q.event("BLOCK_JOB_COMPLETED")
    t_copy = time.monotonic() - t0
    c1 = ticks(pid)
    d = e["data"]
    if "error" in d or d["offset"] != d["len"]:
        raise SystemExit("qsd backup job: %r" % d)
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t = time.monotonic() - t0
    print(json.dumps({"t": round(t, 4), "t_copy": round(t_copy, 4),
                      "cpu": c1 - c0}))

def scatter(sock, seed, pct):
    """Write pct% of the granules, scattered: random data, every tenth
    zeroes.  Prints JSON: granules written, and how many of them now
    differ from what they held."""
    h = connect(sock)
    size = h.get_size()
    rnd = random.Random(int(seed))
    n = size // G
    picks = rnd.sample(range(n), max(1, int(n * float(pct) / 100)))
    differ = 0
    zero = bytes(G)
    for k, g in enumerate(picks):
        old = h.pread(G, g * G)
        if k % 10 == 9:
            h.zero(G, g * G)
            new = zero
        else:
            new = rnd.randbytes(G)
            h.pwrite(new, g * G)
        differ += old != new
    h.flush()
    close(h)
    print(json.dumps({"granules": len(picks), "differ": differ}))

def hashes(path, out):
    with open(path, "rb") as f, open(out, "w") as o:
        while True:
            b = f.read(G)
            if not b:
                break
            o.write(hashlib.blake2b(b, digest_size=16).hexdigest() + "\n")

def hdiff(a, b):
    with open(a) as fa, open(b) as fb:
        print(sum(x != y for x, y in zip(fa, fb)))

def loop(ctlpath, stopfile, target, speed="0"):
    """Push full backups back to back (at speed bytes/s, 0: unlimited)
    until stopfile exists; the job in flight at that point is
    cancelled.  Prints the number that completed and the seconds a job
    was running."""
    ctl = Ctl(ctlpath)
    done = 0
    busy = 0.0
    while not os.path.exists(stopfile):
        t0 = time.monotonic()
        jid = ctl.ok("backup-start sync=full speed=%s target=%s"
                     % (speed, target))["job"]
        open(stopfile + ".running", "w").close()
        while True:
            j = job_of(ctl("status"), jid)
            if j["state"] not in ("running", "paused"):
                break
            if os.path.exists(stopfile):
                ctl("job-cancel id=" + jid)
            time.sleep(0.01)
        busy += time.monotonic() - t0
        if j["state"] == "completed":
            done += 1
        elif j["state"] != "cancelled":
            raise SystemExit("job %s: %s (%s)" % (jid, j["state"], j["error"]))
    print(done, "%.2f" % busy)

def qloop(qmppath, stopfile, speed="0"):
    """The same with qemu-storage-daemon's backup job (node disk to node
    tgt, sync=full, speed bytes/s); the job in flight at the end is
    cancelled."""
    q = Qmp(qmppath)
    done = 0
    busy = 0.0
    k = 0
    while not os.path.exists(stopfile):
        k += 1
        jid = "bk%d" % k
        t0 = time.monotonic()
        q.cmd("blockdev-backup", **{"job-id": jid, "device": "disk",
                                    "target": "tgt", "sync": "full",
                                    "speed": int(speed)})
        open(stopfile + ".running", "w").close()
        cancelled = False
        e = None
        while e is None:
            for i, m in enumerate(q.events):
                if m["event"] in ("BLOCK_JOB_COMPLETED",
                                  "BLOCK_JOB_CANCELLED"):
                    e = q.events.pop(i)
                    break
            else:
                if select.select([q.s], [], [], 0.05)[0]:
                    q.events.append(q.read())
                elif os.path.exists(stopfile) and not cancelled:
                    q.cmd("block-job-cancel", device=jid)
                    cancelled = True
        busy += time.monotonic() - t0
        if e["event"] == "BLOCK_JOB_COMPLETED":
            if "error" in e["data"]:
                raise SystemExit("qsd backup job: %r" % e["data"])
            done += 1
    print(done, "%.2f" % busy)

fn = {"mkdisk": mkdisk, "qloop": qloop, "push": push, "qsd": qsd, "scatter": scatter,
      "hashes": hashes, "hdiff": hdiff, "loop": loop}[sys.argv[1]]
fn(*sys.argv[2:])
PYEOF
export FLEECE_TESTS=$top/tests
bb () { "$PY" "$tmp/bb.py" "$@"; }

median ()
{
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# med FILE: the median of FILE's lines; all FILE: its lines on one line.
med () { median <"$tmp/r.$1"; }
all () { tr '\n' ' ' <"$tmp/r.$1"; }
rec () { echo "$2" >>"$tmp/r.$1"; }
ratio () { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict () { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v >= t : (op == "<") ? v < t : v == t; print ok ? "met" : "MISSED" }'; }

# The whole stack on FILE, with a control socket.
start_stack ()
{
  rm -f "$sock" "$ctlsock"
  serve "$tmp/nbdkit.log" "$sock" "$ctlsock" -- \
    nbdkit -f -U "$sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
    file "$1" control="$ctlsock" "${@:2}"
}

start_qsd ()
{
  rm -f "$qmp"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=disk-file,filename=$disk" \
    --blockdev "driver=raw,node-name=disk,file=disk-file" \
    --blockdev "driver=file,node-name=tgt-file,filename=$1,discard=unmap" \
    --blockdev "driver=raw,node-name=tgt,file=tgt-file" \
    --chardev "socket,id=qmp,path=$qmp,server=on,wait=off" \
    --monitor chardev=qmp >"$tmp/qsd.log" 2>&1 &
  server_pid=$!
  local i
  for ((i = 0; i < 200; i++)); do
    sock_listening "$qmp" && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/qsd.log" >&2; die "qemu-storage-daemon exited during start-up"; }
    sleep 0.05
  done
  die "qemu-storage-daemon did not start within 10 s"
}

stop () { stop_pid "$server_pid" 30 || die "server exited with an error (log: $(tail -3 "$tmp/nbdkit.log"))"; server_pid=; }

# same WHAT FILE: FILE equals the disk.
same () { cmp -s "$disk" "$2" || die "$1: the target differs from the disk ($(cmp "$disk" "$2" 2>&1 | head -1))"; }

bytes=$(numfmt --from=iec "$size_arg")
echo "bench-backup.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-backup.sh: a $size_arg disk, 70% random data in 1 MiB chunks, in $tmp"
data=$(bb mkdisk "$disk" "$bytes" 1 70)
data_mib=$(awk -v d="$data" 'BEGIN { printf "%.1f", d / 1048576 }')
# json FILE KEY: a number from one JSON line.
j () { jq -r ".$2" <<<"$1"; }
mibs () { awk -v d="$data" -v t="$1" 'BEGIN { printf "%.0f", d / 1048576 / t }'; }
cpu_per_mib () { awk -v c="$1" -v hz="$(getconf CLK_TCK)" -v d="$data" 'BEGIN { printf "%.2f", c / hz * 1000 / (d / 1048576) }'; }

# ---- full -------------------------------------------------------------
run_push ()
{
  local t=$tmp/push.img out
  rm -f "$t"; sync
  start_stack "$disk"
  out=$(bb push "$ctlsock" "$server_pid" "target=$t sync=full")
  stop
  rec push.t "$(j "$out" t)"; rec push.tc "$(j "$out" t_copy)"
  rec push.cpu "$(cpu_per_mib "$(j "$out" cpu)")"
  [ "$round" -gt 1 ] || same push "$t"
  rm -f "$t"
}

run_qsd ()
{
  local t=$tmp/qsd.img out
  rm -f "$t"; truncate -s "$bytes" "$t"; sync
  start_qsd "$t"
  out=$(bb qsd "$qmp" "$server_pid" "$t")
  stop
  rec qsd.t "$(j "$out" t)"; rec qsd.tc "$(j "$out" t_copy)"
  rec qsd.cpu "$(cpu_per_mib "$(j "$out" cpu)")"
  [ "$round" -gt 1 ] || same qsd "$t"
  rm -f "$t"
}

run_nbdcopy ()
{
  local t=$tmp/copy.img t0 t1 c0 c1 cc
  rm -f "$t"; sync
  start_stack "$disk"
  c0=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  t0=$(date +%s%N)
  ctl_ok "$ctlsock" snapshot-begin >/dev/null
  cc=$( { /usr/bin/time -f '%U %S' nbdcopy --flush \
          "nbd+unix:///snapshot?socket=$sock" "$t" 2>&1 >/dev/null; } | tail -1)
  ctl_ok "$ctlsock" snapshot-end >/dev/null
  t1=$(date +%s%N)
  c1=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  stop
  rec copy.t "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')"
  rec copy.cpu "$(cpu_per_mib $((c1 - c0)))"
  rec copy.ccpu "$(awk -v u="${cc% *}" -v s="${cc#* }" -v d="$data" 'BEGIN { printf "%.2f", (u + s) * 1000 / (d / 1048576) }')"
  [ "$round" -gt 1 ] || same nbdcopy "$t"
  rm -f "$t"
}

if want full; then
  methods=(push nbdcopy)
  [ $use_qsd = 0 ] || methods=(push qsd nbdcopy)
  for round in $(seq "$repeat"); do
    n=${#methods[@]}
    for ((k = 0; k < n; k++)); do
      m=${methods[$(( (k + round - 1) % n ))]}
      "run_$m"
    done
    echo "full, round $round: push $(tail -1 "$tmp/r.push.t") s$([ $use_qsd = 0 ] || echo ", qsd $(tail -1 "$tmp/r.qsd.t") s"), nbdcopy $(tail -1 "$tmp/r.copy.t") s"
  done
  push_t=$(med push.t)
  echo "full: push $(all push.t)-> median $push_t s (copy phase $(med push.tc) s)"
  echo "full: nbdcopy $(all copy.t)-> median $(med copy.t) s"
  [ $use_qsd = 0 ] || echo "full: qsd $(all qsd.t)-> median $(med qsd.t) s (to the event $(med qsd.tc) s)"
fi

# ---- incr -------------------------------------------------------------
if want incr; then
  idisk=$tmp/incr.img t=$tmp/incr-target.img
  cp --sparse=always "$disk" "$idisk"
  rm -f "$t"
  start_stack "$idisk"
  out=$(bb push "$ctlsock" "$server_pid" "target=$t sync=full checkpoint=c0")
  full_t=$(j "$out" t)
  for round in $(seq "$repeat"); do
    w=$(bb scatter "$sock" "$((100 + round))" 1)
    bb hashes "$t" "$tmp/h.before"
    sync
    out=$(bb push "$ctlsock" "$server_pid" \
          "target=$t sync=incremental since=c$((round - 1)) checkpoint=c$round")
    bb hashes "$t" "$tmp/h.after"
    g=$(j "$w" granules)
    rec incr.t "$(j "$out" t)"
    rec incr.g "$g"
    # Bytes per changed granule: read all of them, write the non-zero
    # ones (the zero ones are punched).
    rec incr.rd "$(j "$out" rd)"; rec incr.rd_want $((g * 65536))
    rec incr.wr "$(j "$out" wr)"; rec incr.wr_want $(( (g - g / 10) * 65536 ))
    rec incr.total "$(j "$out" bytes_total)"; rec incr.done "$(j "$out" bytes_done)"
    rec incr.tchanged "$(bb hdiff "$tmp/h.before" "$tmp/h.after")"
    rec incr.differ "$(j "$w" differ)"
    echo "incr, round $round: $g granules written ($(j "$w" differ) changed), job $(j "$out" t) s, read $(j "$out" rd) wrote $(j "$out" wr) bytes, bytes_total $(j "$out" bytes_total) bytes_done $(j "$out" bytes_done), $(tail -1 "$tmp/r.incr.tchanged") target granules changed"
  done
  stop
  cmp -s "$idisk" "$t" || die "incr: the target differs from the disk after $repeat incrementals"
  # Every round must be exact, not just the median.
  incr_exact=met
  paste -d' ' "$tmp/r.incr.rd" "$tmp/r.incr.rd_want" "$tmp/r.incr.wr" "$tmp/r.incr.wr_want" \
      "$tmp/r.incr.total" "$tmp/r.incr.done" "$tmp/r.incr.tchanged" "$tmp/r.incr.differ" >"$tmp/incr.rows"
  while read -r rd rdw wr wrw tot dn tc df; do
    { [ "$rd" = "$rdw" ] && [ "$wr" = "$wrw" ] && [ "$tot" = "$rdw" ] &&
      [ "$dn" = "$rdw" ] && [ "$tc" = "$df" ]; } || incr_exact=MISSED
  done <"$tmp/incr.rows"
  rm -f "$idisk" "$t"
  echo "incr: $(all incr.t)-> median $(med incr.t) s; the full push on this server took $full_t s"
fi

# ---- iops -------------------------------------------------------------
# The same guest writes against qemu-storage-daemon: its disk node
# exported over NBD, backup jobs on that node back to back (QEMU puts
# its copy-before-write filter above the node, under the export).
start_qsd_export ()
{
  rm -f "$qmp" "$sock"
  truncate -s "$bytes" "$2"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=disk-file,filename=$1" \
    --blockdev "driver=raw,node-name=disk,file=disk-file" \
    --blockdev "driver=file,node-name=tgt-file,filename=$2,discard=unmap" \
    --blockdev "driver=raw,node-name=tgt,file=tgt-file" \
    --nbd-server "addr.type=unix,addr.path=$sock" \
    --export "type=nbd,id=live,node-name=disk,name=live,writable=on" \
    --chardev "socket,id=qmp,path=$qmp,server=on,wait=off" \
    --monitor chardev=qmp >"$tmp/qsd.log" 2>&1 &
  server_pid=$!
  local i
  for ((i = 0; i < 200; i++)); do
    sock_listening "$qmp" && sock_listening "$sock" && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/qsd.log" >&2; die "qemu-storage-daemon exited during start-up"; }
    sleep 0.05
  done
  die "qemu-storage-daemon did not start within 10 s"
}
# run_iops SERVER MODE: SERVER ours|qsd, MODE idle (no backup), backup
# (one full backup running for the whole fio run: its speed is set so
# that it takes BENCH_SECONDS + 3 s) or loop (full backups at full
# speed back to back: each a new snapshot, the worst case).
run_iops ()
{
  local srv=$1 mode=$2 idisk=$tmp/iops.img tgt=$tmp/iops-target.img out c0 c1 ios uri i
  local key=iops.$srv.$mode
  cp --sparse=always "$disk" "$idisk"
  rm -f "$tgt" "$tmp/stop"
  sync
  if [ "$srv" = ours ]; then
    start_stack "$idisk"
    uri="nbd+unix:///?socket=$sock"
  else
    start_qsd_export "$idisk" "$tgt"
    uri="nbd+unix:///live?socket=$sock"
  fi
  if [ "$mode" != idle ]; then
    local speed=0
    if [ "$mode" = backup ]; then
      # Ours counts data read, QEMU every byte of the disk.
      if [ "$srv" = ours ]; then speed=$((data / (seconds + 3))); else speed=$((bytes / (seconds + 3))); fi
    fi
    if [ "$srv" = ours ]; then
      bb loop "$ctlsock" "$tmp/stop" "$tgt" "$speed" >"$tmp/loop.out" &
    else
      bb qloop "$qmp" "$tmp/stop" "$speed" >"$tmp/loop.out" &
    fi
    loop_pid=$!
    # fio starts while the first job runs.
    for ((i = 0; i < 200; i++)); do
      [ ! -e "$tmp/stop.running" ] || break
      sleep 0.01
    done
  fi
  c0=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  out=$(fio --name=w --ioengine=nbd --uri="$uri" \
          --rw=randwrite --bs=4k --iodepth=16 --size="$bytes" --time_based \
          --runtime="$seconds" --randrepeat=0 --output-format=json 2>/dev/null |
        sed -n '/^{/,$p')
  c1=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
  if [ "$mode" != idle ]; then
    touch "$tmp/stop"
    wait "$loop_pid" || die "the backup loop on $srv failed"
    loop_pid=
    read -r nb busy <"$tmp/loop.out"
    rec "$key.jobs" "$nb"; rec "$key.busy" "$busy"
  fi
  stop
  ios=$(jq '.jobs[0].write.total_ios' <<<"$out")
  rec "$key" "$(jq '.jobs[0].write.iops | floor' <<<"$out")"
  for p in 50:50.000000 99:99.000000 999:99.900000; do
    rec "$key.p${p%%:*}" "$(jq ".jobs[0].write.clat_ns.percentile[\"${p#*:}\"] / 1000 | floor" <<<"$out")"
  done
  rec "$key.cpu" "$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$ios" 'BEGIN { printf "%.1f", c / hz * 1e6 / n }')"
  rm -f "$idisk" "$tgt" "$tmp/stop.running"
}
if want iops; then
  iconfs=("ours idle" "ours backup" "ours loop")
  [ $use_qsd = 0 ] || iconfs+=("qsd idle" "qsd backup")
  for round in $(seq "$repeat"); do
    n=${#iconfs[@]}
    for ((k = 0; k < n; k++)); do
      # shellcheck disable=SC2086
      run_iops ${iconfs[$(( (k + round - 1) % n ))]}
    done
    echo "iops, round $round: no backup $(tail -1 "$tmp/r.iops.ours.idle"), one backup running $(tail -1 "$tmp/r.iops.ours.backup"), back to back $(tail -1 "$tmp/r.iops.ours.loop") ($(tail -1 "$tmp/r.iops.ours.loop.jobs") jobs completed)$([ $use_qsd = 0 ] || echo "; qsd: $(tail -1 "$tmp/r.iops.qsd.idle"), one backup running $(tail -1 "$tmp/r.iops.qsd.backup")")"
  done
  for c in "${iconfs[@]}"; do
    echo "iops: $c: $(all "iops.${c/ /.}")-> median $(med "iops.${c/ /.}")"
  done
fi

# ---- profile ----------------------------------------------------------
if want profile; then
  psec=${BENCH_PROFILE_SECONDS:-20}
  rm -f "$tmp/stop"
  start_stack "$disk"
  bb loop "$ctlsock" "$tmp/stop" "$tmp/prof-target.img" >"$tmp/loop.out" &
  loop_pid=$!
  perf record -g -p "$server_pid" -o "$tmp/perf.data" -- sleep "$psec" >/dev/null 2>"$tmp/perf.log" ||
    die "perf record failed: $(tail -2 "$tmp/perf.log")"
  touch "$tmp/stop"
  wait "$loop_pid" || die "the backup loop failed"
  loop_pid=
  stop
  rep () { perf report -i "$tmp/perf.data" --stdio "$@" 2>/dev/null >"$tmp/perf.txt" || true; grep -v '^#' "$tmp/perf.txt" | grep . | head -"$n" || true; }
  {
    echo "# perf record -g -p NBDKIT, $psec s of push full backups back to back ($(awk '{ print $1 " jobs completed, busy " $2 " s" }' "$tmp/loop.out"))"
    echo
    echo "## by DSO"
    n=10 rep --no-children --sort dso -g none
    echo
    echo "## by symbol (self)"
    n=40 rep --no-children --sort dso,sym -g none
    echo
    echo "## by symbol (with children)"
    n=60 rep --children --sort sym -g none
    echo
    echo "## call graph (caller), top"
    n=150 rep --no-children --sort sym -g caller,0.5,callee --percent-limit 2
  } >"$here/results/backup-profile.txt"
  echo "profile: $here/results/backup-profile.txt"
  head -30 "$here/results/backup-profile.txt"
fi

# ---- report -----------------------------------------------------------
{
  echo "# bench-backup.sh, $(date -u +%Y-%m-%dT%H:%MZ)${BENCH_QUICK:+ (BENCH_QUICK smoke run: not for publishing)}"
  echo
  echo "Machine: $(nproc) vCPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(nbdkit --version | head -1), $(nbdcopy --version | head -1), $(fio --version)$([ $use_qsd = 0 ] || echo ", $(qemu-storage-daemon --version | head -1 | sed 's/ (.*//')"). Disk $size_arg ($data_mib MiB data), 64K clusters and granules, medians of $repeat interleaved rounds."
  echo
  if want full; then
    echo "| full backup to a new file | time to durable (s) | data rate (MiB/s) | copy phase (s) | server CPU ms per MiB |"
    echo "|---|---:|---:|---:|---:|"
    echo "| push (\`backup-start sync=full\`) | $(med push.t) | $(mibs "$(med push.t)") | $(med push.tc) | $(med push.cpu) |"
    [ $use_qsd = 0 ] ||
    echo "| qemu-storage-daemon \`blockdev-backup sync=full\` + fsync | $(med qsd.t) | $(mibs "$(med qsd.t)") | $(med qsd.tc) | $(med qsd.cpu) |"
    echo "| nbdcopy --flush of the snapshot export | $(med copy.t) | $(mibs "$(med copy.t)") | | $(med copy.cpu) (+ nbdcopy $(med copy.ccpu)) |"
    echo
  fi
  if want iops; then
    echo "| 4K random writes QD16, ${seconds} s, on the live disk | IOPS | p50 / p99 / p99.9 latency (us) | server CPU us per write |"
    echo "|---|---:|---:|---:|"
    irow () { echo "| $1 | $(med "$2") | $(med "$2.p50") / $(med "$2.p99") / $(med "$2.p999") | $(med "$2.cpu") |"; }
    irow "this stack, no backup" iops.ours.idle
    irow "this stack, one push full backup running throughout (speed=$((data / (seconds + 3))))" iops.ours.backup
    irow "this stack, push full backups at full speed back to back ($(med iops.ours.loop.jobs) completed per run)" iops.ours.loop
    if [ $use_qsd = 1 ]; then
      irow "qemu-storage-daemon, no backup" iops.qsd.idle
      irow "qemu-storage-daemon, one backup job running throughout (speed=$((bytes / (seconds + 3))))" iops.qsd.backup
    fi
    echo
  fi
  echo "| target | measured | | |"
  echo "|---|---:|---:|---|"
  if want full; then
    r=$(ratio "$(med copy.t)" "$push_t")
    if [ $use_qsd = 1 ]; then
      q=$(ratio "$(med qsd.t)" "$push_t")
      echo "| push full >= 1.2x qemu-storage-daemon's backup job (rate, to durable) | $q | >= 1.2 | $(verdict "$q" 1.2 '>=') |"
      echo "| the same, copy phases only (push to bytes_done = bytes_total, qsd to its event) | $(ratio "$(med qsd.tc)" "$(med push.tc)") | stated | |"
    fi
    echo "| push full >= 0.9x nbdcopy of the snapshot (rate, to durable) | $r | >= 0.9 | $(verdict "$r" 0.9 '>=') |"
  fi
  if want incr; then
    echo "| incremental, 1% of granules changed ($(med incr.g) granules): bytes read / written / bytes_total / bytes_done against granules x 64K ($(med incr.rd_want) read, $(med incr.wr_want) written: zero granules are punched) | $(med incr.rd) / $(med incr.wr) / $(med incr.total) / $(med incr.done) | equal, every round | $incr_exact |"
    echo "| incremental: target granules changed / granules whose contents changed | $(med incr.tchanged) / $(med incr.differ) | equal | $incr_exact |"
    if want full; then
      ip=$(awk -v a="$(med incr.t)" -v b="$push_t" 'BEGIN { printf "%.1f", a / b * 100 }')
      echo "| incremental time / push full time ($(med incr.t) s / $push_t s) | ${ip}% | < 5% | $(verdict "$ip" 5 '<') |"
    else
      ip=$(awk -v a="$(med incr.t)" -v b="$full_t" 'BEGIN { printf "%.1f", a / b * 100 }')
      echo "| incremental time / one push full time on the same server ($(med incr.t) s / $full_t s) | ${ip}% | < 5% | $(verdict "$ip" 5 '<') |"
    fi
  fi
  if want iops; then
    r=$(ratio "$(med iops.ours.backup)" "$(med iops.ours.idle)")
    echo "| guest 4K random-write IOPS during a running full backup / without | $r | >= 0.8 | $(verdict "$r" 0.8 '>=') |"
    r=$(ratio "$(med iops.ours.loop)" "$(med iops.ours.idle)")
    echo "| the same, full-speed backups back to back (worst case) / without | $r | >= 0.8 | $(verdict "$r" 0.8 '>=') |"
    [ $use_qsd = 0 ] ||
    echo "| the same with qemu-storage-daemon's backup job running throughout / without (for comparison) | $(ratio "$(med iops.qsd.backup)" "$(med iops.qsd.idle)") | stated | |"
  fi
} >"$res"
echo
cat "$res"

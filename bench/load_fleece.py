#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The load driver of load-fleece.sh (see there).  Runs against a
# started stack:
#
#   * CLIENTS guest connections to the live export, each a thread with
#     its own libnbd handle, doing random reads (anywhere), writes,
#     zeroes and trims (each only inside its own slice of the disk, so
#     it knows what its slice must hold), reading a share of its writes
#     straight back (invariant 2: live reads return the latest write);
#   * a snapshot cycle every CYCLE seconds: pause the guests (each
#     parks between requests, so nothing is in flight), record the
#     SHA-256 of REGIONS random 1 MiB regions through the live export,
#     snapshot-begin checkpoint=cN, resume; while it is active a reader
#     thread reads the snapshot (random ranges, and the recorded regions
#     again and again, compared with the record); at the end of the
#     cycle every recorded region is read from the snapshot and
#     compared, the delta view since the previous checkpoint is mapped,
#     then snapshot-end and the checkpoint before the previous one is
#     deleted;
#   * after the last cycle the guests stop, and the last snapshot is
#     checked once more, quiet (invariant 1);
#   * nbdkit's VmRSS is sampled every SAMPLE seconds and printed.
#
# Exit 0 if there were no errors, no mismatches and memory stayed flat
# (growth from the start of the second cycle to the end at most
# max(20 MiB, 10 %)), else 1.

import argparse
import hashlib
import os
import random
import sys
import threading
import time

import nbd

# The tests' Python library: the control client and the pause gate.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests"))
from fleece_lib import MiB, Ctl, PauseGate, log          # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {"read": 0, "write": 0, "zero": 0, "trim": 0,
                    "verify": 0, "snapread": 0}
        self.bytes = {"read": 0, "write": 0, "snapread": 0}
        self.errors = []            # (where, message)
        self.mismatches = []        # invariant violations

    def add(self, op, nbytes=0):
        with self.lock:
            self.ops[op] += 1
            if op in self.bytes:
                self.bytes[op] += nbytes

    def error(self, where, msg):
        with self.lock:
            self.errors.append((where, msg))
        log("ERROR %s: %s" % (where, msg))

    def mismatch(self, where, msg):
        with self.lock:
            self.mismatches.append((where, msg))
        log("MISMATCH %s: %s" % (where, msg))


class Gate(PauseGate):
    """Lets the controller park every guest between two requests."""

    def checkpoint(self):
        """Called by a guest between requests.  Returns False to stop."""
        return self.between() is not None

    def pause(self, timeout=60):
        if not super().pause(timeout):
            raise RuntimeError("guests did not pause within %d s" % timeout)

    def finish(self):
        self.stop()


SIZES = [4096, 8192, 16384, 65536, 131072, 262144]


def guest(idx, args, gate, stats, noise):
    rng = random.Random(args.seed * 1000 + idx)
    slice_len = args.size // args.clients
    slice_start = idx * slice_len
    h = nbd.NBD()
    h.set_handle_name("guest%d" % idx)
    try:
        h.connect_uri(args.live)
    except nbd.Error as e:
        stats.error("guest%d connect" % idx, str(e))
        gate.leave()
        return
    while gate.checkpoint():
        n = rng.choice(SIZES)
        kind = rng.random()
        try:
            if kind < 0.5:
                off = rng.randrange(0, args.size - n + 1, 4096)
                h.pread(n, off)
                stats.add("read", n)
                continue
            off = slice_start + rng.randrange(0, slice_len - n + 1, 4096)
            if kind < 0.9:
                p = rng.randrange(0, len(noise) - n)
                data = noise[p:p + n]
                h.pwrite(data, off)
                stats.add("write", n)
            elif kind < 0.96:
                h.zero(n, off)
                stats.add("zero")
                data = bytes(n)
            else:
                h.trim(n, off)
                stats.add("trim")
                data = None     # contents after trim are unspecified
            if data is not None and rng.random() < 0.1:
                got = h.pread(n, off)
                stats.add("verify")
                if got != data:
                    stats.mismatch("guest%d" % idx,
                                   "live read at %d+%d does not return the "
                                   "write just completed" % (off, n))
            if rng.random() < 0.01:
                h.flush()
        except nbd.Error as e:
            stats.error("guest%d" % idx, str(e))
    try:
        h.shutdown()
    except nbd.Error:
        pass


def sha_region(h, off, length):
    d = hashlib.sha256()
    pos = off
    while pos < off + length:
        n = min(4 * MiB, off + length - pos)
        d.update(h.pread(n, pos))
        pos += n
    return d.hexdigest()


def snap_reader(args, model, stop, stats, cycle):
    """Reads the active snapshot until stop is set."""
    rng = random.Random(args.seed * 7 + cycle)
    h = nbd.NBD()
    try:
        h.connect_uri(args.snap)
        while not stop.is_set():
            n = rng.choice([65536, 262144, MiB])
            off = rng.randrange(0, args.size - n + 1, 4096)
            h.pread(n, off)
            stats.add("snapread", n)
            off, want = rng.choice(model)
            got = sha_region(h, off, MiB)
            stats.add("snapread", MiB)
            if got != want:
                stats.mismatch("snapshot reader, cycle %d" % cycle,
                               "region %d differs from the snapshot point"
                               % off)
        h.shutdown()
    except nbd.Error as e:
        stats.error("snapshot reader, cycle %d" % cycle, str(e))


def delta_changed(args, name):
    """Bytes reported as data by the delta view since checkpoint name."""
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(args.delta_fmt % name)
    seen = [0, 0]               # bytes described, bytes of data

    def cb(metacontext, offset, entries, err):
        for i in range(0, len(entries), 2):
            seen[0] += entries[i]
            if entries[i + 1] & 3 == 0:
                seen[1] += entries[i]
        return 0

    off = 0
    while off < args.size:
        before = seen[0]
        h.block_status(min(1 << 30, args.size - off), off, cb)
        if seen[0] == before:
            raise RuntimeError("block status made no progress")
        off += seen[0] - before
    h.shutdown()
    return seen[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--cycle", type=float, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--regions", type=int, default=16)
    ap.add_argument("--sample", type=float, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.live = "nbd+unix:///?socket=%s" % args.sock
    args.snap = "nbd+unix:///snapshot?socket=%s" % args.sock
    args.delta_fmt = "nbd+unix:///snapshot/since/%s?socket=" + args.sock

    ctl = Ctl(args.ctl, timeout=60)
    stats = Stats()
    gate = Gate(args.clients)
    rng = random.Random(args.seed)
    noise = os.urandom(8 * MiB)
    samples = []                # (t, rss KiB, cycle, under load)
    cycle_no = [0]
    cycles = []                 # per-cycle records
    t0 = time.monotonic()
    done = threading.Event()

    def sampler():
        while True:
            try:
                r = rss_kib(args.pid)
            except (OSError, RuntimeError) as e:
                stats.error("rss sampler", str(e))
                return
            t = time.monotonic() - t0
            samples.append((t, r, cycle_no[0], not gate.stopping))
            with stats.lock:
                ops = dict(stats.ops)
            log("t=%6.1f s  rss=%7.1f MiB  cycle=%d  reads=%d writes=%d "
                "zeroes=%d trims=%d snapreads=%d errors=%d"
                % (t, r / 1024, cycle_no[0], ops["read"], ops["write"],
                   ops["zero"], ops["trim"], ops["snapread"],
                   len(stats.errors)))
            if done.wait(args.sample):
                return

    live = nbd.NBD()
    live.connect_uri(args.live)
    snap = None

    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    guests = [threading.Thread(target=guest,
                               args=(i, args, gate, stats, noise))
              for i in range(args.clients)]
    for g in guests:
        g.start()

    end_at = t0 + args.seconds
    prev_names = []
    model = None
    try:
        while True:
            cycle_no[0] += 1
            c = cycle_no[0]
            name = "c%d" % c
            # Quiesce, record the model, take the snapshot, resume.
            tp = time.monotonic()
            gate.pause()
            model = []
            for _ in range(args.regions):
                off = rng.randrange(0, args.size // MiB) * MiB
                model.append((off, sha_region(live, off, MiB)))
            r = ctl("snapshot-begin checkpoint=%s" % name)
            gate.resume()
            paused = time.monotonic() - tp
            if not r.get("ok"):
                stats.error("snapshot-begin cycle %d" % c, r.get("error"))
                break
            rec = {"cycle": c, "paused_s": paused}
            stop = threading.Event()
            rd = threading.Thread(target=snap_reader,
                                  args=(args, model, stop, stats, c))
            rd.start()
            # The last cycle takes whatever is left (up to 1.5 cycles).
            remaining = end_at - time.monotonic()
            last = remaining < 1.5 * args.cycle
            time.sleep(max(0.0, remaining if last else args.cycle))
            stop.set()
            rd.join()
            if last:
                # Stop the load first: the last snapshot is checked
                # with nothing running.
                try:
                    samples.append((time.monotonic() - t0,
                                    rss_kib(args.pid), c, True))
                except (OSError, RuntimeError) as e:
                    stats.error("rss", str(e))
                gate.finish()
                for g in guests:
                    g.join()
            # Invariant 1 on the recorded regions.
            snap = nbd.NBD()
            snap.connect_uri(args.snap)
            bad = 0
            for off, want in model:
                if sha_region(snap, off, MiB) != want:
                    bad += 1
                    stats.mismatch("cycle %d" % c, "snapshot region at %d "
                                   "differs from the snapshot point" % off)
            snap.shutdown()
            rec["regions_ok"] = "%d/%d" % (len(model) - bad, len(model))
            if prev_names:
                try:
                    rec["delta_mib"] = delta_changed(args, prev_names[-1]) / MiB
                except (nbd.Error, RuntimeError) as e:
                    stats.error("delta view cycle %d" % c, str(e))
            s = ctl("status")
            if s.get("ok"):
                rec["copied"] = s["snapshot"]["clusters_copied"]
                rec["target_mib"] = s["snapshot"]["target_bytes"] / MiB
                if s["snapshot"]["broken"] is not None:
                    stats.error("cycle %d" % c, "snapshot broken: %s"
                                % s["snapshot"]["broken"])
            r = ctl("snapshot-end")
            if not r.get("ok"):
                stats.error("snapshot-end cycle %d" % c, r.get("error"))
            prev_names.append(name)
            if len(prev_names) > 2:
                old = prev_names.pop(0)
                r = ctl("checkpoint-delete %s" % old)
                if not r.get("ok"):
                    stats.error("checkpoint-delete %s" % old, r.get("error"))
            cycles.append(rec)
            log("cycle %d: paused %.3f s, clusters copied %s, target %.1f "
                "MiB, delta since previous %s MiB, regions %s"
                % (c, paused, rec.get("copied"), rec.get("target_mib", 0),
                   "%.1f" % rec["delta_mib"] if "delta_mib" in rec else "-",
                   rec["regions_ok"]))
            if last:
                break
    except Exception as e:          # report, never hang
        stats.error("controller", repr(e))
        gate.finish()
        for g in guests:
            g.join()
    elapsed = time.monotonic() - t0
    done.set()
    st.join()
    try:
        samples.append((elapsed, rss_kib(args.pid), cycle_no[0], False))
    except (OSError, RuntimeError) as e:
        stats.error("rss", str(e))
    final_status = ctl("status")

    # ---- report --------------------------------------------------------
    ok = True
    log("")
    log("== load report")
    log("duration %.1f s, %d guest connections, %d snapshot cycles of %g s"
        % (elapsed, args.clients, len(cycles), args.cycle))
    ops, by = stats.ops, stats.bytes
    log("guest ops: %d reads (%.1f MiB/s), %d writes (%.1f MiB/s), %d zeroes,"
        " %d trims, %d read-back checks"
        % (ops["read"], by["read"] / MiB / elapsed, ops["write"],
           by["write"] / MiB / elapsed, ops["zero"], ops["trim"],
           ops["verify"]))
    log("snapshot reads: %d (%.1f MiB)" % (ops["snapread"],
                                          by["snapread"] / MiB))
    if cycles:
        log("writer pause per cycle: max %.3f s"
            % max(r["paused_s"] for r in cycles))
    log("errors: %d" % len(stats.errors))
    for w, m in stats.errors[:10]:
        log("  %s: %s" % (w, m))
    if stats.errors:
        ok = False
    log("invariant violations: %d (every cycle: %d recorded 1 MiB regions "
        "read back from its snapshot; guests read back 10%% of their "
        "writes)" % (len(stats.mismatches), args.regions))
    for w, m in stats.mismatches[:10]:
        log("  %s: %s" % (w, m))
    if stats.mismatches:
        ok = False
    if not final_status.get("ok") or final_status["snapshot"]["active"]:
        log("final status unexpected: %s" % final_status)
        ok = False

    loaded = [s for s in samples if s[3]]
    if loaded:
        first = samples[0][1]
        mx = max(s[1] for s in samples)
        last = loaded[-1][1]
        base_samples = [s for s in loaded if s[2] >= 2]
        base = base_samples[0][1] if base_samples else first
        growth = last - base
        limit = max(20 * 1024, base // 10)
        log("nbdkit VmRSS: first %.1f MiB, at the start of cycle 2 %.1f MiB,"
            " last under load %.1f MiB, max %.1f MiB, after the load %.1f "
            "MiB (%d samples)"
            % (first / 1024, base / 1024, last / 1024, mx / 1024,
               samples[-1][1] / 1024, len(samples)))
        flat = growth <= limit and len(base_samples) > 0
        log("memory: growth from cycle 2 to the end of the load %+.1f MiB, "
            "limit %.1f "
            "MiB: %s" % (growth / 1024, limit / 1024,
                         "FLAT" if flat else
                         ("GROWING" if base_samples else
                          "UNDECIDED (run too short for 2 cycles)")))
        if not flat:
            ok = False
    log("verdict: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

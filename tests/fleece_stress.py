#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-fleece-stress.sh: concurrent writers on the live export,
# concurrent snapshot readers and nbdcopy on the snapshot export, and
# snapshot-begin/snapshot-end cycles, all checked against a byte model.
#
# The disk is cut into runs of 1-24 4K blocks; each run belongs to one
# writer and neighbouring runs to different writers, so writers share
# clusters (several writers change one 64K cluster at the same time) but
# never bytes, and the final content is determined.
#
# Two kinds of cycle alternate:
#   quiesced: writers pause, the model is recorded, snapshot-begin,
#     writers resume; every snapshot read (readers and nbdcopy) must equal
#     the recorded model exactly.
#   running: writers never stop.  Each write puts whole 4K blocks of
#     (writer, block, generation) records; a block's generations only
#     grow.  Before snapshot-begin is sent, the last completed generation
#     of every block is recorded (lower bound); after the reply arrives,
#     the last started one (upper bound).  In the snapshot every block
#     must hold one generation (never torn) within the bounds, all readers
#     must see the same one, and blocks of one cluster written by one
#     write must be all in or all out (no mix within a cluster).
# Readers keep reading across snapshot-end: a read issued after the reply
# must fail, and any read that succeeds must still return snapshot data.

import argparse
import os
import random
import struct
import subprocess
import sys
import threading
import time

import nbd

from fleece_lib import Ctl, connect_uri as connect

BLK = 4096
MAGIC = b"FLEECE\x00\x01"
REC = struct.Struct("<8sIIQQ")          # magic, writer, block, gen, zero
REC_PER_BLK = BLK // REC.size

failures = []
fail_lock = threading.Lock()
stop_all = threading.Event()


def fail(msg):
    with fail_lock:
        failures.append(msg)
        print("FAIL: " + msg, file=sys.stderr, flush=True)
    stop_all.set()


def log(msg):
    print(msg, flush=True)


def hexs(b):
    return bytes(b[:16]).hex(" ")


def first_diff(a, b):
    for i in range(0, len(a), BLK):
        if a[i:i + BLK] != b[i:i + BLK]:
            for j in range(i, min(i + BLK, len(a))):
                if a[j] != b[j]:
                    return j
    return None


def ctl(path, line):
    return Ctl(path, timeout=60).query(line)


def gen_block(writer, block, gen):
    return REC.pack(MAGIC, writer, block, gen, 0) * REC_PER_BLK


def parse_block(data):
    """(writer, block, gen) if data is one record repeated, else None."""
    rec = data[:REC.size]
    if rec[:8] != MAGIC or data != rec * REC_PER_BLK:
        return None
    _, w, b, g, _ = REC.unpack(rec)
    return w, b, g


class Shared:
    """State shared by the controller, writers and readers."""

    def __init__(self, a):
        self.a = a
        self.size = a.size
        self.nblocks = a.size // BLK
        self.model = bytearray(a.size)
        self.started = [0] * self.nblocks       # gen of the last started write
        self.completed = [0] * self.nblocks     # gen of the last completed write
        self.mode = "random"
        self.pause = threading.Event()
        self.paused = threading.Semaphore(0)
        self.resume = threading.Event()
        self.writes = 0
        self.gen_log = []                       # (writer, gen, blocks) this phase


class Writer(threading.Thread):
    def __init__(self, sh, k, runs, seed):
        super().__init__(daemon=True)
        self.sh, self.k, self.runs = sh, k, runs
        self.rng = random.Random(seed)
        self.gen = 0
        self.h = connect(sh.a.live)

    def run(self):
        sh = self.sh
        try:
            while not stop_all.is_set():
                if sh.pause.is_set():
                    sh.paused.release()
                    sh.resume.wait()
                    continue
                if sh.mode == "gen":
                    self.gen_write()
                else:
                    self.random_op()
                sh.writes += 1
        except nbd.Error as e:
            fail(f"writer {self.k}: live I/O failed: {e}")
        except Exception as e:                  # noqa: BLE001
            fail(f"writer {self.k}: {type(e).__name__}: {e}")

    def pick(self):
        start, n = self.rng.choice(self.runs)
        return start, n

    def random_op(self):
        sh, rng = self.sh, self.rng
        start, n = self.pick()
        lo, hi = start * BLK, (start + n) * BLK
        r = rng.random()
        if r < 0.5:                             # unaligned
            o = rng.randrange(lo, hi)
            ln = rng.randint(1, min(hi - o, rng.choice([512, 4096, 65536, hi])))
        else:                                   # block aligned
            b = rng.randrange(start, start + n)
            o = b * BLK
            ln = rng.randint(1, start + n - b) * BLK
        op = rng.random()
        if op < 0.70:
            data = rng.randbytes(ln)
            self.h.pwrite(data, o, nbd.CMD_FLAG_FUA if rng.random() < 0.1 else 0)
            sh.model[o:o + ln] = data
        elif op < 0.85:
            self.h.zero(ln, o, nbd.CMD_FLAG_NO_HOLE if rng.random() < 0.3 else 0)
            sh.model[o:o + ln] = bytes(ln)
        elif op < 0.93:
            # A trim leaves the range unchanged or zero; read back what
            # the disk chose, check it, and take it into the model.
            self.h.trim(ln, o)
            got = self.h.pread(ln, o)
            old = sh.model[o:o + ln]
            if got != old and got != bytes(ln):
                for i in range(ln):
                    if got[i] != old[i] and got[i] != 0:
                        fail(f"writer {self.k}: after trim off={o} len={ln}: "
                             f"byte {o + i} is {got[i]:#x}, expected "
                             f"{old[i]:#x} (unchanged) or 0")
                        return
            sh.model[o:o + ln] = got
        else:                                   # read back own bytes
            got = self.h.pread(ln, o)
            exp = sh.model[o:o + ln]
            if got != exp:
                j = first_diff(got, exp)
                fail(f"writer {self.k}: live read off={o} len={ln}: at "
                     f"{o + j} expected [{hexs(exp[j:])}] got [{hexs(got[j:])}]"
                     f" (lost or torn live write)")

    def gen_write(self):
        sh, rng = self.sh, self.rng
        start, n = self.pick()
        b0 = rng.randrange(start, start + n)
        nb = rng.randint(1, min(start + n - b0, 16))
        self.gen += 1
        g = self.gen
        blocks = range(b0, b0 + nb)
        data = b"".join(gen_block(self.k, b, g) for b in blocks)
        for b in blocks:
            sh.started[b] = g
        self.h.pwrite(data, b0 * BLK)
        for b in blocks:
            sh.completed[b] = g
        sh.model[b0 * BLK:(b0 + nb) * BLK] = data
        if nb > 1:
            sh.gen_log.append((self.k, g, b0, nb))


class Checker:
    """Decides whether snapshot data is right, for one cycle."""

    def __init__(self, sh, kind, image=None, base_img=None, base=None,
                 lower=None, upper=None, owner=None):
        self.sh, self.kind = sh, kind
        self.image = image              # quiesced: the snapshot image
        self.base_img = base_img        # running: model at phase start
        self.base, self.lower, self.upper = base, lower, upper
        self.owner = owner
        self.seen = {}                  # running: block -> gen first seen
        self.seen_by = {}

    def check(self, who, off, data):
        """None if data (read at off) is right, else a message."""
        if self.kind == "quiesced":
            exp = self.image[off:off + len(data)]
            if data == exp:
                return None
            j = first_diff(data, exp)
            return (f"{who}: snapshot read off={off} len={len(data)}: at "
                    f"offset {off + j} (cluster {(off + j) // self.sh.a.cluster}) "
                    f"expected [{hexs(exp[j:])}] got [{hexs(data[j:])}]")
        assert off % BLK == 0 and len(data) % BLK == 0
        for i in range(0, len(data), BLK):
            b = (off + i) // BLK
            m = self.check_block(who, b, data[i:i + BLK])
            if m:
                return m
        return None

    def gen_of(self, b, d):
        """The generation block b shows, or an error string."""
        if d == self.base_img[b * BLK:(b + 1) * BLK]:
            return self.base[b]
        p = parse_block(d)
        if p is None:
            return (f"torn or foreign 4K block: starts [{hexs(d)}], "
                    f"[{hexs(d[2048:])}] in the middle")
        w, bb, g = p
        if bb != b or w != self.owner[b]:
            return f"block holds writer {w}'s block {bb} (owner {self.owner[b]})"
        if g <= self.base[b]:
            return f"generation {g} is older than the phase start ({self.base[b]})"
        return g

    def check_block(self, who, b, d):
        g = self.gen_of(b, d)
        where = (f"{who}: snapshot block {b} (offset {b * BLK}, cluster "
                 f"{b * BLK // self.sh.a.cluster})")
        if isinstance(g, str):
            return f"{where}: {g}"
        lo, hi = self.lower[b], self.upper[b]
        if not lo <= g <= hi:
            return (f"{where}: shows generation {g}, expected {lo}..{hi} "
                    f"(completed before snapshot-begin .. started before "
                    f"its reply)")
        prev = self.seen.setdefault(b, g)
        if prev != g:
            return (f"{where}: shows generation {g}, but "
                    f"{self.seen_by.get(b)} saw {prev} (not one snapshot)")
        self.seen_by.setdefault(b, who)
        return None

    def check_atomic(self, snap):
        """Blocks of one cluster written by one write: all in or all out."""
        cl = self.sh.a.cluster
        for (k, g, b0, nb) in self.sh.gen_log:
            by_cluster = {}
            for b in range(b0, b0 + nb):
                by_cluster.setdefault(b * BLK // cl, []).append(b)
            for c, blocks in by_cluster.items():
                if len(blocks) < 2:
                    continue
                ins = set()
                for b in blocks:
                    gb = self.gen_of(b, snap[b * BLK:(b + 1) * BLK])
                    ins.add(isinstance(gb, int) and gb >= g)
                if len(ins) > 1:
                    return (f"cluster {c}: writer {k}'s write of generation "
                            f"{g} to blocks {blocks[0]}..{blocks[-1]} is "
                            f"only partly in the snapshot (mix of old and "
                            f"new data within a cluster)")
        return None


class Reader(threading.Thread):
    def __init__(self, sh, idx, checker, cyc, seed):
        super().__init__(daemon=True)
        self.sh, self.idx, self.checker, self.cyc = sh, idx, checker, cyc
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.reads = 0
        self.h = connect(sh.a.snap)

    def run(self):
        sh, rng, cyc = self.sh, self.rng, self.cyc
        who = f"reader {self.idx} (cycle {cyc.n})"
        try:
            while not self.stop.is_set() and not stop_all.is_set():
                if self.checker.kind == "quiesced":
                    n = rng.choice([1, 512, 4096, 65536, 262144])
                    n = rng.randint(1, n)
                    o = rng.randrange(0, sh.size - n + 1)
                else:
                    nb = rng.randint(1, 64)
                    o = rng.randrange(0, sh.nblocks - nb + 1) * BLK
                    n = nb * BLK
                after_end = cyc.ended.is_set()
                try:
                    d = self.h.pread(n, o)
                except nbd.Error as e:
                    if cyc.ending.is_set():
                        return                  # expected once ending
                    fail(f"{who}: snapshot read off={o} len={n} failed "
                         f"while the snapshot is active: {e}")
                    return
                self.reads += 1
                if after_end:
                    fail(f"{who}: snapshot read off={o} len={n} issued after "
                         f"the snapshot-end reply succeeded")
                    return
                m = self.checker.check(who, o, d)
                if m:
                    fail(m + (" (read overlapping snapshot-end)"
                              if cyc.ending.is_set() else ""))
                    return
        except Exception as e:                  # noqa: BLE001
            fail(f"{who}: {type(e).__name__}: {e}")


class Cycle:
    def __init__(self, n):
        self.n = n
        self.ending = threading.Event()
        self.ended = threading.Event()


def make_runs(rng, nblocks, W):
    owner = [0] * nblocks
    runs = [[] for _ in range(W)]
    b, prev = 0, rng.randrange(W)
    while b < nblocks:
        n = min(rng.randint(1, 24), nblocks - b)
        k = (prev + rng.randint(1, W - 1)) % W
        runs[k].append((b, n))
        for i in range(b, b + n):
            owner[i] = k
        b += n
        prev = k
    return owner, runs


def pause_writers(sh, writers):
    """Stop the writers between two operations; False on failure."""
    sh.resume.clear()
    sh.pause.set()
    deadline = time.time() + 60
    got = 0
    while got < len(writers):
        if sh.paused.acquire(timeout=0.2):
            got += 1
        elif stop_all.is_set():
            return False
        elif time.time() > deadline:
            fail("writers did not pause within 60 s (a live write hangs?)")
            return False
    return True


def resume_writers(sh):
    sh.pause.clear()
    sh.resume.set()


def run_cycle(a, sh, writers, n, kind, owner, cycle_seconds):
    cyc = Cycle(n)
    if kind == "quiesced":
        if not pause_writers(sh, writers):
            return
        image = bytes(sh.model)
        r = ctl(a.ctl, "snapshot-begin")
        if not r.get("ok"):
            fail(f"cycle {n}: snapshot-begin: {r}")
            resume_writers(sh)
            return
        sh.mode = "random"
        resume_writers(sh)
        checker = Checker(sh, kind, image=image)
    else:
        if not pause_writers(sh, writers):
            return
        base_img = bytes(sh.model)
        base = list(sh.completed)
        sh.gen_log = []
        sh.mode = "gen"
        resume_writers(sh)
        time.sleep(0.3)                         # let generations pile up
        lower = list(sh.completed)
        r = ctl(a.ctl, "snapshot-begin")
        upper = list(sh.started)
        if not r.get("ok"):
            fail(f"cycle {n}: snapshot-begin: {r}")
            return
        checker = Checker(sh, kind, base_img=base_img, base=base,
                          lower=lower, upper=upper, owner=owner)
    t0 = time.time()
    writes0 = sh.writes

    try:
        stale = connect(a.snap)
    except nbd.Error as e:
        fail(f"cycle {n}: cannot open the snapshot export after "
             f"snapshot-begin: {e}")
        return
    readers = [Reader(sh, i, checker, cyc, a.seed * 1000 + n * 10 + i)
               for i in range(a.readers)]
    for r_ in readers:
        r_.start()
    copy = os.path.join(a.workdir, f"copy-{n}.img")
    nbdcopy = subprocess.Popen(["nbdcopy", f"--connections={a.copy_conns}",
                                a.snap, copy],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # Let everything run, then check the status mid-flight.
    while time.time() - t0 < cycle_seconds and not stop_all.is_set():
        time.sleep(0.1)
    try:
        out, _ = nbdcopy.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        nbdcopy.kill()
        fail(f"cycle {n}: nbdcopy of the snapshot did not finish in 120 s")
        return
    if nbdcopy.returncode != 0:
        fail(f"cycle {n}: nbdcopy failed ({nbdcopy.returncode}): "
             f"{out.decode(errors='replace')}")
        return
    st = ctl(a.ctl, "status")
    s = st.get("snapshot") or {}
    if not st.get("ok") or s.get("active") is not True or \
            s.get("broken") is not None:
        fail(f"cycle {n}: status while active: {st}")
    copied = s.get("clusters_copied")

    # snapshot-end while the readers are still reading.
    cyc.ending.set()
    r = ctl(a.ctl, "snapshot-end")
    cyc.ended.set()
    if not r.get("ok"):
        fail(f"cycle {n}: snapshot-end: {r}")
    time.sleep(0.2)
    for r_ in readers:
        r_.stop.set()
    for r_ in readers:
        r_.join(30)
        if r_.is_alive():
            fail(f"cycle {n}: reader {r_.idx} hangs after snapshot-end")
    try:
        stale.pread(BLK, 0)
        fail(f"cycle {n}: a snapshot connection opened during the snapshot "
             f"could still read after snapshot-end")
    except nbd.Error:
        pass
    try:
        connect(a.snap)
        fail(f"cycle {n}: the snapshot export opened after snapshot-end")
    except nbd.Error:
        pass

    # The copy made by nbdcopy (several connections) is the snapshot.
    with open(copy, "rb") as f:
        img = f.read()
    os.unlink(copy)
    if len(img) != sh.size:
        fail(f"cycle {n}: nbdcopy produced {len(img)} bytes, expected {sh.size}")
    else:
        if kind == "quiesced":
            m = checker.check("nbdcopy", 0, img)
        else:
            m = None
            for b in range(sh.nblocks):
                m = checker.check_block("nbdcopy", b, img[b * BLK:(b + 1) * BLK])
                if m:
                    break
            m = m or checker.check_atomic(img)
        if m:
            fail(f"cycle {n}: {m}")

    if kind == "gen":
        # Back to random writes for the next cycle.
        if pause_writers(sh, writers):
            sh.mode = "random"
            resume_writers(sh)
        gens = sum(1 for b in range(sh.nblocks) if lower[b] != upper[b])
        extra = (f", {gens} blocks had a write in flight at snapshot-begin, "
                 f"{len(checker.seen)} blocks checked by readers")
    else:
        extra = ""
    log(f"cycle {n} ({kind}): {time.time() - t0:.1f} s, "
        f"{sh.writes - writes0} live ops, "
        f"{sum(r_.reads for r_ in readers)} snapshot reads, "
        f"clusters_copied={copied}{extra}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--live", required=True)
    p.add_argument("--snap", required=True)
    p.add_argument("--ctl", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--readers", type=int, default=3)
    p.add_argument("--copy-conns", type=int, default=4)
    p.add_argument("--cluster", type=int, default=65536)
    a = p.parse_args()
    log(f"seed {a.seed}, {a.seconds:g} s, {a.writers} writers, "
        f"{a.readers} readers + nbdcopy -C {a.copy_conns}")

    rng = random.Random(a.seed)
    h = connect(a.live)
    a.size = h.get_size()
    sh = Shared(a)

    # Initial content, written through the live export.
    init = bytearray(rng.randbytes(a.size))
    for o in range(0, a.size, 1 << 20):
        if rng.random() < 0.25:
            init[o:o + (1 << 20)] = bytes(1 << 20)
    for o in range(0, a.size, 4 << 20):
        h.pwrite(bytes(init[o:o + (4 << 20)]), o)
    h.flush()
    sh.model[:] = init

    owner, runs = make_runs(rng, sh.nblocks, a.writers)
    writers = [Writer(sh, k, runs[k], a.seed * 100 + k)
               for k in range(a.writers)]
    for w in writers:
        w.start()

    deadline = time.time() + a.seconds
    cycle_seconds = max(1.0, min(2.5, a.seconds / 7))
    n = 0
    while not stop_all.is_set():
        kind = "quiesced" if n % 2 == 0 else "gen"
        run_cycle(a, sh, writers, n, kind, owner, cycle_seconds)
        n += 1
        if n >= 2 and time.time() + cycle_seconds > deadline:
            break

    # Final: writers stop, the whole live disk equals the model.
    if not stop_all.is_set() and pause_writers(sh, writers):
        got = b"".join(h.pread(min(4 << 20, a.size - o), o)
                       for o in range(0, a.size, 4 << 20))
        if got != bytes(sh.model):
            j = first_diff(got, sh.model)
            fail(f"final live disk: at offset {j} (block {j // BLK}, writer "
                 f"{owner[j // BLK]}) expected [{hexs(sh.model[j:])}] got "
                 f"[{hexs(got[j:])}]")
        else:
            log(f"final live disk matches the model after {sh.writes} live ops "
                f"in {n} cycles")
        st = ctl(a.ctl, "status")
        if not st.get("ok") or st["snapshot"].get("active") is not False:
            fail(f"final status: {st}")
    stop_all.set()
    resume_writers(sh)
    if failures:
        sys.stdout.flush()
        print(f"{len(failures)} failure(s), seed {a.seed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

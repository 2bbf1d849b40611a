#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# What the stream filter's test driver (stream_test.py) is built from:
# the layout of the test disk, the servers (base and stream), the
# clients that drive the disk against a byte model, and the checks of
# the whole disk.
#
# Layout of the 16 MiB disk (64K clusters), so that the model stays
# exact with several clients:
#   [0, 1M)    never touched by clients (the job, which goes in order,
#              is still there when the base-outage checks run)
#   [1M, 7M)   clusters shared by the clients: client i owns the 4K
#              blocks b with b % N == i (partial-cluster requests)
#   [7M, 13M)  client i owns the clusters c with c % N == i
#              (whole-cluster writes, zeroes, trims, and partial ones)
#   [13M, 16M) read-only: reads of any size, checked against the base

import os
import random
import subprocess
import threading
import time

import nbd

from fleece_lib import (MiB, Ctl, close, connect, expect_same, fail,
                        holey_pattern, kill_server, pattern)
from job_lib import listening

SIZE = 16 * MiB
CL = 64 * 1024
BLK = 4096
U_END, A_END, B_END, C_END = 1 * MiB, 7 * MiB, 13 * MiB, 16 * MiB


class Env:
    """The files and sockets of one run, all in directory d."""

    def __init__(self, d, filter_so):
        self.dir = d
        self.filter = filter_so
        self.base_img = os.path.join(d, "base.img")
        self.local = os.path.join(d, "local.img")
        self.state = os.path.join(d, "stream.state")
        self.base_sock = os.path.join(d, "base.sock")
        self.sock = os.path.join(d, "nbd.sock")
        self.ctl_path = os.path.join(d, "ctl.sock")
        self.ctl = Ctl(self.ctl_path)

    def fresh(self, seed):
        """An empty local disk, no state file, and a new base: 16 MiB of
        seeded data with about 30% holes (whole clusters and runs inside
        clusters read as zeroes).  Returns the base's bytes."""
        for path in (self.local, self.state, self.state + ".lock"):
            if os.path.exists(path):
                os.unlink(path)
        with open(self.local, "wb") as f:
            f.truncate(SIZE)
        b = holey_pattern(seed, SIZE, CL, long_hole=False)
        with open(self.base_img, "wb") as f:
            f.write(b)
        return b

    def status(self):
        return self.ctl.ok("status")["stream"]

    def wait_state(self, want, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            s = self.status()
            if s["state"] == want:
                return s
            time.sleep(0.05)
        fail("stream state did not become %s within %d s: %s"
             % (want, timeout, self.status()))

    def read_disk(self, start=0):
        h = connect(self.sock)
        got = b"".join(h.pread(MiB, o) for o in range(start, SIZE, MiB))
        close(h)
        return got

    def check_whole(self, model, what, start=0):
        expect_same(self.read_disk(start), bytes(model[start:]), what,
                    base=start)

    def check_file(self, model, what):
        with open(self.local, "rb") as f:
            expect_same(f.read(), bytes(model), what)


class Server:
    """nbdkit in the foreground, logging to logname in the run's
    directory.  env: extra environment variables."""

    def __init__(self, e, sock, argv, logname, env=None):
        self.e = e
        self.sock = sock
        self.argv = argv
        self.log = os.path.join(e.dir, logname)
        self.pidf = sock + ".pid"
        self.env = env
        self.proc = None

    def start(self, extra=(), wait_ctl=False):
        ctl = self.e.ctl_path
        for path in (self.sock, self.pidf, ctl if wait_ctl else None):
            if path and os.path.exists(path):
                os.unlink(path)
        logf = open(self.log, "a")
        logf.write("\n===== start %s %s\n" % (time.strftime("%H:%M:%S"),
                                              self.env or ""))
        logf.flush()
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        self.proc = subprocess.Popen(
            ["nbdkit", "-f", "-v", "-U", self.sock, "-P", self.pidf]
            + self.argv + list(extra), stdout=logf, stderr=subprocess.STDOUT,
            env=env)
        logf.close()
        t0 = time.time()
        while time.time() - t0 < 10:
            if self.proc.poll() is not None:
                fail("nbdkit exited during start-up (%s); log %s"
                     % (self.proc.returncode, self.log))
            if os.path.exists(self.pidf) and listening(self.sock) \
               and (not wait_ctl or listening(ctl)):
                return
            time.sleep(0.02)
        fail("nbdkit did not start within 10 s; log %s" % self.log)

    def kill(self):
        kill_server(self.pidf)
        self.proc.wait()
        self.proc = None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("nbdkit did not stop within 20 s; log %s" % self.log)
        self.proc = None


class Tracker:
    """What a power loss may undo, as the clients saw it: for each
    cluster the time its first request completed (a read or a write of
    any part of it populates it), every flush that completed (began,
    completed), and for each cluster the time a write with FUA to it
    first completed.  Times are time.monotonic(), taken before a
    request is sent and after its reply came.  lock guards all three."""

    def __init__(self):
        self.lock = threading.Lock()
        self.first = {}
        self.flushes = []
        self.fua = {}

    def touched(self, off, n, t, fua=False):
        with self.lock:
            for c in range(off // CL, (off + n - 1) // CL + 1):
                self.first.setdefault(c, t)
                if fua:
                    self.fua.setdefault(c, t)

    def flushed(self, began, completed):
        with self.lock:
            self.flushes.append((began, completed))

    def last_flush(self):
        """(began, completed) of the completed flush that began last,
        or None."""
        with self.lock:
            return max(self.flushes, default=None)


class Clients:
    """N clients on their own connections doing seeded operations in
    the bytes they own (see the layout above) and checking every read
    against the model.  A request that failed (the server was killed)
    leaves its range uncertain: old or new, decided by reading it after
    the restart (settle()).  flushes: (lo, hi), each client also sends
    a flush every lo to hi seconds, and sends a tenth of its writes with
    FUA (no flush after the time.monotonic() flush_until if set);
    tracker: a Tracker to tell; pace: seconds between two requests of a
    client."""

    def __init__(self, e, model, seed, n, flushes=None, tracker=None,
                 pace=0.001):
        self.e = e
        self.pace = pace
        self.flush_until = None
        self.model = model
        self.seed = seed
        self.n = n
        self.flushes = flushes
        self.tracker = tracker
        self.stopping = False
        self.errors = []
        self.bad = []                # reads that differed: always wrong
        self.uncertain = []          # (off, old bytes, new bytes)
        self.ops = 0
        self.nflush = 0
        self.lock = threading.Lock()
        self.threads = []

    def start(self):
        self.stopping = False
        self.threads = [threading.Thread(target=self._run,
                                         args=(i, self.seed * 100 + i),
                                         daemon=True)
                        for i in range(self.n)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(30)
        self.threads = []

    def _choose(self, rng, i):
        r = rng.random()
        if r < 0.45:
            # Region A: own 4K blocks in shared clusters.
            b = rng.randrange(U_END // BLK + i, A_END // BLK, self.n)
            off = b * BLK
            if rng.random() < 0.5:
                s = rng.randrange(0, BLK, 512)
                return off + s, rng.randrange(512, BLK - s + 1, 512)
            return off, BLK
        if r < 0.85:
            # Region B: own whole clusters.
            first = A_END // CL
            c = rng.randrange(first + (i - first) % self.n, B_END // CL,
                              self.n)
            if rng.random() < 0.5:
                return c * CL, CL
            s = rng.randrange(0, CL)
            return c * CL + s, rng.randint(1, CL - s)
        # Region C: read only.
        off = rng.randrange(B_END, C_END)
        return off, min(rng.randint(1, MiB), C_END - off)

    def _flush(self, h, i):
        t0 = time.monotonic()
        try:
            h.flush()
        except nbd.Error as e:
            if not self.stopping:
                self.errors.append("client %d: flush: %s" % (i, e))
            return False
        if self.tracker:
            self.tracker.flushed(t0, time.monotonic())
        with self.lock:
            self.nflush += 1
        return True

    def _run(self, i, seed):
        rng = random.Random(seed)
        try:
            h = connect(self.e.sock)
        except nbd.Error as e:
            self.errors.append("client %d: connect: %s" % (i, e))
            return
        k = 0
        if self.flushes:
            next_flush = time.monotonic() + rng.uniform(*self.flushes)
        while not self.stopping:
            now = time.monotonic()
            if self.flushes and now >= next_flush and (
                    self.flush_until is None or now < self.flush_until):
                if not self._flush(h, i):
                    break
                next_flush = time.monotonic() + rng.uniform(*self.flushes)
            off, n = self._choose(rng, i)
            kind = "read" if off >= B_END else rng.choice(
                ["read", "read", "write", "write", "zero", "trim"])
            k += 1
            fua = False
            if kind == "read":
                want = bytes(self.model[off:off + n])
                try:
                    got = h.pread(n, off)
                except nbd.Error as e:
                    self.errors.append("client %d: read %d+%d: %s"
                                       % (i, off, n, e))
                    break
                if got != want:
                    self.bad.append(
                        "client %d: read %d+%d differs from the model at +%d"
                        % (i, off, n, next(j for j in range(n)
                                            if got[j] != want[j])))
                    break
            else:
                old = bytes(self.model[off:off + n])
                new = (pattern(seed * 7919 + k, n) if kind == "write"
                       else bytes(n))
                fua = (self.flushes is not None and kind == "write"
                       and rng.random() < 0.1)
                try:
                    if kind == "write":
                        h.pwrite(new, off,
                                 nbd.CMD_FLAG_FUA if fua else 0)
                    elif kind == "zero":
                        h.zero(n, off)
                    else:
                        h.trim(n, off)
                except nbd.Error as e:
                    with self.lock:
                        self.uncertain.append((off, old, new))
                    if not self.stopping:
                        self.errors.append("client %d: %s %d+%d: %s"
                                           % (i, kind, off, n, e))
                    break
                self.model[off:off + n] = new
            if self.tracker:
                self.tracker.touched(off, n, time.monotonic(),
                                     kind == "write" and fua)
            with self.lock:
                self.ops += 1
            time.sleep(self.pace)
        try:
            close(h)
        except Exception:
            pass

    def settle(self):
        """After a crash: each uncertain range must read, in pieces
        aligned to 512 bytes of the disk, as its old or its new
        contents; the model takes it."""
        h = connect(self.e.sock)
        for off, old, new in self.uncertain:
            got = h.pread(len(old), off)
            bad = old_or_new(got, off, old, new)
            if bad:
                fail("after the crash, %d+%d is neither the old nor the new "
                     "contents of a request in flight at the crash (lost: "
                     "the old contents, an acknowledged write or the "
                     "base's)" % bad)
            self.model[off:off + len(old)] = got
        close(h)
        self.uncertain = []


def old_or_new(got, off, old, new):
    """None if got (the disk at off) reads, in every piece aligned to
    512 bytes of the disk, as old or as new; else (offset, length) of
    the first piece that is neither."""
    s = 0
    while s < len(got):
        e = min(len(got), (off + s) // 512 * 512 + 512 - off)
        if got[s:e] != old[s:e] and got[s:e] != new[s:e]:
            return off + s, e - s
        s = e
    return None

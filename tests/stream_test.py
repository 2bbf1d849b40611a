#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The stream filter (live restore) against a byte model: the local disk
# must always read as the base plus every guest write, zero and trim.
#
#   stream_test.py model ...   several clients at once (reads, partial
#       and whole-cluster writes, zeroes, trims, clusters shared between
#       clients) while the job runs slowly; pause/resume/set-speed; the
#       base killed and restarted mid-stream (EIO for unpopulated
#       clusters, whole-cluster writes go on, the job waits and
#       resumes); completion; a restart without stream-base passes
#       through.
#   stream_test.py crash ...   kill -9 of the server at random moments
#       while clients run, restart with the same state file, finish:
#       nothing acknowledged is lost, nothing is refilled from the base.
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

import argparse
import os
import random
import subprocess
import threading
import time

import nbd

from fleece_lib import (MiB, Ctl, check, close, connect, expect_same, fail,
                        holey_pattern, kill_server, log, pattern, run_main)

SIZE = 16 * MiB
CL = 64 * 1024
BLK = 4096
U_END, A_END, B_END, C_END = 1 * MiB, 7 * MiB, 13 * MiB, 16 * MiB

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["model", "crash"])
p.add_argument("--dir", required=True)
p.add_argument("--filter", required=True)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--trials", type=int, default=3)
p.add_argument("--clients", type=int, default=3)
p.add_argument("--seconds", type=float, default=4)
args = p.parse_args()

D = args.dir
BASE_IMG = os.path.join(D, "base.img")
LOCAL = os.path.join(D, "local.img")
STATE = os.path.join(D, "stream.state")
BASE_SOCK = os.path.join(D, "base.sock")
SOCK = os.path.join(D, "nbd.sock")
CTL_PATH = os.path.join(D, "ctl.sock")
ctl = Ctl(CTL_PATH)


def make_base(seed):
    """16 MiB of seeded data with about 30% holes (whole clusters and
    runs inside clusters read as zeroes)."""
    b = holey_pattern(seed, SIZE, CL, long_hole=False)
    with open(BASE_IMG, "wb") as f:
        f.write(b)
    return b


class Server:
    def __init__(self, sock, argv, logname):
        self.sock = sock
        self.argv = argv
        self.log = os.path.join(D, logname)
        self.pidf = sock + ".pid"
        self.proc = None

    def start(self, extra=(), wait_ctl=False):
        for path in (self.sock, self.pidf, CTL_PATH if wait_ctl else None):
            if path and os.path.exists(path):
                os.unlink(path)
        logf = open(self.log, "a")
        logf.write("\n===== start %s\n" % time.strftime("%H:%M:%S"))
        logf.flush()
        self.proc = subprocess.Popen(
            ["nbdkit", "-f", "-v", "-U", self.sock, "-P", self.pidf]
            + self.argv + list(extra), stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        t0 = time.time()
        while time.time() - t0 < 10:
            if self.proc.poll() is not None:
                fail("nbdkit exited during start-up (%s); log %s"
                     % (self.proc.returncode, self.log))
            if os.path.exists(self.pidf) and os.path.exists(self.sock) \
               and (not wait_ctl or os.path.exists(CTL_PATH)):
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


base_srv = Server(BASE_SOCK, ["-r", "file", BASE_IMG], "base.log")


def stream_srv(speed, with_base=True):
    argv = ["--filter=" + args.filter, "file", LOCAL,
            "stream-state=" + STATE, "stream-speed=" + speed,
            "control=" + CTL_PATH]
    if with_base:
        argv.append("stream-base=nbd+unix:///?socket=" + BASE_SOCK)
    return Server(SOCK, argv, "nbdkit.log")


class Clients:
    """N clients on their own connections doing seeded operations in
    the bytes they own (see the layout above) and checking every read
    against the model.  A request that failed (the server was killed)
    leaves its range uncertain: old or new, decided by reading it after
    the restart (settle())."""

    def __init__(self, model, base, seed, n):
        self.model = model
        self.base = base
        self.seed = seed
        self.n = n
        self.stopping = False
        self.errors = []
        self.bad = []                # reads that differed: always wrong
        self.uncertain = []          # (off, old bytes, new bytes)
        self.ops = 0
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

    def _run(self, i, seed):
        rng = random.Random(seed)
        try:
            h = connect(SOCK)
        except nbd.Error as e:
            self.errors.append("client %d: connect: %s" % (i, e))
            return
        k = 0
        while not self.stopping:
            off, n = self._choose(rng, i)
            kind = "read" if off >= B_END else rng.choice(
                ["read", "read", "write", "write", "zero", "trim"])
            k += 1
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
                try:
                    if kind == "write":
                        h.pwrite(new, off)
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
            with self.lock:
                self.ops += 1
            time.sleep(0.001)
        try:
            close(h)
        except Exception:
            pass

    def settle(self):
        """After a crash: each uncertain range must read, 512 bytes at a
        time, as its old or its new contents; the model takes it."""
        h = connect(SOCK)
        for off, old, new in self.uncertain:
            got = h.pread(len(old), off)
            for s in range(0, len(old), 512):
                g = got[s:s + 512]
                check(g == old[s:s + 512] or g == new[s:s + 512],
                      "after the crash, %d+%d is neither the old nor the "
                      "new contents of an unacknowledged request"
                      % (off + s, len(g)))
            self.model[off:off + len(old)] = got
        close(h)
        self.uncertain = []


def status():
    return ctl.ok("status")["stream"]


def wait_state(want, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = status()
        if s["state"] == want:
            return s
        time.sleep(0.05)
    fail("stream state did not become %s within %d s: %s"
         % (want, timeout, status()))


def check_whole(model, what, start=0):
    h = connect(SOCK)
    got = b"".join(h.pread(MiB, o) for o in range(start, SIZE, MiB))
    close(h)
    expect_same(got, bytes(model[start:]), what, base=start)


def check_file(model, what):
    with open(LOCAL, "rb") as f:
        expect_same(f.read(), bytes(model), what)


def fresh(seed):
    for path in (LOCAL, STATE, STATE + ".lock"):
        if os.path.exists(path):
            os.unlink(path)
    with open(LOCAL, "wb") as f:
        f.truncate(SIZE)
    return make_base(seed)


def mode_model():
    base = fresh(args.seed)
    model = bytearray(base)
    base_srv.start()
    srv = stream_srv("128K")
    srv.start(wait_ctl=True)
    s = status()
    check(s["state"] in ("running", "waiting-for-base")
          and s["bytes_total"] == SIZE and s["speed"] == 128 * 1024,
          "status after start: %s" % s)

    # Paused: nothing moves.
    ctl.ok("stream-pause")
    check(status()["state"] == "paused", "stream-pause: %s" % status())
    time.sleep(0.3)
    d1 = status()["bytes_done"]
    time.sleep(0.6)
    d2 = status()["bytes_done"]
    check(d1 == d2, "paused, yet bytes_done moved from %d to %d" % (d1, d2))
    ctl.ok("stream-resume")
    ctl.refused("stream-set-speed speed=fast", "speed")
    ctl.refused("stream-set-speed", "speed")
    ctl.ok("stream-set-speed speed=64K")
    check(status()["speed"] == 64 * 1024, "set-speed: %s" % status())

    log("clients: %d for %.1f s" % (args.clients, args.seconds))
    cl = Clients(model, base, args.seed, args.clients)
    cl.start()
    time.sleep(args.seconds)
    cl.stop()
    check(not cl.errors and not cl.bad, "; ".join(cl.errors + cl.bad))
    log("%d requests checked; stream %s" % (cl.ops, status()))
    check(status()["bytes_done"] < SIZE,
          "the job should still be running at 64K/s: %s" % status())
    check_whole(model, "local disk while streaming", start=U_END)

    # The base goes away: populated clusters and whole-cluster writes
    # go on, unpopulated ones fail with EIO, never zeroes.
    base_srv.kill()
    wait_state("waiting-for-base", 10)
    check(status()["base_connected"] is False, "base_connected: %s"
          % status())
    h = connect(SOCK)
    last = U_END - CL
    try:
        h.pread(4096, last)
        fail("a read of an unpopulated cluster succeeded without the base")
    except nbd.Error as e:
        check(e.errnum == 5, "expected EIO, got %s" % e)
    try:
        h.pwrite(b"x" * 100, last + 100)
        fail("a partial write to an unpopulated cluster succeeded without "
             "the base")
    except nbd.Error as e:
        check(e.errnum == 5, "expected EIO, got %s" % e)
    whole = pattern(99, CL)
    h.pwrite(whole, last - CL)
    model[last - CL:last] = whole
    h.zero(CL, last - 2 * CL)
    model[last - 2 * CL:last - CL] = bytes(CL)
    expect_same(h.pread(CL, last - CL), whole, "whole-cluster write "
                "without the base")
    close(h)
    base_srv.start()
    ctl.ok("stream-set-speed speed=0")
    s = wait_state("complete", 60)
    check(s["bytes_done"] == SIZE and s["base_connected"] is False,
          "complete: %s" % s)
    check_whole(model, "local disk after completion")
    check_file(model, "local image file after completion")
    ctl.refused("stream-pause", "complete")
    srv.stop()

    # Complete: no base needed any more, everything passes through.
    base_srv.stop()
    srv = stream_srv("0", with_base=False)
    srv.start(wait_ctl=True)
    check(status()["state"] == "complete", "restart: %s" % status())
    h = connect(SOCK)
    h.pwrite(b"y" * 1000, 12345)
    model[12345:13345] = b"y" * 1000
    close(h)
    check_whole(model, "after the restart without stream-base")
    srv.stop()
    log("model: OK")


def mode_crash():
    rng = random.Random(args.seed)
    for trial in range(args.trials):
        seed = args.seed * 1000 + trial
        base = fresh(seed)
        model = bytearray(base)
        base_srv.start()
        kills = rng.randint(2, 3)
        log("trial %d: seed %d, %d kills" % (trial, seed, kills))
        for k in range(kills + 1):
            srv = stream_srv("1M")
            srv.start(wait_ctl=True)
            cl = Clients(model, base, seed * 10 + k, args.clients)
            cl.start()
            if k < kills:
                time.sleep(rng.uniform(0.1, 0.8))
                srv.kill()
                cl.stop()
                check(not cl.bad, "; ".join(cl.bad))
                settle_after = cl.uncertain
                srv = stream_srv("1M")
                srv.start(wait_ctl=True)
                cl.uncertain = settle_after
                cl.settle()
                check_whole(model, "trial %d after kill %d" % (trial, k + 1))
                srv.stop()
            else:
                time.sleep(0.5)
                cl.stop()
                check(not cl.errors and not cl.bad,
                      "; ".join(cl.errors + cl.bad))
                ctl.ok("stream-set-speed speed=0")
                wait_state("complete", 60)
                check_whole(model, "trial %d, final" % trial)
                srv.stop()
                check_file(model, "trial %d, local image" % trial)
        base_srv.stop()
    log("crash: OK (%d trials)" % args.trials)


run_main(mode_model if args.mode == "model" else mode_crash)

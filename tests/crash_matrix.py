#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The crash matrix (test-crash-matrix.sh): nbdkit with snapshot-access,
# cbw and dirty-bitmap (bitmap-file=) on the file plugin is killed with
# SIGKILL at a seeded random moment while a writer (writes, zeroes,
# FLUSH) and a control client (snapshot-begin/end, checkpoint-create/
# delete) are busy; a few trials stop it cleanly with SIGTERM instead.
# After each stop, nbdkit restarts on the same disk and bitmap file and
# the test checks:
#
#  (a) every 4K block of the live disk holds either the last write to it
#      that was FLUSHED, or one of the writes issued to it after that
#      flush (acked or in flight) -- nothing older, nothing torn;
#  (b) the bitmap file is always valid: right after the stop it parses
#      (magic, version, CRC-32 of the documented format) with in-use set
#      after a kill and clear after a clean stop; nbdkit loads it and
#      NEVER moves it aside to PATH.damaged;
#  (c) the checkpoint chain is one the control commands could have left
#      (every acknowledged create/delete applied, the one in flight
#      applied or not); after SIGKILL every checkpoint is
#      consistent:false and its delta view refuses to open; after SIGTERM
#      every checkpoint is consistent -- except one left from an earlier
#      SIGKILL (or merged with one), which must stay inconsistent -- and
#      its delta map lies between the granules written surely after it
#      and those possibly after it (so it includes every write made
#      after it); a checkpoint created after the restart tracks exactly:
#      the map of its delta view is the granules written since, and the
#      data there is the disk's.
#
# Then the old checkpoints are deleted (after a SIGKILL the oldest is
# kept, tainted, for the next trials) and the next trial starts from
# this server.  Prints a summary table (one row per kind of moment).

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from incr_lib import (MiB, TestFailure, fail, check, log, connect, close,
                      block_map, map_granules, fmt_granules,
                      expect_open_refused, parse_bitmap_file, read_log,
                      run_main)
import nbd

ap = argparse.ArgumentParser()
ap.add_argument("--dir", required=True, help="private work directory")
ap.add_argument("--sa", required=True)
ap.add_argument("--cbw", required=True)
ap.add_argument("--db", required=True)
ap.add_argument("--pid-file", required=True)
ap.add_argument("--trials", type=int, default=20)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--sync", default="write-ahead",
                choices=["write-ahead", "clean-stop"],
                help="bitmap-sync= of the server")
ap.add_argument("--clean-every", type=int, default=4,
                help="every Nth trial stops with SIGTERM")
args = ap.parse_args()

SIZE = 16 * MiB
BLOCK = 4096
NBLOCKS = SIZE // BLOCK
G = 64 * 1024                          # bitmap-granularity (default)
NGRAN = SIZE // G
ZERO_H = hashlib.sha256(bytes(BLOCK)).digest()

D = args.dir
DISK = os.path.join(D, "disk.img")
BM = os.path.join(D, "disk.bitmaps")
SOCK = os.path.join(D, "nbd.sock")
CTL = os.path.join(D, "ctl.sock")
LOG = os.path.join(D, "nbdkit.log")

# ---------------------------------------------------------------- server

proc = None


def start():
    global proc
    for p in (SOCK, CTL):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    logf = open(LOG, "a")
    logf.write("\n===== start %s\n" % time.strftime("%H:%M:%S"))
    logf.flush()
    proc = subprocess.Popen(
        ["nbdkit", "-f", "-v", "-U", SOCK, "-P", args.pid_file,
         "--filter=" + args.sa, "--filter=" + args.cbw,
         "--filter=" + args.db, "file", DISK,
         "bitmap-file=" + BM, "bitmap-sync=" + args.sync, "control=" + CTL],
        stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    t0 = time.time()
    while time.time() - t0 < 10:
        if proc.poll() is not None:
            fail("nbdkit exited during start-up (status %s); log %s"
                 % (proc.returncode, LOG))
        if os.path.exists(CTL) and os.path.exists(SOCK):
            r = ctl_raw("status")
            if r is not None and r.get("ok"):
                try:
                    h = connect(SOCK)
                    close(h)
                    return
                except nbd.Error:
                    pass
        time.sleep(0.01)
    fail("nbdkit did not start within 10 s; log %s" % LOG)


def stop(sig):
    global proc
    proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        fail("nbdkit did not stop within 20 s of signal %d" % sig)
    proc = None
    try:
        os.unlink(args.pid_file)
    except FileNotFoundError:
        pass


def ctl_raw(line, timeout=10, sent=None):
    """One control line; the parsed reply, or None if none came.
    sent: a Condition notified once the line is sent."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(CTL)
        s.sendall((line + "\n").encode())
        if sent is not None:
            with sent:
                sent.nsent = getattr(sent, "nsent", 0) + 1
                sent.notify_all()
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
    except OSError:
        return None
    if not buf.endswith(b"\n"):
        return None
    try:
        return json.loads(buf.decode())
    except ValueError:
        fail("control '%s': reply is not JSON: %r" % (line, buf))


def ctl_ok(line):
    r = ctl_raw(line)
    check(r is not None and r.get("ok") is True,
          "control '%s' failed: %s" % (line, r))
    return r


def chain():
    """The checkpoints status lists: [(name, consistent)] oldest first."""
    return [(c["name"], c["consistent"])
            for c in ctl_ok("status")["checkpoints"]]

# ---------------------------------------------------------------- model

class Events:
    """A global order of the client's events."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def next(self):
        with self.lock:
            self.n += 1
            return self.n


INF = float("inf")
STOPPING = threading.Event()


class Disk:
    """For every 4K block: the hash of its last flushed content and the
    hashes of the writes issued to it since (in issue order)."""

    def __init__(self, durable):
        self.durable = durable               # list of digests
        self.pending = {}                    # block -> [digests]
        self.inflight = set()                # blocks of an unacked write

    def issue(self, b0, hashes):
        for i, h in enumerate(hashes):
            self.pending.setdefault(b0 + i, []).append(h)
        self.inflight = set(range(b0, b0 + len(hashes)))

    def acked(self):
        self.inflight = set()

    def flushed(self):
        """A FLUSH completed: every write before it completed too (one
        writer, one request at a time), so the last one of each block
        is durable."""
        for b, hs in self.pending.items():
            self.durable[b] = hs[-1]
        self.pending = {}

    def allowed(self, b, strict):
        p = self.pending.get(b, [])
        if not strict:
            return [self.durable[b]] + p
        # Clean stop: the last acknowledged write, or the one in flight.
        hist = [self.durable[b]] + p
        if b in self.inflight:
            return hist[-2:]
        return hist[-1:]

    def verify(self, actual, what, strict=False):
        """strict (clean stop): every acknowledged write is there."""
        bad = [b for b in range(NBLOCKS)
               if actual[b] not in self.allowed(b, strict)]
        if bad:
            b = bad[0]
            fail("%s: %d block(s) hold content that is not %s, first "
                 "block %d (offset %d): %s; allowed %s"
                 % (what, len(bad),
                    "the last acknowledged write (or the one in flight)"
                    if strict else
                    "the last flushed write nor a later one",
                    b, b * BLOCK, actual[b].hex()[:12],
                    [x.hex()[:12] for x in self.allowed(b, strict)]))
        self.durable = list(actual)
        self.pending = {}
        self.inflight = set()


def read_blocks(h):
    out = []
    for off in range(0, SIZE, 4 * MiB):
        buf = h.pread(4 * MiB, off)
        for i in range(0, len(buf), BLOCK):
            out.append(hashlib.sha256(buf[i:i + BLOCK]).digest())
    return out


def file_blocks():
    out = []
    with open(DISK, "rb") as f:
        while True:
            buf = f.read(4 * MiB)
            if not buf:
                break
            for i in range(0, len(buf), BLOCK):
                out.append(hashlib.sha256(buf[i:i + BLOCK]).digest())
    return out


def grans(off, n):
    return set(range(off // G, (off + n - 1) // G + 1))


class WriteLog:
    """Every write/zero: (issue event, completion event or INF,
    granules)."""

    def __init__(self):
        self.entries = []

    def surely_after(self, ev):
        """Granules of acked writes issued after event ev."""
        s = set()
        for wi, wc, gs in self.entries:
            if wi > ev and wc != INF:
                s |= gs
        return s

    def maybe_after(self, ev):
        """Granules of writes not surely complete before event ev."""
        s = set()
        for wi, wc, gs in self.entries:
            if wc > ev:
                s |= gs
        return s

# ---------------------------------------------------------------- workload

class Writer(threading.Thread):
    def __init__(self, rng, disk, wlog, events, tag):
        super().__init__(daemon=True)
        self.rng = rng
        self.disk = disk
        self.wlog = wlog
        self.ev = events
        self.tag = tag
        self.stop_req = False
        self.counts = {"write": 0, "zero": 0, "flush": 0}
        self.inflight = None
        self.error = None

    def run(self):
        try:
            h = connect(SOCK)
        except nbd.Error as e:
            self.error = "connect: %s" % e
            return
        try:
            k = 0
            while not self.stop_req:
                k += 1
                r = self.rng.random()
                if r < 0.2:
                    self.inflight = "flush"
                    h.flush()
                    self.disk.flushed()
                    self.counts["flush"] += 1
                    continue
                nb = self.rng.choice([1, 1, 2, 4, 8, 16, 32])
                b0 = self.rng.randrange(NBLOCKS - nb + 1)
                off, n = b0 * BLOCK, nb * BLOCK
                if r < 0.9:
                    data = random.Random("%s-%d" % (self.tag, k)) \
                        .randbytes(n)
                    hs = [hashlib.sha256(data[i:i + BLOCK]).digest()
                          for i in range(0, n, BLOCK)]
                    kind = "write"
                else:
                    data = None
                    hs = [ZERO_H] * nb
                    kind = "zero"
                self.disk.issue(b0, hs)
                entry = [self.ev.next(), INF, grans(off, n)]
                self.wlog.entries.append(entry)
                self.inflight = kind
                if data is not None:
                    h.pwrite(data, off)
                else:
                    h.zero(n, off)
                entry[1] = self.ev.next()
                self.disk.acked()
                self.counts[kind] += 1
            self.inflight = None
        except nbd.Error as e:
            self.error = str(e)           # expected when nbdkit dies
        finally:
            close(h)


class Controller(threading.Thread):
    """Control commands back to back, so that a stop often lands in one.
    focus: 'snapshot' (begin/end), 'checkpoint' (create/delete) or
    'mixed'."""

    def __init__(self, rng, focus, names, events, tag):
        super().__init__(daemon=True)
        self.rng = rng
        self.focus = focus
        self.names = list(names)       # the chain as the client believes
        self.ev = events
        self.tag = tag
        self.stop_req = False
        self.ops = []                  # [line, issue ev, reply ev, reply]
        self.active = False
        self.error = None
        self.sent = threading.Condition()

    def pick(self, k):
        f = self.focus
        if f == "mixed":
            f = self.rng.choice(["snapshot", "checkpoint"])
        if f == "snapshot":
            if self.active:
                return "snapshot-end"
            if self.rng.random() < 0.5:
                return "snapshot-begin checkpoint=%s-%d" % (self.tag, k)
            return "snapshot-begin"
        if len(self.names) > 1 and (len(self.names) > 4 or
                                    self.rng.random() < 0.4):
            return "checkpoint-delete %s" % self.rng.choice(self.names)
        return "checkpoint-create %s-%d" % (self.tag, k)

    def run(self):
        k = 0
        while not self.stop_req:
            k += 1
            line = self.pick(k)
            op = [line, self.ev.next(), None, None]
            self.ops.append(op)
            r = ctl_raw(line, sent=self.sent)
            if r is None or (r.get("ok") is not True and STOPPING.is_set()):
                return                 # nbdkit stopped: this one is in flight
            op[2], op[3] = self.ev.next(), r
            ok = r.get("ok") is True
            w = line.split()
            if w[0] == "snapshot-begin" and ok:
                self.active = True
                if len(w) > 1:
                    self.names.append(w[1].split("=", 1)[1])
            elif w[0] == "snapshot-end" and ok:
                self.active = False
            elif w[0] == "checkpoint-create" and ok:
                self.names.append(w[1])
            elif w[0] == "checkpoint-delete" and ok:
                self.names.remove(w[1])
            elif not ok:
                self.error = "control '%s' failed: %s" % (line, r)
                return
            time.sleep(self.rng.choice([0, 0, 0.001, 0.005]))

    def inflight(self):
        if self.ops and self.ops[-1][2] is None:
            return self.ops[-1]
        return None

# ---------------------------------------------------------------- checks

class Chain:
    """The checkpoint chain as the client's commands define it: names
    oldest first, and which of them must be inconsistent (tainted:
    left over from a SIGKILL, or merged with such a one)."""

    def __init__(self, names, tainted=()):
        self.names = list(names)
        self.tainted = set(tainted)

    def apply(self, line):
        c = Chain(self.names, self.tainted)
        w = line.split()
        if w[0] == "snapshot-begin" and len(w) > 1:
            c.names.append(w[1].split("=", 1)[1])
        elif w[0] == "checkpoint-create":
            c.names.append(w[1])
        elif w[0] == "checkpoint-delete" and w[1] in c.names:
            i = c.names.index(w[1])
            # Its bits go to the older one; so does its taint.
            if w[1] in c.tainted and i > 0:
                c.tainted.add(c.names[i - 1])
            c.tainted.discard(w[1])
            del c.names[i]
        return c

    def __eq__(self, other):
        return self.names == other.names and self.tainted == other.tainted

    def __repr__(self):
        return "%s (tainted %s)" % (self.names, sorted(self.tainted))


def created_events(start_names, ops):
    """name -> (issue ev, reply ev or INF) of the op that created it."""
    out = {n: (0, 0) for n in start_names}
    for line, ie, re_, r in ops:
        w = line.split()
        name = None
        if w[0] == "checkpoint-create":
            name = w[1]
        elif w[0] == "snapshot-begin" and len(w) > 1:
            name = w[1].split("=", 1)[1]
        if name:
            out[name] = (ie, re_ if re_ is not None else INF)
    return out


def delta_map(name):
    h = connect(SOCK, "snapshot/since/%s" % name, meta=True)
    try:
        ext = block_map(h, SIZE)
        got = map_granules(ext, G, SIZE, "snapshot/since/%s" % name)
        data = {}
        for g in sorted(got):
            data[g] = h.pread(G, g * G)
        return got, data
    finally:
        close(h)


def check_delta(name, want_min, want_max, live, what):
    got, data = delta_map(name)
    missing = want_min - got
    extra = got - want_max
    check(not missing, "%s: the delta map of %s lacks %d granule(s) "
          "written after it: %s" % (what, name, len(missing),
                                    fmt_granules(missing, G)))
    check(not extra, "%s: the delta map of %s has %d granule(s) never "
          "written after it: %s" % (what, name, len(extra),
                                    fmt_granules(extra, G)))
    for g, d in data.items():
        if d != live[g * G:(g + 1) * G]:
            fail("%s: delta view of %s, granule %d: data differs from the "
                 "disk" % (what, name, g))
    return len(got)


def short(names):
    if len(names) <= 6:
        return str(names)
    return "[%s, ... %d in all]" % (", ".join(names[:5]), len(names))


def check_file_after_stop(clean, what):
    check(not os.path.exists(BM + ".damaged"),
          "%s: %s.damaged exists" % (what, BM))
    check(os.path.exists(BM), "%s: the bitmap file is gone" % what)
    try:
        f = parse_bitmap_file(BM)
    except TestFailure as e:
        fail("%s: the bitmap file is not valid after the stop: %s"
             % (what, e))
    check(f["in_use"] == (not clean),
          "%s: bitmap file in-use flag is %s after a %s stop"
          % (what, f["in_use"], "clean" if clean else "SIGKILL"))
    return [c["name"] for c in f["checkpoints"]]

# ---------------------------------------------------------------- trials

def main():
    rng = random.Random(args.seed)
    log("seed %d, %d trial(s), every %dth a clean stop, bitmap-sync=%s"
        % (args.seed, args.trials, args.clean_every, args.sync))
    with open(DISK, "wb") as f:
        f.truncate(SIZE)
    start()
    disk = Disk(file_blocks())
    ctl_ok("checkpoint-create base")
    chain0 = Chain(["base"])
    rows = {}
    t_all = time.time()
    try:
        for t in range(args.trials):
            chain0 = trial(t, rng, disk, chain0, rows)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    stop_all = time.time() - t_all
    log("")
    log("| stop | in flight | trials | command took effect | live data | "
        "bitmap file | checkpoints after restart | new checkpoint |")
    log("|---|---|---|---|---|---|---|---|")
    for (kind, moment), (n, nk, ny) in sorted(rows.items()):
        took = "%d of %d" % (ny, nk) if nk else "-"
        if kind == "SIGKILL" and args.sync == "write-ahead":
            log("| SIGKILL | %s | %d | %s | flushed writes kept | valid, "
                "never moved aside | all consistent, recovered, map covers "
                "every acked write | exact |" % (moment, n, took))
        elif kind == "SIGKILL":
            log("| SIGKILL | %s | %d | %s | flushed writes kept | valid, "
                "never moved aside | all consistent:false, delta refused | "
                "exact |" % (moment, n, took))
        else:
            log("| SIGTERM | %s | %d | %s | acked writes kept | valid, "
                "in-use clear | consistent (false if left from a SIGKILL), "
                "map covers every later write | exact |" % (moment, n, took))
    log("(%d trials in %.1f s)" % (args.trials, stop_all))


def trial(t, rng, disk, chain0, rows):
    names = chain0.names
    clean = args.trials > 1 and t % args.clean_every == args.clean_every - 1
    # Whether the checkpoints must come back trusted: after a clean
    # stop, and with write-ahead tracking after any stop.
    trusted = clean or args.sync == "write-ahead"
    focus = rng.choice(["writes", "snapshot", "checkpoint", "mixed"])
    delay = rng.uniform(0.05, 0.5)
    tag = "t%d" % t
    what = "trial %d (%s, %s after %.3f s)" % (
        t, focus, "SIGTERM" if clean else "SIGKILL", delay)
    events = Events()
    wlog = WriteLog()
    writer = Writer(random.Random(rng.getrandbits(32)), disk, wlog, events,
                    tag)
    ctlr = None
    writer.start()
    if focus != "writes":
        ctlr = Controller(random.Random(rng.getrandbits(32)), focus, names,
                          events, tag)
        ctlr.start()
    time.sleep(delay)
    if ctlr and rng.random() < 0.75:
        # Aim at the inside of a control command: just after the next
        # one is sent (a checkpoint command is mostly its atomic save).
        with ctlr.sent:
            n0 = getattr(ctlr.sent, "nsent", 0)
            ctlr.sent.wait_for(lambda: getattr(ctlr.sent, "nsent", 0) > n0,
                               timeout=0.5)
        time.sleep(rng.uniform(0, 0.004))

    # The moment: what was in flight.
    infl = ctlr.inflight() if ctlr else None
    moment = infl[0].split()[0] if infl else (writer.inflight or "idle")
    STOPPING.set()
    stop(signal.SIGTERM if clean else signal.SIGKILL)
    writer.stop_req = True
    if ctlr:
        ctlr.stop_req = True
        ctlr.join(30)
    writer.join(30)
    STOPPING.clear()
    check(not writer.is_alive() and not (ctlr and ctlr.is_alive()),
          "%s: the client threads did not end" % what)
    check(not (ctlr and ctlr.error), "%s: %s" % (what, ctlr and ctlr.error))
    infl = ctlr.inflight() if ctlr else None
    ops = ctlr.ops if ctlr else []
    if infl:
        moment = infl[0].split()[0]
    if writer.error and clean:
        log("  writer: %s" % writer.error)

    # (b) The file, before nbdkit touches it again.
    file_names = check_file_after_stop(clean, what)

    # The chains the control commands could have left.
    acked = chain0
    for line, ie, re_, r in ops:
        if re_ is not None and r.get("ok"):
            acked = acked.apply(line)
    possible = [acked]
    if infl:
        possible.append(acked.apply(infl[0]))
    got = [c for c in possible if c.names == file_names]
    check(got, "%s: the bitmap file lists %s; the control commands leave "
          "%s" % (what, file_names,
                  " or ".join(str(c.names) for c in possible)))
    final = got[-1]
    took = None                        # did the command in flight apply?
    if infl and possible[1].names != possible[0].names:
        took = file_names == possible[1].names

    start()
    check(not os.path.exists(BM + ".damaged"),
          "%s: nbdkit moved the bitmap file aside (%s.damaged) after the "
          "stop" % (what, BM))
    lg = read_log(LOG)
    check("not trusted" not in lg,
          "%s: nbdkit did not trust the bitmap file after the stop" % what)

    # (a) Live data.
    h = connect(SOCK)
    actual = read_blocks(h)
    disk.verify(actual, what, strict=clean)
    check(file_blocks() == actual, "%s: the disk file differs from what "
          "nbdkit serves" % what)

    # (c) Checkpoints.
    cps = chain()
    listed = [n for n, _ in cps]
    check(listed == file_names, "%s: after the restart status lists %s, "
          "the file had %s" % (what, listed, file_names))
    created = created_events(names, ops)
    bad = [n for n, c in cps
           if c is not (trusted and n not in final.tainted)]
    check(not bad, "%s: after a %s these checkpoints have the wrong "
          "consistent flag: %s (with bitmap-sync=%s: must be false after "
          "SIGKILL in clean-stop mode, and for %s left from an earlier "
          "one; true otherwise)"
          % (what, "clean stop" if clean else "SIGKILL",
             [(n, c) for n, c in cps if n in bad], args.sync,
             sorted(final.tainted)))
    recovered = ctl_raw("status").get("bitmap_file", {}) \
        .get("recovered_after_unclean_stop")
    check((recovered is not None) == (not clean and args.sync ==
                                      "write-ahead"),
          "%s: status says recovered_after_unclean_stop %r after a %s "
          "with bitmap-sync=%s" % (what, recovered,
                                   "clean stop" if clean else "SIGKILL",
                                   args.sync))

    # A checkpoint created now tracks exactly the writes after it.
    ctl_ok("checkpoint-create %s-r" % tag)
    wrote = set()
    wr = random.Random(rng.getrandbits(32))
    for i in range(wr.randint(1, 6)):
        nb = wr.choice([1, 3, 16, 20])
        b0 = wr.randrange(NBLOCKS - nb + 1)
        data = wr.randbytes(nb * BLOCK)
        disk.issue(b0, [hashlib.sha256(data[j:j + BLOCK]).digest()
                        for j in range(0, nb * BLOCK, BLOCK)])
        h.pwrite(data, b0 * BLOCK)
        disk.acked()
        wrote |= grans(b0 * BLOCK, nb * BLOCK)
    h.flush()
    disk.flushed()
    ctl_ok("snapshot-begin checkpoint=%s-s" % tag)
    live = b"".join(h.pread(4 * MiB, o) for o in range(0, SIZE, 4 * MiB))
    ngr = check_delta("%s-r" % tag, wrote, wrote, live,
                      what + ", checkpoint created after the restart")
    created = created_events(names, ops)
    for n in listed:
        if not trusted or n in final.tainted:
            expect_open_refused(SOCK, "snapshot/since/%s" % n,
                                "%s: delta view of inconsistent %s"
                                % (what, n))
            continue
        # Between what was surely and what was possibly written after
        # it (a checkpoint from before this trial has (0, 0): nothing
        # was written between its start and this trial's workload),
        # plus what was written since the restart.
        ie, re_ = created[n]
        check_delta(n, wlog.surely_after(re_) | wrote,
                    wlog.maybe_after(ie) | wrote, live,
                    what + ", after the %s" % ("clean stop" if clean
                                               else "SIGKILL"))
    ctl_ok("snapshot-end")
    # Clean up, but after a SIGKILL keep the oldest checkpoint: the
    # next trial checks that it stays inconsistent.
    keep = Chain(["%s-s" % tag])
    if not trusted and listed:
        keep = Chain([listed[0], "%s-s" % tag], [listed[0]])
    for n in listed + ["%s-r" % tag]:
        if n not in keep.names:
            ctl_ok("checkpoint-delete %s" % n)
    close(h)
    check([n for n, _ in chain()] == keep.names,
          "%s: chain after clean-up: %s" % (what, chain()))

    key = ("SIGTERM" if clean else "SIGKILL", moment)
    r = rows.setdefault(key, [0, 0, 0])
    r[0] += 1
    if took is not None:
        r[1] += 1
        r[2] += took
    log("%s: in flight: %s%s; writes %d, zeroes %d, flushes %d; control ops "
        "%d; checkpoints after the restart %s; delta %d granule(s) OK"
        % (what, moment, {None: "", True: " (took effect)",
                          False: " (did not take effect)"}[took],
           writer.counts["write"], writer.counts["zero"],
           writer.counts["flush"], len(ops), short(listed), ngr))
    return keep


run_main(main)

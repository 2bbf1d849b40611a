#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-fleecectl-group.sh: fleecectl group-snapshot across
# three servers while writers run.
#
# Each writer w owns block w of every disk and writes its sequence
# number k there on disk 1, then disk 2, then disk 3 (each write
# completes before the next starts), then k+1.  A consistent cut of
# that history is a prefix of it, so the values (v1, v2, v3) that the
# three snapshots show for a writer are, for some k and j in 0..3,
# k on disks 1..j and k-1 on disks j+1..3; that is exactly
# v1 >= v2 >= v3 and v1 - v3 <= 1.  A snapshot of disk 2 taken later
# than disk 1's shows v2 > v1 as soon as the writer got on, so the
# check is first shown to catch snapshots taken one after the other
# without quiesce.
#
#   1. 10 groups (named, with checkpoints; one of the default
#      snapshot): exit 0, --json lists every server with held_ms and
#      the snapshot, every writer's values form a consistent cut.
#   2. One bad control socket among the servers: exit 1, no snapshot,
#      no checkpoint, no hold left anywhere.
#   3. snapshot-begin failing on the third server (a snapshot of that
#      name already there; a checkpoint of that name already there):
#      the others' snapshots and checkpoints are rolled back, the
#      third server's own snapshot and checkpoint are left alone.
#   4. Holds that end at their timeout before resume
#      (--pause-after-quiesce longer than --timeout): exit 1, rolled
#      back.
#   5. The coordinator SIGKILLed while it holds: the writers stall
#      for about the hold's timeout, then go on; no snapshot, no
#      checkpoint, no hold left.
# Writers' requests never fail.

import argparse
import json
import signal
import struct
import subprocess
import threading
import time

from fleece_lib import Ctl, check, close, connect, fail, log, run_main

ap = argparse.ArgumentParser()
ap.add_argument("--socks", required=True, help="comma-separated")
ap.add_argument("--ctls", required=True, help="comma-separated")
ap.add_argument("--fleecectl", required=True)
ap.add_argument("--tmpdir", required=True)
args = ap.parse_args()

SOCKS = args.socks.split(",")
CTLS = args.ctls.split(",")
ND = len(SOCKS)
NW = 3
BLK = 4096


def block(w, k):
    return struct.pack("<QQ", w, k) * (BLK // 16)


def seq_of(data, w, what):
    """The sequence number in writer w's block; the block must be one
    whole write (never torn)."""
    ww, k = struct.unpack("<QQ", data[:16])
    check(ww == w and data == block(w, k),
          "%s: writer %d's block is not one whole write" % (what, w))
    return k


class SeqWriters:
    """NW threads; writer w writes k to disk 1, 2, 3 in turn, then
    k+1.  times[w]: when each write completed (monotonic)."""

    def __init__(self):
        self.stop_flag = False
        self.errors = []
        self.times = [[] for _ in range(NW)]
        self.seq = [0] * NW
        self.threads = [threading.Thread(target=self._run, args=(w,),
                                         daemon=True) for w in range(NW)]

    def _run(self, w):
        try:
            hs = [connect(s) for s in SOCKS]
            k = 0
            while not self.stop_flag:
                k += 1
                for h in hs:
                    h.pwrite(block(w, k), w * BLK)
                    self.times[w].append(time.monotonic())
                self.seq[w] = k
                time.sleep(0.0005)
            for h in hs:
                close(h)
        except Exception as e:          # noqa: BLE001 - reported below
            self.errors.append("writer %d: %s" % (w, e))

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag = True
        for t in self.threads:
            t.join(30)
        check(not self.errors, "a guest write failed: %s" % self.errors)

    def wait_progress(self, n=3, limit=10):
        """Until every writer completed n more rounds."""
        want = [s + n for s in self.seq]
        t0 = time.time()
        while any(s < x for s, x in zip(self.seq, want)):
            check(not self.errors, "a guest write failed: %s" % self.errors)
            if time.time() - t0 > limit:
                fail("the writers made no progress for %d s" % limit)
            time.sleep(0.01)


def consistent(vals):
    return (all(vals[i] >= vals[i + 1] for i in range(len(vals) - 1))
            and vals[0] - vals[-1] <= 1)


def cut(export):
    """[writer][disk] sequence numbers in export of every server."""
    vals = [[0] * ND for _ in range(NW)]
    for d, s in enumerate(SOCKS):
        h = connect(s, export)
        for w in range(NW):
            vals[w][d] = seq_of(h.pread(BLK, w * BLK), w,
                                "%s of server %d" % (export, d + 1))
        close(h)
    return vals


def group(*opts, ctls=None):
    """Run fleecectl group-snapshot --json; (exit status, reply, stderr)."""
    p = subprocess.run([args.fleecectl, "group-snapshot", "--json"]
                       + list(opts) + (ctls or CTLS),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        fail("group-snapshot %s: output is not JSON: %r (stderr %r)"
             % (opts, p.stdout, p.stderr))
    return p.returncode, out, p.stderr


def state(ctl):
    """What a server has: snapshot names, checkpoint names, quiesce."""
    st = ctl.ok("status")
    snaps = sorted(s["name"] for s in st.get("snapshots") or [])
    if st["snapshot"]["active"]:
        snaps.append("")
    return (snaps, [c["name"] for c in st["checkpoints"]],
            st["quiesce"]["active"])


def expect_states(ctls, want, what):
    for i, c in enumerate(ctls):
        got = state(c)
        check(got == want[i], "%s: server %d has (snapshots, checkpoints, "
              "quiesced) %s, expected %s" % (what, i + 1, got, want[i]))


def main():
    ctls = [Ctl(c) for c in CTLS]
    for s in SOCKS:
        h = connect(s)
        for w in range(NW):
            h.pwrite(block(w, 0), w * BLK)
        close(h)
    w = SeqWriters()
    w.start()
    try:
        run(ctls, w)
    finally:
        w.stop_flag = True
    w.stop()


def run(ctls, w):
    w.wait_progress()

    # 0. The check sees snapshots taken one after the other.
    for i, c in enumerate(ctls):
        if i:
            w.wait_progress(2)
        c.ok("snapshot-begin name=skew")
    vals = cut("snapshot@skew")
    check(not all(consistent(v) for v in vals),
          "snapshots taken one after the other without quiesce look "
          "consistent (%s): the check cannot tell" % vals)
    for c in ctls:
        c.ok("snapshot-end name=skew")
    log("without quiesce: %s (inconsistent, as expected)" % vals)

    # 1. Ten groups.
    first = None
    held = []
    for i in range(10):
        w.wait_progress(2)
        if i == 9:
            opts, export, ckpt = [], "snapshot", None
        else:
            opts = ["--name", "g%d" % i, "--checkpoint", "k%d" % i]
            export, ckpt = "snapshot@g%d" % i, "k%d" % i
        rc, out, err = group(*opts)
        check(rc == 0 and out["ok"] is True,
              "group %d: exit %d, %s, %s" % (i, rc, out, err))
        check(out["snapshot"] == export and out["checkpoint"] == ckpt,
              "group %d: reply %s" % (i, out))
        check([s["control"] for s in out["servers"]] == CTLS,
              "group %d: servers %s" % (i, out["servers"]))
        for s in out["servers"]:
            check(isinstance(s["held_ms"], int) and s["snapshot"] == export
                  and s["error"] is None, "group %d: server %s" % (i, s))
            held.append(s["held_ms"])
        vals = cut(export)
        for wi, v in enumerate(vals):
            check(consistent(v), "group %d: writer %d's numbers on disks 1-3 "
                  "are %s, not a consistent cut" % (i, wi, v))
        if first is None:
            first = vals
        for c in ctls:
            c.ok("snapshot-end" + (" name=g%d" % i if i < 9 else ""))
            if ckpt and i > 0:
                c.ok("checkpoint-delete k%d" % (i - 1))
        log("group %d: %s, held %s ms" % (i, [v for v in vals],
                                         [s["held_ms"] for s in out["servers"]]))
    check(all(vals[x][0] > first[x][0] for x in range(NW)),
          "the writers did not write between the groups")
    check(max(held) < 2000, "a hold took %d ms" % max(held))
    base = [([], ["k8"], False)] * ND
    expect_states(ctls, base, "after the groups")

    # 2. A bad control socket among them.
    bad = args.tmpdir + "/missing.ctl"
    rc, out, err = group("--name", "gb", "--checkpoint", "kb",
                         ctls=CTLS[:2] + [bad] + CTLS[2:])
    check(rc == 1 and out["ok"] is False and bad in out["error"],
          "bad socket: exit %d, %s" % (rc, out))
    expect_states(ctls, base, "after a group with a bad socket")
    w.wait_progress()

    # 3. snapshot-begin fails on the third server.
    ctls[2].ok("snapshot-begin name=dup")
    rc, out, err = group("--name", "dup", "--checkpoint", "kd")
    check(rc == 1 and "already" in out["error"], "dup name: %d %s %s"
          % (rc, out, err))
    check([s["rolled_back"] for s in out["servers"]] == [True, True, False],
          "dup name: %s" % out)
    expect_states(ctls, base[:2] + [(["dup"], ["k8"], False)],
                  "after a group whose name the third server had")
    ctls[2].ok("snapshot-end name=dup")
    ctls[2].ok("checkpoint-create kc")
    rc, out, err = group("--name", "gc", "--checkpoint", "kc")
    check(rc == 1, "dup checkpoint: %d %s" % (rc, out))
    expect_states(ctls, base[:2] + [([], ["k8", "kc"], False)],
                  "after a group whose checkpoint the third server had")
    ctls[2].ok("checkpoint-delete kc")
    w.wait_progress()

    # 4. The holds end at their timeout before resume.
    rc, out, err = group("--name", "gt", "--checkpoint", "kt", "--timeout",
                         "1", "--pause-after-quiesce", "2")
    check(rc == 1 and "timeout" in out["error"],
          "expired holds: exit %d, %s" % (rc, out))
    expect_states(ctls, base, "after a group whose holds expired")
    w.wait_progress()

    # 5. The coordinator dies while it holds.
    p = subprocess.Popen([args.fleecectl, "group-snapshot", "--timeout", "2",
                          "--pause-after-quiesce", "60", "--name", "gk",
                          "--checkpoint", "kk"] + CTLS,
                         stdout=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not all(c.ok("status")["quiesce"]["active"] for c in ctls):
            check(time.time() - t0 < 10, "the servers were not quiesced")
            time.sleep(0.01)
        tq = time.monotonic()
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    w.wait_progress(3, limit=10)
    stall = []
    for wi in range(NW):
        ts = w.times[wi]
        before = max([t for t in ts if t < tq] or [tq])
        after = min(t for t in ts if t >= tq)
        stall.append(after - before)
    log("coordinator killed while holding: writers stalled %s s"
        % ["%.2f" % s for s in stall])
    check(all(1.0 <= s <= 4.0 for s in stall),
          "with a 2 s hold and the coordinator gone the writers stalled %s s"
          % stall)
    expect_states(ctls, base, "after the coordinator was killed")
    for c in ctls:
        check(c.ok("status")["quiesce"]["expired"] >= 1,
              "the hold's expiry is not counted")


run_main(main)

#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Several snapshots at once (named snapshots), checked against a model.
#
#   model   seeded writers run while the default snapshot and three named
#           ones are begun, released in part and ended at different times;
#           every snapshot is read cluster by cluster and must equal the
#           disk at its own point (released clusters fail with EPERM)
#   once    2 and 4 snapshots taken at one point: a first write to a
#           cluster copies it once (clusters_copied per snapshot, target
#           held_bytes, the target file's allocation)
#   versions  a cluster written between two snapshot points keeps both
#           old contents, each served to its own snapshot
#   full    an NBD target exactly the disk's size has no room for a
#           second version: under break-snapshot only the snapshot that
#           needed the copy breaks; the other and live data are intact
#   names   bad names and limits: one clear error, nothing changed

import argparse
import os
import random
import threading

import nbd

from fleece_lib import (Ctl, Model, check, close, connect, expect_error,
                        expect_same, fail, log, pattern, run_main, try_connect)

C = 65536

p = argparse.ArgumentParser()
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
p.add_argument("--size", type=int, default=16 * 1024 * 1024)
p.add_argument("--target", default=None)
p.add_argument("--seed", type=int, default=1)
p.add_argument("case")
args = p.parse_args()
SIZE = args.size
NC = SIZE // C


def export(name):
    return "snapshot" if name == "" else "snapshot@" + name


def begin(ctl, name, extra=""):
    line = "snapshot-begin" + (" name=" + name if name else "") + extra
    return ctl.ok(line.strip())


def end(ctl, name):
    ctl.ok("snapshot-end" + (" name=" + name if name else ""))


def status_of(ctl, name):
    st = ctl.ok("status")
    if name == "":
        return st["snapshot"]
    for s in st["snapshots"]:
        if s["name"] == name:
            return s
    fail("snapshot %s missing from status: %s" % (name, st))


class Writers:
    """Writer threads on disjoint clusters (writer i owns clusters
    congruent to i), so the model is exact; pause() stops them between
    writes, so a snapshot begun while paused has a known point."""

    def __init__(self, sock, model, n=2, seed=1):
        self.sock, self.model, self.n = sock, model, n
        self.cv = threading.Condition()
        self.paused = False
        self.active = 0
        self.stop = False
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(i, seed + i))
                        for i in range(n)]

    def run(self, i, seed):
        r = random.Random(seed)
        h = connect(self.sock)
        k = 0
        try:
            while True:
                with self.cv:
                    while self.paused and not self.stop:
                        self.cv.wait()
                    if self.stop:
                        break
                    self.active += 1
                c = r.randrange(i, NC, self.n)
                off = c * C + r.choice([0, 512, 4096, C // 2])
                ln = r.choice([512, 4096, C // 2, C])
                ln = min(ln, (c + 1) * C - off)
                k += 1
                try:
                    if r.random() < 0.15:
                        h.zero(ln, off)
                        self.model.zero(off, ln)
                    else:
                        data = pattern("%s-%d" % (seed, k), ln)
                        h.pwrite(data, off)
                        self.model.write(off, data)
                finally:
                    with self.cv:
                        self.active -= 1
                        self.cv.notify_all()
        except Exception as e:       # noqa: BLE001 - reported below
            self.errors.append(e)
        finally:
            close(h)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def pause(self):
        with self.cv:
            self.paused = True
            while self.active:
                self.cv.wait()

    def resume(self):
        with self.cv:
            self.paused = False
            self.cv.notify_all()

    def __exit__(self, *a):
        with self.cv:
            self.stop = True
            self.cv.notify_all()
        for t in self.threads:
            t.join()
        if self.errors:
            fail("a guest write failed: %s" % self.errors[0])


def verify(name, want, released):
    """Read snapshot `name` cluster by cluster: want (bytes at its point),
    except released clusters, which must fail with EPERM."""
    h = connect(args.sock, export(name))
    for c in range(NC):
        if c in released:
            expect_error(lambda: h.pread(C, c * C),
                         "snapshot %r, released cluster %d" % (name, c),
                         ["EPERM"])
        else:
            expect_same(h.pread(C, c * C), want[c * C:(c + 1) * C],
                        "snapshot %r" % name, base=c * C)
    close(h)


def model_case():
    ctl = Ctl(args.ctl)
    r = random.Random(args.seed)
    model = Model(SIZE)
    h = connect(args.sock)
    h.pwrite(pattern("init", SIZE), 0)
    model.write(0, pattern("init", SIZE))
    points = {}                  # name -> bytes at its point
    released = {}                # name -> set of released clusters

    def take(name):
        w.pause()
        points[name] = model.bytes()
        released[name] = set()
        begin(ctl, name)
        w.resume()

    def release(name, k):
        hs = connect(args.sock, export(name))
        for _ in range(k):
            c = r.randrange(NC)
            hs.trim(C, c * C)
            released[name].add(c)
        close(hs)

    import time
    with Writers(args.sock, model, seed=args.seed) as w:
        take("")
        time.sleep(0.3)
        take("a")
        time.sleep(0.3)
        release("a", 8)
        take("b")
        time.sleep(0.3)
        w.pause()
        verify("", points[""], released[""])
        verify("a", points["a"], released["a"])
        w.resume()
        end(ctl, "")
        take("c")
        time.sleep(0.3)
        release("b", 5)
        end(ctl, "a")
        time.sleep(0.3)
        take("")
        time.sleep(0.3)
        w.pause()
    # Writers stopped: every remaining snapshot against its point.
    for name in ["b", "c", ""]:
        verify(name, points[name], released[name])
    expect_same(h.pread(SIZE, 0), model.bytes(), "live disk")
    st = ctl.ok("status")
    check(sorted(s["name"] for s in st["snapshots"]) == ["b", "c"],
          "status snapshots: %s" % st["snapshots"])
    for name in ["b", "c", ""]:
        end(ctl, name)
    st = ctl.ok("status")
    check(st["target"]["held_bytes"] == 0,
          "target still holds %d bytes after every snapshot ended"
          % st["target"]["held_bytes"])
    close(h)


def allocated(path):
    return os.stat(path).st_blocks * 512


def once_case():
    ctl = Ctl(args.ctl)
    h = connect(args.sock)
    h.pwrite(pattern("once", SIZE), 0)
    for n in [2, 4]:
        point = h.pread(SIZE, 0)
        names = ["s%d" % i for i in range(n)]
        for name in names:
            begin(ctl, name)
        base = allocated(args.target) if args.target else 0
        touched = [3, 4, 10, 50, 51, 52, 200]
        for c in touched:
            h.pwrite(pattern("w-%d-%d" % (n, c), 4096), c * C + 100)
        for name in names:
            s = status_of(ctl, name)
            check(s["clusters_copied"] == len(touched),
                  "%d snapshots: %s copied %d clusters, expected %d"
                  % (n, name, s["clusters_copied"], len(touched)))
            check(s["target_bytes"] == len(touched) * C,
                  "%s: target_bytes %d" % (name, s["target_bytes"]))
        held = ctl.ok("status")["target"]["held_bytes"]
        check(held == len(touched) * C,
              "%d snapshots at one point: the target holds %d bytes, "
              "expected one copy of %d clusters" % (n, held, len(touched)))
        if args.target:
            grew = allocated(args.target) - base
            check(grew <= len(touched) * C,
                  "%d snapshots: the target file grew by %d bytes for %d "
                  "clusters" % (n, grew, len(touched)))
        for name in names:
            verify(name, point, set())
        for name in names:
            end(ctl, name)
    close(h)


def versions_case():
    ctl = Ctl(args.ctl)
    h = connect(args.sock)
    h.pwrite(pattern("v0", SIZE), 0)
    p0 = h.pread(SIZE, 0)
    begin(ctl, "a")
    h.pwrite(pattern("v1", C), 7 * C)
    p1 = h.pread(SIZE, 0)
    begin(ctl, "b")
    h.pwrite(pattern("v2", C), 7 * C)
    h.pwrite(pattern("v2b", C), 8 * C)
    verify("a", p0, set())
    verify("b", p1, set())
    st = ctl.ok("status")
    # a: clusters 7 (v0) and 8 (v0, shared with b); b: 7 (v1).
    check(st["target"]["held_bytes"] == 3 * C,
          "two versions of cluster 7 and one shared copy of 8: held %d"
          % st["target"]["held_bytes"])
    end(ctl, "a")
    check(ctl.ok("status")["target"]["held_bytes"] == 2 * C,
          "after ending a, b's copies stay")
    verify("b", p1, set())
    end(ctl, "b")
    close(h)


def full_case():
    ctl = Ctl(args.ctl)
    model = Model(SIZE)
    h = connect(args.sock)
    h.pwrite(pattern("f0", SIZE), 0)
    model.write(0, pattern("f0", SIZE))
    p0 = model.bytes()
    begin(ctl, "a")
    d = pattern("f1", C)
    h.pwrite(d, 5 * C)           # a's copy of 5 takes slot 5
    model.write(5 * C, d)
    p1 = model.bytes()
    begin(ctl, "b")
    d = pattern("f2", C)
    h.pwrite(d, 5 * C)           # b needs a second version: no room
    model.write(5 * C, d)
    sa, sb = status_of(ctl, "a"), status_of(ctl, "b")
    check(sa["broken"] is None, "a broke although it did not need the copy")
    check(sb["broken"] is not None, "b did not break on a full target")
    verify("a", p0, set())
    hb = connect(args.sock, "snapshot@b")
    expect_error(lambda: hb.pread(C, 0), "broken b", ["EPERM"])
    close(hb)
    expect_same(h.pread(SIZE, 0), model.bytes(), "live disk")
    end(ctl, "b")
    end(ctl, "a")
    check(p1 != p0, "setup")
    close(h)


def limit_guest_case():
    """cbw-target-limit=4 clusters, break-guest-write: the write that
    would pass the limit fails with ENOSPC and changes nothing."""
    ctl = Ctl(args.ctl)
    model = Model(SIZE)
    h = connect(args.sock)
    h.pwrite(pattern("l0", SIZE), 0)
    model.write(0, pattern("l0", SIZE))
    p0 = model.bytes()
    begin(ctl, "a")
    for c in range(4):
        d = pattern("l1-%d" % c, C)
        h.pwrite(d, c * C)
        model.write(c * C, d)
    e = expect_error(lambda: h.pwrite(pattern("l2", C), 9 * C),
                     "a write past the target limit", ["ENOSPC"])
    check(e is not None, "no error")
    expect_same(h.pread(SIZE, 0), model.bytes(), "live disk")
    st = ctl.ok("status")
    check(st["target"]["held_bytes"] == 4 * C and
          st["target"]["limit"] == 4 * C, "target: %s" % st["target"])
    check(status_of(ctl, "a")["broken"] is None, "a broke")
    verify("a", p0, set())
    # Releasing regions frees their share: the write now succeeds.
    hs = connect(args.sock, "snapshot@a")
    hs.trim(C, 0)
    close(hs)
    d = pattern("l3", C)
    h.pwrite(d, 9 * C)
    model.write(9 * C, d)
    verify("a", p0, {0})
    end(ctl, "a")
    close(h)


def limit_snapshot_case():
    """cbw-target-limit=4 clusters, break-snapshot: at the limit the
    newest snapshot that needs the copy breaks and gives back what only
    it held; the older one stays exact, the guest write succeeds."""
    ctl = Ctl(args.ctl)
    model = Model(SIZE)
    h = connect(args.sock)

    def w(c, seed):
        d = pattern(seed, C)
        h.pwrite(d, c * C)
        model.write(c * C, d)

    w(0, "m0")
    for c in range(1, 8):
        w(c, "m0-%d" % c)
    pa = model.bytes()
    begin(ctl, "a")
    w(0, "m1")                   # a: cluster 0 (1 slot)
    begin(ctl, "b")
    w(0, "m2")                   # b: second version of 0 (2 slots)
    w(1, "m3")
    w(2, "m4")                   # a and b share 1, 2 (4 slots: the limit)
    w(3, "m5")                   # no room: b breaks, its copy of 0 freed
    check(status_of(ctl, "b")["broken"] is not None, "b did not break")
    check(status_of(ctl, "a")["broken"] is None, "a broke")
    verify("a", pa, set())
    expect_same(h.pread(SIZE, 0), model.bytes(), "live disk")
    check(ctl.ok("status")["target"]["held_bytes"] <= 4 * C, "over limit")
    end(ctl, "b")
    end(ctl, "a")
    close(h)


def names_case():
    ctl = Ctl(args.ctl)
    for bad in ["name=", "name=-x", "name=a/b", "name=a@b", "name=" + "x" * 65]:
        ctl.refused("snapshot-begin " + bad)
    for i in range(8):
        begin(ctl, "n%d" % i)
    ctl.refused("snapshot-begin name=n8", "8 named")
    ctl.refused("snapshot-begin name=n0", "already active")
    begin(ctl, "")               # the default one is not counted
    ctl.refused("snapshot-begin", "already active")
    ctl.refused("snapshot-end name=nope", "no snapshot named")
    hx, err = try_connect(args.sock, "snapshot@nope")
    check(hx is None, "snapshot@nope opened")
    for i in range(8):
        hs = connect(args.sock, "snapshot@n%d" % i, strict=False)
        expect_error(lambda: hs.pwrite(b"x" * 512, 0),
                     "a write to snapshot@n%d" % i)
        close(hs)
    st = ctl.ok("status")
    check(len(st["snapshots"]) == 8 and st["snapshot"]["active"],
          "status: %s" % st)
    for i in range(8):
        end(ctl, "n%d" % i)
    end(ctl, "")
    check(ctl.ok("status")["snapshots"] == [], "snapshots left")


run_main({"model": model_case, "once": once_case,
          "versions": versions_case, "full": full_case,
          "limit-guest": limit_guest_case,
          "limit-snapshot": limit_snapshot_case,
          "names": names_case}[args.case])

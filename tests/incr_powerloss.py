#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Power loss on the bitmap file (test-bitmap-powerloss.sh).  nbdkit runs
# the dirty-bitmap filter (bitmap-sync=write-ahead) on the file plugin
# under powerloss-shim.so, which logs, in order, every write and sync of
# the bitmap file and its PATH.tmp, every rename and directory sync, and
# every write/zero/trim issued to the disk (logged before it is issued).
# Four clients write, zero and trim at random while checkpoints are
# created and deleted; this script appends a marker to the same log
# when each create has been acknowledged.
#
# Then, for many crash points (a prefix of the log), the bitmap file is
# rebuilt as a power loss could leave it: every write to an inode that
# was followed by a sync of it is there; of the writes not yet synced a
# random subset is, each torn at 512-byte sectors (each sector old or
# new); a rename is there if a directory sync followed it, else maybe.
# The file is decoded by the filter's own decoder (bmfile-dump) and
# recovered as after a reboot (every region of the intent map counts as
# written); it must be valid, written in write-ahead mode, every
# checkpoint consistent, and every disk write issued before the crash
# point after a checkpoint's creation was acknowledged must be in that
# checkpoint's "since" union (its bits and every newer checkpoint's).
#
# For the same crash points the file is also rebuilt as a crash of the
# process leaves it (the page cache keeps every write and rename made
# before the point) and decoded without expansion, as the filter loads
# it in the same boot: the granule bits alone must cover every write.

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from incr_lib import MiB, fail, check, log, connect, close, run_main
from fleece_lib import Ctl

ap = argparse.ArgumentParser()
ap.add_argument("--dir", required=True)
ap.add_argument("--db", required=True)
ap.add_argument("--shim", required=True)
ap.add_argument("--dump", required=True, help="bmfile-dump")
ap.add_argument("--pid-file", required=True)
ap.add_argument("--points", type=int, default=50)
ap.add_argument("--seconds", type=float, default=2.0)
ap.add_argument("--seed", type=int, default=1)
args = ap.parse_args()

SIZE = 16 * MiB
G = 64 * 1024
SECTOR = 512
D = args.dir
DISK = os.path.join(D, "disk.img")
BM = os.path.join(D, "disk.bitmaps")
SOCK = os.path.join(D, "nbd.sock")
CTL = os.path.join(D, "ctl.sock")
LOG = os.path.join(D, "io.log")
NBDLOG = os.path.join(D, "nbdkit.log")


def marker(text):
    with open(LOG, "a") as f:
        f.write("M %s\n" % text)


def run_workload(rng):
    env = dict(os.environ, LD_PRELOAD=args.shim, FLEECE_PL_LOG=LOG,
               FLEECE_PL_BM=BM, FLEECE_PL_DISK=DISK)
    with open(DISK, "wb") as f:
        f.truncate(SIZE)
    with open(NBDLOG, "w") as lf:
        proc = subprocess.Popen(
            ["nbdkit", "-f", "-U", SOCK, "-P", args.pid_file,
             "--filter=" + args.db, "file", DISK, "bitmap-file=" + BM,
             "bitmap-sync=write-ahead", "control=" + CTL],
            env=env, stdout=lf, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while not (os.path.exists(CTL) and os.path.exists(SOCK)):
            check(proc.poll() is None and time.time() - t0 < 10,
                  "nbdkit did not start; log %s" % NBDLOG)
            time.sleep(0.02)
        ctl = Ctl(CTL)
        ctl.ok("checkpoint-create c1")
        marker("created c1")
        stop = threading.Event()
        errors = []

        def client(seed):
            r = random.Random(seed)
            try:
                h = connect(SOCK)
                while not stop.is_set():
                    n = r.choice([4096, 4096, 8192, 65536, 131072])
                    off = r.randrange(0, SIZE - n + 1, 4096)
                    k = r.random()
                    if k < 0.8:
                        h.pwrite(r.randbytes(n), off)
                    elif k < 0.9:
                        h.zero(n, off)
                    else:
                        h.trim(n, off)
                close(h)
            except Exception as e:
                errors.append(str(e))

        ts = [threading.Thread(target=client, args=(rng.getrandbits(32),))
              for _ in range(4)]
        for t in ts:
            t.start()
        k = 2
        end = time.time() + args.seconds
        while time.time() < end:
            time.sleep(args.seconds / 6)
            ctl.ok("checkpoint-create c%d" % k)
            marker("created c%d" % k)
            if k % 2 == 1:
                ctl.ok("checkpoint-delete c%d" % (k - 2))
            k += 1
        stop.set()
        for t in ts:
            t.join(30)
        check(not errors, "client errors: %s" % errors[:3])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def parse_log():
    ev = []
    with open(LOG) as f:
        for line in f:
            p = line.split()
            if not p:
                continue
            if p[0] == "W":
                ev.append(("W", int(p[1]), int(p[2]), bytes.fromhex(p[3])))
            elif p[0] == "O":
                ev.append(("O", int(p[1]), p[2]))
            elif p[0] == "S":
                ev.append(("S", int(p[1])))
            elif p[0] == "SD":
                ev.append(("SD",))
            elif p[0] == "R":
                ev.append(("R", p[1], p[2]))
            elif p[0] == "D":
                ev.append(("D", int(p[1]), int(p[2])))
            elif p[0] == "M":
                ev.append(("M", p[2]))
            else:
                fail("bad log line %r" % line[:80])
    return ev


def apply_write(content, off, data):
    if len(content) < off + len(data):
        content.extend(bytes(off + len(data) - len(content)))
    content[off:off + len(data)] = data


def rebuild(ev, k, rng):
    """The bitmap file after a power loss at event k (events [0, k)
    issued), or None if it does not exist."""
    durable = {}                # inode -> bytearray
    pending = {}                # inode -> [(off, data)]
    path_of = {}                # inode -> name it was opened by
    names = {}                  # durable name -> inode
    pnames = dict()             # name -> inode, including pending renames
    prenames = []               # renames not yet made durable
    for e in ev[:k]:
        if e[0] == "O":
            durable.setdefault(e[1], bytearray())
            pending.setdefault(e[1], [])
            path_of[e[1]] = e[2]
            # A file opened by name: the newest inode of that name.
            pnames[e[2]] = e[1]
        elif e[0] == "W":
            pending[e[1]].append((e[2], e[3]))
        elif e[0] == "S":
            for off, data in pending[e[1]]:
                apply_write(durable[e[1]], off, data)
            pending[e[1]] = []
        elif e[0] == "R":
            ino = pnames.get(e[1])
            pnames[e[2]] = ino
            prenames.append((e[2], ino))
        elif e[0] == "SD":
            for name, ino in prenames:
                names[name] = ino
            prenames = []
    # The crash: a prefix of the pending renames, a random subset of
    # the pending writes, each torn at sector boundaries.
    for name, ino in prenames[:rng.randint(0, len(prenames))]:
        names[name] = ino
    ino = names.get(BM)
    if ino is None:
        return None
    content = bytearray(durable[ino])
    for off, data in pending[ino]:
        if rng.random() < 0.5:
            continue
        for s in range(0, len(data), SECTOR):
            if rng.random() < 0.5:
                apply_write(content, off + s, data[s:s + SECTOR])
    return bytes(content)


def rebuild_process_crash(ev, k):
    """The bitmap file after a crash of the process at event k: every
    write and rename issued before k is there (the page cache has it)."""
    content = {}
    names = {}
    for e in ev[:k]:
        if e[0] == "O":
            content.setdefault(e[1], bytearray())
            names[e[2]] = e[1]
        elif e[0] == "W":
            apply_write(content[e[1]], e[2], e[3])
        elif e[0] == "R":
            names[e[2]] = names.get(e[1])
    ino = names.get(BM)
    return None if ino is None else bytes(content[ino])


def decode(data, reboot):
    p = os.path.join(D, "rebuilt")
    with open(p, "wb") as f:
        f.write(data)
    cmd = [args.dump] + (["-r"] if reboot else []) + [p]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    check(out and out[0].startswith("ok "), "rebuilt file not valid: %s"
          % (out[0] if out else "no output"))
    _, version, in_use, wa, size, gran, n, regions = out[0].split()
    cps = []
    for line in out[1:]:
        p = line.split()
        cps.append((p[1], p[2] == "1", set(int(g) for g in p[3:])))
    return int(version), in_use == "1", wa == "1", cps


def check_point(ev, k, rng, reboot):
    data = rebuild(ev, k, rng) if reboot else rebuild_process_crash(ev, k)
    if data is None:
        return "no file"
    version, in_use, wa, cps = decode(data, reboot)
    check(version == 4 and wa, "crash point %d: version %d, write-ahead %s"
          % (k, version, wa))
    for name, consistent, _ in cps:
        check(consistent, "crash point %d: checkpoint %s inconsistent"
              % (k, name))
    # Disk writes after each checkpoint's acknowledged creation.
    created = {}
    writes = []                 # (index, granules)
    for i, e in enumerate(ev[:k]):
        if e[0] == "M":
            created[e[1]] = i
        elif e[0] == "D":
            writes.append((i, range(e[1] // G, (e[1] + e[2] - 1) // G + 1)))
    missing = []
    for j, (name, _, _) in enumerate(cps):
        if name not in created:
            continue            # created, but not acknowledged before k
        since = set()
        for _, _, gs in cps[j:]:
            since |= gs
        for i, gs in writes:
            if i > created[name]:
                lost = [g for g in gs if g not in since]
                if lost:
                    missing.append((name, i, lost[:4]))
    check(not missing, "crash point %d (of %d events, %s): writes issued "
          "after a checkpoint's creation are not in its since map "
          "(checkpoint, event, granules): %s"
          % (k, len(ev), "power loss" if reboot else "process crash",
             missing[:5]))
    return "%d checkpoint(s)" % len(cps)


def main():
    rng = random.Random(args.seed)
    run_workload(rng)
    ev = parse_log()
    nd = sum(1 for e in ev if e[0] == "D")
    nw = sum(1 for e in ev if e[0] == "W")
    ns = sum(1 for e in ev if e[0] == "S")
    log("log: %d events, %d disk writes, %d bitmap writes, %d syncs"
        % (len(ev), nd, nw, ns))
    check(nd > 100 and ns > 5, "too little happened; log %s" % LOG)
    # Crash points: random, and every point just after a bitmap write
    # or just before a sync is as likely as any.
    interesting = [i for i, e in enumerate(ev) if e[0] in ("W", "S", "R")]
    points = sorted(set(
        [rng.randrange(len(ev) + 1) for _ in range(args.points // 2)] +
        [rng.choice(interesting) + rng.choice([0, 1])
         for _ in range(args.points - args.points // 2)] + [len(ev)]))
    for reboot in (True, False):
        seen = {}
        for k in points:
            r = check_point(ev, k, rng, reboot)
            seen[r] = seen.get(r, 0) + 1
        log("%s: %d crash points, every one valid and covering every "
            "write issued after each checkpoint: %s"
            % ("power loss (expanded)" if reboot else
               "process crash (exact)", len(points), seen))


run_main(main)

#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# One cell of test-fault-matrix.sh: one fault x one cbw-on-error policy.
# Prints the cell as a markdown table row
#
#   | fault | policy | guest write | snapshot read | status.broken | live intact |
#
# and asserts it against EXPECTED below (sections 5 and 6 of the
# product contract).  The shell script compares the printed rows with
# the table in docs/fault-matrix.md too.
#
# What one cell does (32 MiB disk, 64K clusters):
#   1. fill the whole live disk with a pattern, flush; snapshot-begin
#   2. (except for the slow target, which would fail it) write cluster A
#      while the target works: its old data is copied to the target
#   3. inject the fault
#   4. two guest writes to clusters not copied yet (a whole cluster B,
#      and 2000 bytes across a cluster boundary): their result is the
#      "guest write" column (ok, or the error the client got; for errors
#      NBD cannot carry, the errno the server logged and what the client
#      saw)
#   5. source-read-eio only: take the fault away (it fails live reads
#      too), then verify
#   6. status .snapshot.broken: null, or "set" (a reason string)
#   7. read the snapshot export cluster by cluster: any read that
#      succeeds must return exactly the snapshot point (never wrong
#      data); the column says which clusters fail and how
#   8. sha256 of the whole live disk (over NBD, and of the disk file)
#      must equal the model of completed writes

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleece_lib import (MiB, Ctl, Model, check, close, connect, fail,
                        file_sha, log, pattern, read_all, read_log,
                        run_main, sha, timed_pwrite, kill_server)
import nbd

FAULTS = ["target-write-eio", "target-read-eio", "target-enospc",
          "target-slow", "target-killed", "source-read-eio"]
BGW = "break-guest-write"
BS = "break-snapshot"

# The contract's answer for every cell: (guest write, snapshot read,
# status.broken, live intact).
POINT = "= snapshot point"
BROKEN = "all fail: EACCES (client: EINVAL)"
COPIED_FAIL = "copied clusters fail: EIO; others = snapshot point"
EXPECTED = {
    ("target-write-eio", BGW): ("fails: EIO", POINT, "null", "yes"),
    ("target-write-eio", BS): ("ok", BROKEN, "set", "yes"),
    ("target-read-eio", BGW): ("ok", COPIED_FAIL, "null", "yes"),
    ("target-read-eio", BS): ("ok", COPIED_FAIL, "null", "yes"),
    ("target-enospc", BGW): ("fails: ENOSPC", POINT, "null", "yes"),
    ("target-enospc", BS): ("ok", BROKEN, "set", "yes"),
    ("target-slow", BGW): ("fails: ETIMEDOUT (client: EINVAL)", POINT,
                           "null", "yes"),
    ("target-slow", BS): ("ok", BROKEN, "set", "yes"),
    ("target-killed", BGW): ("fails: EIO", COPIED_FAIL, "null", "yes"),
    ("target-killed", BS): ("ok", BROKEN, "set", "yes"),
    ("source-read-eio", BGW): ("fails: EIO", POINT, "null", "yes"),
    ("source-read-eio", BS): ("ok", BROKEN, "set", "yes"),
}

p = argparse.ArgumentParser()
p.add_argument("--fault", required=True, choices=FAULTS)
p.add_argument("--policy", required=True, choices=[BGW, BS])
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
p.add_argument("--disk", required=True, help="the live disk's file")
p.add_argument("--log", required=True, help="the fleece server's log")
p.add_argument("--trigger", required=True, help="error filter's error-file")
p.add_argument("--target-pid-file")
args = p.parse_args()

SIZE = 32 * MiB
C = 64 * 1024
A = 1 * MiB                                  # copied before the fault
WRITES = [(3 * MiB, C, 20), (4 * MiB - 1000, 2000, 21)]   # under the fault


def clusters(off, n):
    return set(range(off // C, (off + n - 1) // C + 1))


def kill_target():
    kill_server(args.target_pid_file)


def guest_writes(h, model):
    """The writes under the fault; returns the column and the writes
    that went through."""
    slow = args.fault == "target-slow"
    results = []
    for off, n, seed in WRITES:
        data = pattern(seed, n)
        t0 = time.time()
        try:
            timed_pwrite(h, data, off, 2.5 if slow else 15)
            model.write(off, data)
            results.append("ok")
        except nbd.Error as e:
            log("guest write at %d+%d: %s" % (off, n, e))
            results.append(e.errno or "error")
        dt = time.time() - t0
        log("guest write at %d+%d: %s in %.2f s" % (off, n, results[-1], dt))
        if slow:
            check(dt < 2.5, "a guest write took %.2f s with cbw-timeout=1 "
                  "and a target that takes 3 s per write" % dt)
    oks = [w for w, r in zip(WRITES, results) if r == "ok"]
    distinct = []
    for r in results:
        if r not in distinct:
            distinct.append(r)
    if len(distinct) > 1:
        # Reported as such; the expected cell then does not match.
        log("the guest writes under the fault differ: %s" % results)
        return "differ: %s" % ", ".join(distinct), oks
    r = results[0]
    if r == "ok":
        return "ok", oks
    if args.fault == "target-slow":
        # NBD has no ETIMEDOUT: nbdkit sends it as EINVAL; the server
        # log says what it was.
        logged = "timed out" in read_log(args.log).lower()
        return ("fails: %s (client: %s)"
                % ("ETIMEDOUT" if logged else "?", r)), oks
    return "fails: %s" % r, oks


def snapshot_reads(hs, pre, copied):
    """Read every cluster of the snapshot; a read that succeeds must be
    exactly the snapshot point.  Returns the column."""
    nclusters = SIZE // C
    errs = {}
    wrong = []
    for c in range(nclusters):
        try:
            got = hs.pread(C, c * C)
        except nbd.Error as e:
            errs[c] = e.errno or "error"
            continue
        if got != pre[c * C:(c + 1) * C]:
            wrong.append(c)
    log("snapshot: %d of %d clusters fail (%s)"
        % (len(errs), nclusters, sorted(set(errs.values()))))
    if wrong:
        # Never acceptable, whatever the policy: this cell fails.
        log("WRONG DATA: snapshot reads of clusters %s succeeded but "
            "differ from the snapshot point" % wrong[:8])
        return "WRONG DATA in %d cluster(s), first at offset %d" \
            % (len(wrong), wrong[0] * C)
    if not errs:
        return POINT
    kinds = sorted(set(errs.values()))
    if len(errs) == nclusters:
        if kinds == ["EINVAL"] and \
           "Permission denied" in read_log(args.log):
            return "all fail: EACCES (client: EINVAL)"
        return "all fail: %s" % "/".join(kinds)
    if set(errs) == copied:
        return "copied clusters fail: %s; others = snapshot point" \
            % "/".join(kinds)
    return "clusters %s fail (%s); copied were %s" \
        % (sorted(errs)[:8], "/".join(kinds), sorted(copied))


def run():
    ctl = Ctl(args.ctl)
    h = connect(args.sock)
    model = Model(SIZE)
    data = pattern(1, SIZE)
    for off in range(0, SIZE, 8 * MiB):
        h.pwrite(data[off:off + 8 * MiB], off)
    model.write(0, data)
    h.flush()
    pre = model.bytes()

    ctl.ok("snapshot-begin")
    hs = connect(args.sock, "snapshot")
    copied = set()

    if args.fault != "target-slow":
        d = pattern(10, C)
        h.pwrite(d, A)
        model.write(A, d)
        copied |= clusters(A, C)
        check(hs.pread(C, A) == pre[A:A + C],
              "snapshot of cluster A before the fault")

    # The fault.
    if args.fault == "target-killed":
        kill_target()
    elif args.fault != "target-slow":
        open(args.trigger, "w").close()

    guest, oks = guest_writes(h, model)

    if args.fault == "source-read-eio":
        os.unlink(args.trigger)

    s = ctl.snap()
    log("status: %s" % s)
    check(s["active"] is True, "the snapshot is no longer active: %s" % s)
    broken = "null" if s["broken"] is None else \
        ("set" if isinstance(s["broken"], str) and s["broken"] else
         repr(s["broken"]))
    if s["broken"] is None:
        for off, n, _ in oks:
            copied |= clusters(off, n)

    snap = snapshot_reads(hs, pre, copied)

    # Live data: over NBD and in the file itself.
    live = read_all(h, SIZE)
    h.flush()
    want = sha(model.bytes())
    intact = "yes" if sha(live) == want and file_sha(args.disk) == want \
        else "NO"
    if intact != "yes":
        log("live sha256 %s, disk file %s, model %s"
            % (sha(live), file_sha(args.disk), want))

    row = (guest, snap, broken, intact)
    print("ROW | %s | %s | %s | %s | %s | %s |"
          % ((args.fault, args.policy) + row), flush=True)

    ctl.ok("snapshot-end")
    close(hs)
    close(h)

    exp = EXPECTED[(args.fault, args.policy)]
    names = ["guest write", "snapshot read", "status.broken", "live intact"]
    bad = ["%s: got '%s', the contract says '%s'" % (nm, g, e)
           for nm, g, e in zip(names, row, exp) if g != e]
    check(not bad, "%s / %s: %s" % (args.fault, args.policy,
                                     "; ".join(bad)))


run_main(run)

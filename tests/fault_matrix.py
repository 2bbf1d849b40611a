#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# One cell of test-fault-matrix.sh: one fault x one cbw-on-error policy.
# Prints the cell as a markdown table row
#
#   | fault | policy | guest write | snapshot read | status.broken |
#   | fault cleared | live intact |
#
# and asserts it against EXPECTED below (sections 3, 5 and 6 of the
# product contract).  The shell script compares the printed rows with
# the table in docs/fault-matrix.md too.
#
# What one cell does (32 MiB disk, 64K clusters):
#   1. fill the whole live disk with a pattern, flush; snapshot-begin
#      (target-too-small: snapshot-begin must be refused, clearly; the
#      cell then checks that nothing changed and the live disk works)
#   2. (except for the slow target, which would fail it) write cluster A
#      while the target works: its old data is copied to the target
#   3. inject the fault
#   4. two guest writes to clusters not copied yet (a whole cluster B,
#      and 2000 bytes across a cluster boundary): their result is the
#      "guest write" column (ok, or the error the client got; for errors
#      NBD cannot carry, the errno the server logged and what the client
#      saw)
#   5. source-read-eio and target-hung only: take the fault away (it
#      fails live reads too / the target answers again), then verify
#   6. status .snapshot.broken: null, or "set" (a reason string)
#   7. read the snapshot export cluster by cluster: any read that
#      succeeds must return exactly the snapshot point (never wrong
#      data); the column says which clusters fail and how.  A broken
#      snapshot must fail every read with EPERM, on a new connection
#      too, and the server log must say that it is broken
#   8. "fault cleared": the fault goes away (where it can: not for the
#      slow or the killed target); a guest write to two more clusters
#      must then succeed and the snapshot must read as before (the
#      snapshot point, or still broken); after snapshot-end a new
#      snapshot over the same target must work
#   9. sha256 of the whole live disk (over NBD, and of the disk file)
#      must equal the model of completed writes

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleece_lib import (MiB, Ctl, Model, check, close, connect, fail,
                        file_sha, log, pattern, read_all, read_log,
                        run_main, sha, timed_pwrite, try_connect,
                        kill_server)
import nbd

FAULTS = ["target-write-eio", "target-read-eio", "target-enospc",
          "target-slow", "target-hung", "target-killed", "source-read-eio",
          "target-too-small"]
BGW = "break-guest-write"
BS = "break-snapshot"

# The contract's answer for every cell: (guest write, snapshot read,
# status.broken, fault cleared, live intact).
POINT = "= snapshot point"
BROKEN = "all fail: EPERM"
COPIED_FAIL = "copied clusters fail: EIO; others = snapshot point"
TIMEDOUT = "fails: ETIMEDOUT (client: EINVAL)"
RECOVERS = "write ok, snapshot = point, next snapshot ok"
STAYS_BROKEN = "write ok, still broken, next snapshot ok"
REFUSED = "none: snapshot-begin refused (target smaller than the disk)"
EXPECTED = {
    ("target-write-eio", BGW): ("fails: EIO", POINT, "null", RECOVERS, "yes"),
    ("target-write-eio", BS): ("ok", BROKEN, "set", STAYS_BROKEN, "yes"),
    ("target-read-eio", BGW): ("ok", COPIED_FAIL, "null", RECOVERS, "yes"),
    ("target-read-eio", BS): ("ok", COPIED_FAIL, "null", RECOVERS, "yes"),
    ("target-enospc", BGW): ("fails: ENOSPC", POINT, "null", RECOVERS,
                             "yes"),
    ("target-enospc", BS): ("ok", BROKEN, "set", STAYS_BROKEN, "yes"),
    ("target-slow", BGW): (TIMEDOUT, POINT, "null", "-", "yes"),
    ("target-slow", BS): ("ok", BROKEN, "set", "-", "yes"),
    ("target-hung", BGW): (TIMEDOUT, POINT, "null", RECOVERS, "yes"),
    ("target-hung", BS): ("ok", BROKEN, "set", STAYS_BROKEN, "yes"),
    ("target-killed", BGW): ("fails: EIO", COPIED_FAIL, "null", "-", "yes"),
    ("target-killed", BS): ("ok", BROKEN, "set", "-", "yes"),
    ("source-read-eio", BGW): ("fails: EIO", POINT, "null", RECOVERS, "yes"),
    ("source-read-eio", BS): ("ok", BROKEN, "set", STAYS_BROKEN, "yes"),
    ("target-too-small", BGW): ("ok", REFUSED, "null", "-", "yes"),
    ("target-too-small", BS): ("ok", REFUSED, "null", "-", "yes"),
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
LATER = (6 * MiB, 2 * C, 30)                 # once the fault is cleared
SLOW = ("target-slow", "target-hung")        # cbw-timeout=1


def clusters(off, n):
    return set(range(off // C, (off + n - 1) // C + 1))


def target_pid():
    with open(args.target_pid_file) as f:
        return int(f.read())


def hang_target():
    """SIGSTOP the target: it keeps its connections but never answers."""
    pid = target_pid()
    os.kill(pid, signal.SIGSTOP)
    for _ in range(100):
        with open("/proc/%d/stat" % pid) as f:
            if f.read().split(")")[-1].split()[0] == "T":
                return
        time.sleep(0.02)
    fail("target nbdkit %d did not stop" % pid)


def clear_fault():
    """Take the fault away; False if it cannot be (slow, killed)."""
    if args.fault in ("target-slow", "target-killed", "target-too-small"):
        return False
    if args.fault == "target-hung":
        os.kill(target_pid(), signal.SIGCONT)
    elif os.path.exists(args.trigger):
        os.unlink(args.trigger)
    return True


def guest_writes(h, model):
    """The writes under the fault; returns the column and the writes
    that went through."""
    slow = args.fault in SLOW
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
                  "and a target that takes 3 s per write (or never "
                  "answers)" % dt)
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
    if slow:
        # NBD has no ETIMEDOUT: nbdkit sends it as EINVAL; the server
        # log says what it was.
        logged = "timed out" in read_log(args.log).lower()
        return ("fails: %s (client: %s)"
                % ("ETIMEDOUT" if logged else "?", r)), oks
    return "fails: %s" % r, oks


def all_refused(hs, what):
    """Sample reads of a broken snapshot: each must fail with EPERM."""
    for off in (0, A, 3 * MiB, LATER[0], SIZE - 4096):
        try:
            hs.pread(4096, off)
        except nbd.Error as e:
            if e.errno != "EPERM":
                return "%s: read at %d failed with %s (%s)" \
                    % (what, off, e.errno, e)
            continue
        return "%s: read at %d succeeded" % (what, off)
    return None


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
        col = "all fail: %s" % "/".join(kinds)
        if kinds == ["EPERM"]:
            # The reason is in the log, and a new connection to the
            # broken snapshot cannot read it either.
            if "is broken" not in read_log(args.log):
                return col + " (the log does not say it is broken)"
            h2, err = try_connect(args.sock, "snapshot")
            if h2 is not None:
                bad = all_refused(h2, "new connection")
                close(h2)
                if bad:
                    return col + " (%s)" % bad
            else:
                log("a new connection to the broken snapshot: %s" % err)
        return col
    if set(errs) == copied:
        return "copied clusters fail: %s; others = snapshot point" \
            % "/".join(kinds)
    return "clusters %s fail (%s); copied were %s" \
        % (sorted(errs)[:8], "/".join(kinds), sorted(copied))


def after_fault(ctl, h, hs, model, pre, broken):
    """The fault goes away: one more guest write, the snapshot as
    before, and after snapshot-end a new snapshot.  Returns the column;
    ends the snapshot in any case."""
    if not clear_fault():
        ctl.ok("snapshot-end")
        return "-"
    off, n, seed = LATER
    data = pattern(seed, n)
    try:
        timed_pwrite(h, data, off, 15)
    except nbd.Error as e:
        ctl.ok("snapshot-end")
        return "write fails: %s" % e.errno
    model.write(off, data)
    col = ["write ok"]
    if broken:
        bad = all_refused(hs, "broken snapshot after the fault")
        col.append("still broken" if bad is None else bad)
    else:
        try:
            ok = read_all(hs, SIZE) == pre
            col.append("snapshot = point" if ok else "WRONG DATA")
        except nbd.Error as e:
            col.append("snapshot read fails: %s" % e.errno)
    ctl.ok("snapshot-end")
    check(ctl.snap()["active"] is False, "still active after snapshot-end")

    # A new snapshot over the same target.
    now = model.bytes()
    r = ctl("snapshot-begin")
    if r.get("ok") is not True:
        col.append("next snapshot-begin fails: %s" % r.get("error"))
        return ", ".join(col)
    s = ctl.snap()
    hn = connect(args.sock, "snapshot")
    try:
        for off, n, seed in WRITES + [LATER]:
            data = pattern(seed + 100, n)
            timed_pwrite(h, data, off, 15)
            model.write(off, data)
        got = read_all(hn, SIZE)
        if s["broken"] is not None or ctl.snap()["broken"] is not None:
            col.append("next snapshot broken")
        elif got != now:
            col.append("next snapshot WRONG DATA")
        else:
            col.append("next snapshot ok")
    except nbd.Error as e:
        col.append("next snapshot fails: %s" % e.errno)
    close(hn)
    ctl.ok("snapshot-end")
    return ", ".join(col)


def too_small(ctl, h, model):
    """A target smaller than the disk: snapshot-begin is refused with an
    error naming cbw-target, and nothing changes.  Returns the row."""
    r = ctl("snapshot-begin")
    log("snapshot-begin with a 1M target: %s" % r)
    if r.get("ok") is not False:
        ctl("snapshot-end")
        return ("ok", "snapshot-begin accepted: %s" % r, "?", "-", "?")
    err = r.get("error") or ""
    check("cbw-target" in err and "at least as large as the disk" in err,
          "snapshot-begin refused a too small target with an unclear "
          "error: %r" % err)
    s = ctl.snap()
    check(s["active"] is False and s["clusters_copied"] == 0,
          "status after a refused snapshot-begin: %s" % s)
    hx, e = try_connect(args.sock, "snapshot")
    check(hx is None, "the snapshot export opens after a refused "
          "snapshot-begin")
    guest = []
    for off, n, seed in WRITES:
        data = pattern(seed, n)
        try:
            timed_pwrite(h, data, off, 15)
            model.write(off, data)
            guest.append("ok")
        except nbd.Error as e:
            guest.append(e.errno or "error")
    guest = "ok" if guest == ["ok"] * len(WRITES) else \
        "fails: %s" % "/".join(sorted(set(guest) - {"ok"}))
    broken = "null" if s["broken"] is None else repr(s["broken"])
    return (guest, REFUSED, broken, "-")


def live_intact(h, model):
    live = read_all(h, SIZE)
    h.flush()
    want = sha(model.bytes())
    if sha(live) == want and file_sha(args.disk) == want:
        return "yes"
    log("live sha256 %s, disk file %s, model %s"
        % (sha(live), file_sha(args.disk), want))
    return "NO"


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

    if args.fault == "target-too-small":
        row = too_small(ctl, h, model) + (live_intact(h, model),)
        return report(row, h)

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
        kill_server(args.target_pid_file)
    elif args.fault == "target-hung":
        hang_target()
    elif args.fault != "target-slow":
        open(args.trigger, "w").close()

    guest, oks = guest_writes(h, model)

    if args.fault in ("source-read-eio", "target-hung"):
        clear_fault()

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
    cleared = after_fault(ctl, h, hs, model, pre, s["broken"] is not None)
    close(hs)

    # Live data: over NBD and in the file itself.
    row = (guest, snap, broken, cleared, live_intact(h, model))
    report(row, h)


def report(row, h):
    print("ROW | %s | %s | %s | %s | %s | %s | %s |"
          % ((args.fault, args.policy) + row), flush=True)
    close(h)
    exp = EXPECTED[(args.fault, args.policy)]
    names = ["guest write", "snapshot read", "status.broken",
             "fault cleared", "live intact"]
    bad = ["%s: got '%s', the contract says '%s'" % (nm, g, e)
           for nm, g, e in zip(names, row, exp) if g != e]
    check(not bad, "%s / %s: %s" % (args.fault, args.policy,
                                     "; ".join(bad)))


def main():
    try:
        run()
    finally:
        # Never leave the target stopped.
        if args.fault == "target-hung" and args.target_pid_file and \
           os.path.exists(args.target_pid_file):
            try:
                os.kill(target_pid(), signal.SIGCONT)
            except OSError:
                pass


run_main(main)

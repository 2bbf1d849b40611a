#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# One case of test-fleece-policies.sh: the fleecing target fails while a
# snapshot is active (injected EIO / ENOSPC, a slow target with
# cbw-timeout, the target server killed, a target too small), under
# cbw-on-error=break-guest-write or break-snapshot.
#
# ("hang": the target server is stopped with SIGSTOP, so it accepts
# requests but never answers; with cbw-timeout=1 every copy must give
# up after about a second, not wait for the target.)
#
#   break-guest-write: the guest's write fails, the live data of that
#     region is unchanged, the snapshot stays readable and correct,
#     status .snapshot.broken is null.
#   break-snapshot: the guest's write succeeds, the snapshot is broken
#     (status .snapshot.broken is a reason, every snapshot read fails,
#     the server log says "Permission denied").
# In every case the live disk equals the model of completed writes.

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleece_lib import (MiB, Ctl, Model, check, close, connect, expect_error,
                        expect_same, fail, log, pattern, read_all, read_log,
                        run_main, timed_pwrite, try_connect,
                        kill_server)
import nbd

p = argparse.ArgumentParser()
p.add_argument("--case", required=True,
               choices=["eio", "enospc", "timeout", "hang", "kill", "full"])
p.add_argument("--policy", required=True,
               choices=["break-guest-write", "break-snapshot"])
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
p.add_argument("--log", required=True, help="the fleece server's log")
p.add_argument("--trigger", help="error filter's error-file")
p.add_argument("--target-pid-file", help="pid of the target nbdkit")
args = p.parse_args()

SIZE = 64 * MiB
C = 64 * 1024                   # the default cluster size
GUEST_WRITE = args.policy == "break-guest-write"


def target_pid():
    with open(args.target_pid_file) as f:
        return int(f.read())


def main():
    try:
        run()
    finally:
        if args.case == "hang":
            os.kill(target_pid(), signal.SIGCONT)


def run():
    ctl = Ctl(args.ctl)
    h = connect(args.sock)
    model = Model(SIZE)
    for off, n, seed in [(0, 8 * MiB, 1), (16 * MiB, 1 * MiB, 2)]:
        data = pattern(seed, n)
        h.pwrite(data, off)
        model.write(off, data)
    h.flush()
    pre = model.bytes()

    r = ctl("snapshot-begin")
    if args.case == "full" and r.get("ok") is False:
        return full_refused(ctl, h, model, r)
    check(r.get("ok") is True, "snapshot-begin: %s" % r)
    hs = connect(args.sock, "snapshot")

    # While the target works, a copy succeeds.
    copied = None
    if args.case not in ("timeout", "hang"):
        copied = (1 * MiB, C)
        data = pattern(10, C)
        h.pwrite(data, 1 * MiB)
        model.write(1 * MiB, data)
        expect_same(hs.pread(3 * C, 1 * MiB - C),
                    pre[1 * MiB - C:1 * MiB + 2 * C],
                    "snapshot around the copied cluster", 1 * MiB - C)

    if args.case == "full":
        return full_accepted(ctl, h, hs, model, pre)

    # The fault.
    if args.case in ("eio", "enospc"):
        open(args.trigger, "w").close()
    elif args.case == "hang":
        pid = target_pid()
        os.kill(pid, signal.SIGSTOP)
        for _ in range(100):
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] == "T":
                    break
            time.sleep(0.02)
        else:
            fail("target nbdkit %d did not stop" % pid)
    elif args.case == "kill":
        kill_server(args.target_pid_file)

    errnos = {"eio": ["EIO"], "enospc": ["ENOSPC"]}.get(args.case)
    # A whole data cluster, then a write over a cluster boundary.
    faults = [(3 * MiB, C, 20), (4 * MiB - 1000, 2000, 21)]
    if args.case == "hang" and GUEST_WRITE:
        faults.append((5 * MiB - 3 * C, 3 * C, 24))
    slow = args.case in ("timeout", "hang")
    for off, n, seed in faults:
        data = pattern(seed, n)
        what = "guest write at %d+%d with a failing target (%s)" \
            % (off, n, args.case)
        t0 = time.time()
        limit = 2.5 if slow else 10
        if GUEST_WRITE:
            e = expect_error(lambda: timed_pwrite(h, data, off, limit), what,
                             errnos)
            log("%s: %s" % (what, e))
        else:
            try:
                timed_pwrite(h, data, off, limit)
            except nbd.Error as e:
                fail("%s failed under break-snapshot: %s" % (what, e))
            model.write(off, data)
        dt = time.time() - t0
        log("  took %.2f s" % dt)
        if slow:
            check(dt < 2.5, "%s took %.2f s with cbw-timeout=1 and a target "
                  "that takes 3 s or more per write" % (what, dt))
        expect_same(h.pread(n + 2 * C, off - C), model.get(off - C, n + 2 * C),
                    "live data after the " + what, off - C)

    if args.case == "hang":
        # Let the target answer again; the snapshot must be as before.
        os.kill(target_pid(), signal.SIGCONT)

    s = ctl.snap()
    log("status: %s" % s)
    check(s["active"] is True, "snapshot no longer active: %s" % s)
    if GUEST_WRITE:
        check(s["broken"] is None,
              "break-guest-write broke the snapshot: %s" % s)
        if args.case == "kill":
            # Clusters still on the disk read correctly; the one in the
            # lost target may fail but never returns wrong data.
            for off in range(0, SIZE, 4 * MiB):
                expect_same(hs.pread(C, off + 2 * C),
                            pre[off + 2 * C:off + 3 * C],
                            "snapshot of an uncopied cluster at %d after "
                            "the target died" % (off + 2 * C), off + 2 * C)
            try:
                got = hs.pread(C, copied[0])
                expect_same(got, pre[copied[0]:copied[0] + C],
                            "snapshot of the copied cluster after the "
                            "target died")
            except nbd.Error as e:
                log("snapshot read of the copied cluster: %s" % e)
        else:
            expect_same(read_all(hs, SIZE), pre,
                        "snapshot after the failed copies")
            if slow:
                check("timed out" in read_log(args.log).lower(),
                      "the server log does not mention 'timed out'")
            if args.case == "hang":
                # The target answers again: copies work again.
                data = pattern(25, 2 * C)
                try:
                    timed_pwrite(h, data, 6 * MiB - C, 10)
                except nbd.Error as e:
                    fail("a guest write after the target answers again "
                         "failed: %s" % e)
                model.write(6 * MiB - C, data)
                expect_same(read_all(hs, SIZE), pre,
                            "snapshot after the target recovered")
    else:
        check(isinstance(s["broken"], str) and s["broken"] != "",
              "break-snapshot: status .snapshot.broken is %r"
              % (s["broken"],))
        for off in [0, 1 * MiB, 3 * MiB, 16 * MiB, 40 * MiB]:
            expect_error(lambda: hs.pread(4096, off),
                         "snapshot read at %d of a broken snapshot" % off)
        h2, err = try_connect(args.sock, "snapshot")
        if h2 is not None:
            expect_error(lambda: h2.pread(4096, 0),
                         "snapshot read on a new connection to a broken "
                         "snapshot")
            close(h2)
        check("Permission denied" in read_log(args.log),
              "the server log does not say 'Permission denied'")
        # Later writes still succeed and the snapshot stays broken.
        data = pattern(22, 3 * C)
        h.pwrite(data, 5 * MiB)
        model.write(5 * MiB, data)
        s = ctl.snap()
        check(s["active"] is True and isinstance(s["broken"], str),
              "status after more writes: %s" % s)

    expect_same(read_all(h, SIZE), model.bytes(), "live disk")

    # Recovery: the fault goes away.
    if args.case in ("eio", "enospc"):
        os.unlink(args.trigger)
        if GUEST_WRITE:
            off, n, seed = faults[0]
            data = pattern(seed, n)
            h.pwrite(data, off)
            model.write(off, data)
            expect_same(read_all(hs, SIZE), pre,
                        "snapshot after the copy succeeded on retry")

    ctl.ok("snapshot-end")
    check(ctl.snap()["active"] is False, "active after snapshot-end")
    close(hs)
    data = pattern(23, 2 * C)
    h.pwrite(data, 2 * MiB + 512)
    model.write(2 * MiB + 512, data)
    expect_same(read_all(h, SIZE), model.bytes(),
                "live disk after snapshot-end")

    if args.case in ("eio", "enospc"):
        # A new snapshot over the healed target works.
        now = model.bytes()
        ctl.ok("snapshot-begin")
        s = ctl.snap()
        check(s["broken"] is None, "new snapshot starts broken: %s" % s)
        hs = connect(args.sock, "snapshot")
        for off, n, seed in faults:
            data = pattern(seed + 100, n)
            h.pwrite(data, off)
            model.write(off, data)
        expect_same(read_all(hs, SIZE), now, "new snapshot")
        ctl.ok("snapshot-end")
        close(hs)
    expect_same(read_all(h, SIZE), model.bytes(), "live disk at the end")
    close(h)


def full_refused(ctl, h, model, r):
    """snapshot-begin refused a target smaller than the disk."""
    log("snapshot-begin with a 1M target: %s" % r)
    check(isinstance(r.get("error"), str) and
          any(w in r["error"].lower()
              for w in ("target", "small", "size", "space")),
          "snapshot-begin refused with an unclear error: %s" % r)
    s = ctl.snap()
    check(s["active"] is False and s["clusters_copied"] == 0,
          "status after a refused snapshot-begin: %s" % s)
    hx, err = try_connect(args.sock, "snapshot")
    check(hx is None, "snapshot export opens after a refused snapshot-begin")
    data = pattern(30, 4 * C)
    h.pwrite(data, 0)
    model.write(0, data)
    expect_same(read_all(h, SIZE), model.bytes(), "live disk")
    close(h)


def full_accepted(ctl, h, hs, model, pre):
    """The target fills up: writes to 2 MiB of clusters need more than
    the 1 MiB the target has."""
    failed = 0
    for i in range(32):
        off = 2 * MiB + i * C
        data = pattern(40 + i, C)
        try:
            h.pwrite(data, off)
            model.write(off, data)
        except nbd.Error as e:
            if not GUEST_WRITE:
                fail("write %d to a full target failed under "
                     "break-snapshot: %s" % (i, e))
            failed += 1
        expect_same(h.pread(C, off), model.get(off, C),
                    "live cluster %d" % i)
    s = ctl.snap()
    log("full target: %d of 32 writes failed; status %s" % (failed, s))
    if GUEST_WRITE:
        check(failed > 0, "no write failed although the 1M target cannot "
              "hold 2M of copies")
        check(s["broken"] is None, "snapshot broken: %s" % s)
        expect_same(read_all(hs, SIZE), pre, "snapshot with a full target")
    else:
        check(isinstance(s["broken"], str) and s["broken"] != "",
              "full target under break-snapshot: status %s" % s)
        expect_error(lambda: hs.pread(4096, 0), "read of a broken snapshot")
    expect_same(read_all(h, SIZE), model.bytes(), "live disk")
    ctl.ok("snapshot-end")
    close(hs)
    close(h)


run_main(main)

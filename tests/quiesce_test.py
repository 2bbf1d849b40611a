#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# quiesce / resume: writes (and zeroes, trims) are held, never failed,
# while reads go on; a snapshot begun while quiesced has exactly the
# writes completed before quiesce; the hold ends at resume or at its
# timeout (a coordinator that vanished); resume after the timeout says
# the hold had ended; the hold time is in the reply and in status.

import argparse
import threading
import time

from fleece_lib import (Ctl, check, close, connect, expect_same, fail,
                        pattern, run_main)

p = argparse.ArgumentParser()
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
args = p.parse_args()
C = 65536


def background(fn):
    done = {}

    def run():
        try:
            fn()
            done["t"] = time.time()
        except Exception as e:      # noqa: BLE001 - checked by the caller
            done["e"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, done


def main():
    ctl = Ctl(args.ctl)
    h = connect(args.sock)
    h.pwrite(pattern("q0", 1024 * 1024), 0)
    before = h.pread(1024 * 1024, 0)

    r = ctl.ok("quiesce timeout=10")
    check("drain_ms" in r, "quiesce reply: %s" % r)
    st = ctl.ok("status")["quiesce"]
    check(st["active"] is True, "status.quiesce: %s" % st)
    hw = connect(args.sock)
    jobs = [background(lambda: hw.pwrite(pattern("q1", C), 0)),
            background(lambda: connect(args.sock).zero(C, 2 * C)),
            background(lambda: connect(args.sock).trim(C, 4 * C))]
    time.sleep(0.5)
    for t, done in jobs:
        check(not done, "a write went through while quiesced: %s" % done)
    # Reads go on.
    expect_same(h.pread(1024 * 1024, 0), before, "read while quiesced")
    # A snapshot begun while quiesced is the disk before the held writes.
    ctl.ok("snapshot-begin name=g")
    t0 = time.time()
    r = ctl.ok("resume")
    check(r["held_ms"] >= 400 and r["writes_held"] >= 3,
          "resume reply: %s" % r)
    for t, done in jobs:
        t.join(5)
        check("t" in done, "a held write did not complete after resume: %s"
              % done)
        check(done["t"] >= t0, "a write completed before resume")
    hs = connect(args.sock, "snapshot@g")
    expect_same(hs.pread(1024 * 1024, 0), before, "snapshot taken while "
                "quiesced")
    close(hs)
    ctl.ok("snapshot-end name=g")
    st = ctl.ok("status")["quiesce"]
    check(st["active"] is False and st["last_hold_ms"] >= 400,
          "status after resume: %s" % st)

    # The coordinator vanishes: the hold ends at its timeout.
    ctl.ok("quiesce timeout=1")
    t0 = time.time()
    t, done = background(lambda: hw.pwrite(pattern("q2", C), 8 * C))
    t.join(10)
    check("t" in done, "a write held past the timeout: %s" % done)
    waited = done["t"] - t0
    check(0.8 <= waited <= 5, "the write waited %.2f s for a 1 s hold"
          % waited)
    ctl.refused("resume", "timeout")
    check(ctl.ok("status")["quiesce"]["expired"] >= 1, "expired not counted")
    ctl.refused("quiesce timeout=0")
    ctl.refused("quiesce timeout=lots")
    ctl.refused("resume", "not quiesced")
    close(hw)
    close(h)


run_main(main)

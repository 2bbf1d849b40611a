#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driven by test-safe-stale-delta.sh: connections to
# snapshot/since/c1 and to snapshot opened during one snapshot are dead
# after snapshot-end, even once another snapshot has begun: every
# request on them fails (pread of a changed and of an unchanged range,
# block status, flush) instead of answering from the new snapshot or
# from nothing.

import argparse

import nbd

from incr_lib import (check, log, pattern, connect, close, Ctl,
                      run_main, block_map, expect_same)

GRAN = 64 * 1024
CHANGED = 5 * GRAN               # written after c1: in the delta
UNCHANGED = 20 * GRAN            # never written


def requests(h, size):
    """The requests every stale connection must refuse, as
    (name, callable)."""
    def bs():
        block_map(h, size)

    return [
        ("pread of a changed range", lambda: h.pread(GRAN, CHANGED)),
        ("pread of an unchanged range", lambda: h.pread(GRAN, UNCHANGED)),
        ("block status", bs),
        ("flush", lambda: h.flush()),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--ctl", required=True)
    a = ap.parse_args()
    ctl = Ctl(a.ctl)

    ctl.ok("checkpoint-create c1")
    live = connect(a.sock)
    size = live.get_size()
    live.pwrite(pattern(1, GRAN), CHANGED)
    live.flush()
    ctl.ok("snapshot-begin")
    old = live.pread(size, 0)

    # strict=False: libnbd sends every request to the server, even one
    # the server did not advertise, so the server's answer is tested.
    conns = {}
    for export in ("snapshot/since/c1", "snapshot"):
        h = connect(a.sock, export, meta=True, strict=False)
        # They work while their snapshot is active.
        want = old[CHANGED:CHANGED + GRAN]
        expect_same(h.pread(GRAN, CHANGED), want,
                    "%s: pread while active" % export, CHANGED)
        want = (bytes(GRAN) if "since" in export
                else old[UNCHANGED:UNCHANGED + GRAN])
        expect_same(h.pread(GRAN, UNCHANGED), want,
                    "%s: pread while active" % export, UNCHANGED)
        block_map(h, size)
        log("%s: opened (can_flush %s)" % (export, h.can_flush()))
        conns[export] = h

    ctl.ok("snapshot-end")
    # Change both ranges, then a new snapshot.
    live.pwrite(pattern(2, GRAN), CHANGED)
    live.pwrite(pattern(3, GRAN), UNCHANGED)
    live.flush()
    ctl.ok("snapshot-begin")

    bad = []
    for export, h in conns.items():
        for what, fn in requests(h, size):
            try:
                fn()
            except nbd.Error as e:
                log("  old %s connection: %s fails: %s" % (export, what, e))
                continue
            bad.append("%s on the old %s connection" % (what, export))
            log("  old %s connection: %s SUCCEEDED" % (export, what))
    check(not bad, "after snapshot-end and a new snapshot-begin these "
          "succeeded, they must fail: %s" % "; ".join(bad))
    for h in conns.values():
        close(h)
    ctl.ok("snapshot-end")
    close(live)
    log("OK")


if __name__ == "__main__":
    run_main(main)

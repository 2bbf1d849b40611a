#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driven by test-safe-delta-fixed.sh: the delta view
# snapshot/since/c1 of a snapshot is fixed at the snapshot point.  Writes
# A land between checkpoint c1 and the snapshot, writes B after it; the
# delta view must map exactly A, and reading all of it must succeed and
# give the snapshot's data in A and zeroes elsewhere, whatever happens
# on the live disk after the snapshot point:
#
#   a  snapshot-begin since=c1 (no new checkpoint)
#   b  snapshot-begin checkpoint=c2 since=c1, then checkpoint-delete c2
#   c  snapshot-begin (a full snapshot, no new checkpoint)

import argparse

import nbd

from incr_lib import (fail, check, log, pattern, connect, close,
                      Ctl, run_main, delta_check, read_file)
from fleece_lib import read_all

GRAN = 64 * 1024
# (offset, length) of the writes: A touches granules 3, 10, 11;
# B touches 20, 21, 40.
WRITES_A = [(3 * GRAN + 100, 1000), (10 * GRAN + 60000, 70000)]
GRANULES_A = {3, 10, 11}
WRITES_B = [(20 * GRAN, 2 * GRAN), (40 * GRAN + 4096, 512)]


def write(h, writes, seed):
    for i, (off, n) in enumerate(writes):
        h.pwrite(pattern(seed + i, n), off)
    h.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--disk", required=True)
    ap.add_argument("--case", required=True, choices=["a", "b", "c"])
    a = ap.parse_args()
    ctl = Ctl(a.ctl)

    base = read_file(a.disk)         # the disk at checkpoint c1
    size = len(base)

    ctl.ok("checkpoint-create c1")
    h = connect(a.sock)
    write(h, WRITES_A, 100)
    if a.case == "a":
        ctl.ok("snapshot-begin since=c1")
    elif a.case == "b":
        ctl.ok("snapshot-begin checkpoint=c2 since=c1")
        ctl.ok("checkpoint-delete c2")
    else:
        ctl.ok("snapshot-begin")
    point = read_all(h, size)        # nothing else writes: the snapshot point
    check(point != base, "the writes A did not change the disk")
    write(h, WRITES_B, 200)
    close(h)
    log("case %s: A = granules %s written before the snapshot, B = 20, 21, "
        "40 after it" % (a.case, sorted(GRANULES_A)))

    try:
        delta_check(a.sock, "c1", size, GRAN, base, point, GRANULES_A,
                    "case %s" % a.case, exact=True, full_read=True)
    except nbd.Error as e:
        fail("case %s: a request on snapshot/since/c1 failed: %s"
             % (a.case, e))
    ctl.ok("snapshot-end")
    log("case %s: OK" % a.case)


if __name__ == "__main__":
    run_main(main)

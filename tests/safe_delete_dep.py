#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driven by test-safe-delete-dep.sh: a checkpoint that
# an active snapshot or an open delta connection depends on cannot be
# deleted.
#
#   since  snapshot-begin checkpoint=c2 since=c1: checkpoint-delete c1 is
#          refused (naming the snapshot / since), c1 stays listed, the
#          delta since c1 stays exact; after snapshot-end it is deleted.
#   open   a full snapshot and an open connection to snapshot/since/c1:
#          checkpoint-delete c1 is refused (naming the open connection)
#          and the connection keeps reading exactly; once it is closed,
#          c1 is deleted.

import argparse

import nbd

from incr_lib import (fail, check, log, pattern, connect, close, Ctl,
                      run_main, delta_check, read_file, block_map,
                      map_granules, check_granules, status_checkpoints,
                      expect_same)
from fleece_lib import read_all

GRAN = 64 * 1024
WRITES = [(2 * GRAN + 10, 5000), (7 * GRAN, 2 * GRAN), (30 * GRAN + 999, 1)]
GRANULES = {2, 7, 8, 30}


def names(ctl):
    return [c["name"] for c in status_checkpoints(ctl)]


def setup(a, ctl, begin):
    """c1, the writes, then the snapshot.  Returns (base, point)."""
    base = read_file(a.disk)
    ctl.ok("checkpoint-create c1")
    h = connect(a.sock)
    for i, (off, n) in enumerate(WRITES):
        h.pwrite(pattern(10 + i, n), off)
    h.flush()
    ctl.ok(begin)
    point = read_all(h, len(base))   # nothing else writes
    close(h)
    return base, point


def part_since(a, ctl):
    base, point = setup(a, ctl, "snapshot-begin checkpoint=c2 since=c1")
    ctl.refused("checkpoint-delete c1", r"snapshot|since")
    check("c1" in names(ctl), "status no longer lists c1 after a refused "
          "checkpoint-delete: %s" % names(ctl))
    try:
        delta_check(a.sock, "c1", len(base), GRAN, base, point, GRANULES,
                    "after the refused delete", exact=True, full_read=True)
    except nbd.Error as e:
        fail("after the refused delete: snapshot/since/c1: %s" % e)
    ctl.ok("snapshot-end")
    ctl.ok("checkpoint-delete c1")
    check("c1" not in names(ctl), "c1 still listed after it was deleted")


def part_open(a, ctl):
    base, point = setup(a, ctl, "snapshot-begin")
    size = len(base)
    h = connect(a.sock, "snapshot/since/c1", meta=True)
    ctl.refused("checkpoint-delete c1", r"open|connection|delta")
    check("c1" in names(ctl), "status no longer lists c1 after a refused "
          "checkpoint-delete: %s" % names(ctl))
    # The open connection still serves the delta exactly.
    try:
        got = map_granules(block_map(h, size), GRAN, size,
                           "open snapshot/since/c1")
        check_granules(got, GRANULES, GRAN, "open snapshot/since/c1")
        view = read_all(h, size)
    except nbd.Error as e:
        fail("the open snapshot/since/c1 connection failed after the "
             "refused delete: %s" % e)
    want = bytearray(size)
    for g in GRANULES:
        want[g * GRAN:(g + 1) * GRAN] = point[g * GRAN:(g + 1) * GRAN]
    expect_same(view, bytes(want), "reading the open snapshot/since/c1")
    close(h)
    ctl.ok("checkpoint-delete c1")
    check("c1" not in names(ctl), "c1 still listed after it was deleted")
    ctl.ok("snapshot-end")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--disk", required=True)
    ap.add_argument("--part", required=True, choices=["since", "open"])
    a = ap.parse_args()
    ctl = Ctl(a.ctl)
    if a.part == "since":
        part_since(a, ctl)
    else:
        part_open(a, ctl)
    log("%s: OK" % a.part)


if __name__ == "__main__":
    run_main(main)

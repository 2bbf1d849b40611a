#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driven by test-safe-resize.sh: the disk file
# shrinks (8M -> 8M-4K) while a snapshot is active and a new connection
# writes the last cluster of the new size.  The server stays up, the
# live disk holds the write, the snapshot is marked broken naming the
# size, and the snapshot never returns wrong data: reads of the last
# cluster fail, other reads either fail or return the pre-shrink
# contents.

import argparse
import os
import re

import nbd

from fleece_lib import (MiB, check, log, pattern, connect,
                        close, expect_same, Ctl, run_main)

CLUSTER = 64 * 1024


def pid_alive(pid_file):
    with open(pid_file) as f:
        pid = int(f.read())
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def check_snapshot_reads(h, pre, what):
    """Every successful read equals pre; reads of the last cluster of
    the old size fail.  Returns (ok reads, failed reads)."""
    old_size = len(pre)
    size = h.get_size()
    check(size <= old_size, "%s: size %d, larger than the disk at the "
          "snapshot point (%d)" % (what, size, old_size))
    nok = nfail = 0
    last = old_size - CLUSTER
    for off in range(0, size, CLUSTER):
        n = min(CLUSTER, size - off)
        try:
            got = h.pread(n, off)
        except nbd.Error:
            nfail += 1
            continue
        check(off < last,
              "%s: read of the last cluster (%d+%d) succeeded on a snapshot "
              "of a disk that shrank; it must fail" % (what, off, n))
        expect_same(got, pre[off:off + n], "%s: snapshot read at %d+%d"
                    % (what, off, n), base=off)
        nok += 1
    log("  %s: size %d, %d cluster reads correct, %d refused"
        % (what, size, nok, nfail))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--disk", required=True)
    a = ap.parse_args()
    ctl = Ctl(a.ctl)

    with open(a.disk, "rb") as f:
        pre = f.read()
    size = len(pre)
    check(size == 8 * MiB, "disk is %d bytes, expected 8 MiB" % size)
    new_size = size - 4096

    ctl.ok("snapshot-begin")
    h_old = connect(a.sock, "snapshot")
    check(h_old.get_size() == size, "snapshot size %d" % h_old.get_size())

    os.truncate(a.disk, new_size)
    log("disk truncated to %d while the snapshot is active" % new_size)

    data = pattern(8, CLUSTER - 4096)
    off = new_size - len(data)
    check(off == size - CLUSTER, "arithmetic")
    try:
        h = connect(a.sock)
        check(h.get_size() == new_size,
              "a new live connection sees %d bytes, the disk has %d"
              % (h.get_size(), new_size))
        h.pwrite(data, off)
        h.flush()
        close(h)
    except nbd.Error as e:
        log("the live write failed: %s" % e)
    check(pid_alive(a.pid_file),
          "nbdkit died after a write to a disk that shrank under an active "
          "snapshot")
    st = ctl.ok("status")
    log("status: %s" % st["snapshot"])

    with open(a.disk, "rb") as f:
        now = f.read()
    check(len(now) == new_size, "the disk is now %d bytes" % len(now))
    expect_same(now[off:], data, "the live disk after the write", base=off)

    broken = st["snapshot"].get("broken")
    check(isinstance(broken, str) and broken != "",
          "status: snapshot.broken is %r after the disk shrank under it; "
          "expected the reason" % (broken,))
    check(re.search(r"size|shr", broken, re.I),
          "status: snapshot.broken %r does not mention the size" % broken)

    check_snapshot_reads(h_old, pre, "snapshot connection opened before")
    close(h_old)
    try:
        h_new = connect(a.sock, "snapshot")
    except nbd.Error as e:
        log("  a new snapshot connection is refused: %s" % e)
    else:
        check_snapshot_reads(h_new, pre, "snapshot connection opened after")
        close(h_new)

    ctl.ok("snapshot-end")
    check(pid_alive(a.pid_file), "nbdkit died at snapshot-end")
    log("OK")


if __name__ == "__main__":
    run_main(main)

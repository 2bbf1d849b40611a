#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-cbw-buffer.sh: cbw-buffer=1M (16 clusters of 64K) in
# front of an NBD target whose every write takes 200 ms (nbdkit's delay
# filter) and fails with EIO while the file --fail exists (nbdkit's
# error filter).  The buffer writes to the target with 8 threads, so
# of 12 buffered copies 8 are being written and 4 wait their turn.
# Checked against the snapshot point's bytes:
#   1. twelve first-touch writes complete at once (each well under the
#      200 ms a target write takes): their copies wait in the buffer
#      (status buffer.used);
#   2. snapshot reads of those clusters, alone and together with
#      clusters still on the disk, equal the snapshot point while they
#      are in the buffer;
#   3. releasing a buffered cluster (TRIM of the snapshot export) drops
#      it from the buffer (used falls by 64K beyond what was flushed),
#      and reading it then fails with EPERM;
#   4. 24 more first-touch writes fill the buffer: they wait for the
#      target (buffer.waits grows, the 24 take >= 0.3 s) and the
#      snapshot stays exact, in the buffer and after it drained;
#   5. snapshot-end with copies in the buffer is prompt, empties it, and
#      the next snapshot serves its own point, not a stale copy;
#   6. a background write to the target that fails after the guest
#      write completed breaks the snapshot (reads fail with EPERM,
#      status says why, buffer.lost_bytes grows) and the live data is
#      the guest's;
#   7. a slot released while its copy is being written and then written
#      again for another snapshot holds the newer copy.
# Before all that: the whole buffer becomes resident in the background
# after start-up (status buffer.resident_bytes reaches its size).

import argparse
import os
import time

from fleece_lib import (Ctl, check, close, connect, expect_error,
                        expect_same,
                        fail, log, pattern, run_main)

C = 65536


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sock", required=True)
    p.add_argument("--ctl", required=True)
    p.add_argument("--point", required=True)    # the disk's initial bytes
    p.add_argument("--fail", required=True)     # exists: target writes fail
    a = p.parse_args()
    ctl = Ctl(a.ctl)
    with open(a.point, "rb") as f:
        point = f.read()
    live = connect(a.sock)
    size = live.get_size()

    def buf():
        return ctl.ok("status")["buffer"]

    def snap_read(c0, n):
        h = connect(a.sock, "snapshot")
        try:
            return h.pread(n * C, c0 * C)
        finally:
            close(h)

    def first_touch(c, seed):
        data = pattern(seed, 4096)
        t0 = time.time()
        live.pwrite(data, c * C + 4096)
        return time.time() - t0

    r = ctl.ok("status")["buffer"]
    check(r["size"] == 16 * C and r["used"] == 0,
          "status before any copy: %s" % r)
    # MADV_POPULATE_WRITE came with Linux 5.14; before it the chunks
    # are faulted in by their first use and nothing is counted.
    release = os.uname().release.split(".")
    if (int(release[0]), int(release[1].split("-")[0])) >= (5, 14):
        for _ in range(100):
            if buf()["resident_bytes"] == 16 * C:
                break
            time.sleep(0.1)
        check(buf()["resident_bytes"] == 16 * C,
              "the buffer was not made resident: %s" % buf())
    ctl.ok("snapshot-begin")

    log("1. twelve first-touch writes are buffered")
    for c in range(12):
        t = first_touch(c, c)
        check(t < 0.15, "write to cluster %d took %.3f s with room in the "
              "buffer (a target write takes 0.2 s)" % (c, t))
    b = buf()
    check(b["used"] >= 11 * C, "after 12 copies, buffer.used = %d"
          % b["used"])

    log("2. snapshot reads of buffered clusters")
    expect_same(snap_read(0, 12), point[0:12 * C], "buffered clusters 0-11")
    expect_same(snap_read(6, 10), point[6 * C:16 * C],
                "clusters 6-15, buffered and on the disk", 6 * C)
    check(buf()["used"] > 0, "the buffer drained before it was read: "
          "the reads did not test it")

    log("3. releasing a buffered cluster drops it")
    h = connect(a.sock, "snapshot")
    b0 = buf()
    h.trim(C, 11 * C)
    b1 = buf()
    dropped = (b0["used"] - b1["used"]) - (b1["flushed_bytes"] -
                                           b0["flushed_bytes"])
    check(dropped == C, "release of buffered cluster 11: used %d -> %d, "
          "flushed %d -> %d: %d bytes dropped, expected %d"
          % (b0["used"], b1["used"], b0["flushed_bytes"],
             b1["flushed_bytes"], dropped, C))
    expect_error(lambda: h.pread(C, 11 * C), "read of released cluster 11",
                 ["EPERM"])
    close(h)

    log("4. a full buffer makes writes wait")
    w0 = buf()["waits"]
    t0 = time.time()
    for c in range(12, 36):
        first_touch(c, c)
    t = time.time() - t0
    b = buf()
    check(b["waits"] > w0, "24 writes into a full buffer did not wait: %s"
          % b)
    check(t >= 0.3, "36 copies into a 16-cluster buffer over a 0.2 s "
          "target took only %.2f s" % t)
    check(b["used"] <= b["size"], "buffer over its size: %s" % b)
    expect_same(snap_read(0, 11), point[0:11 * C], "clusters 0-10")
    expect_same(snap_read(12, 28), point[12 * C:40 * C], "clusters 12-39",
                12 * C)
    deadline = time.time() + 10
    while buf()["used"] and time.time() < deadline:
        time.sleep(0.1)
    check(buf()["used"] == 0, "the buffer did not drain: %s" % buf())
    expect_same(snap_read(0, 11), point[0:11 * C], "clusters 0-10, drained")
    expect_same(snap_read(12, 28), point[12 * C:40 * C],
                "clusters 12-39, drained", 12 * C)

    log("5. snapshot-end with copies in the buffer")
    for c in range(36, 48):
        first_touch(c, c)
    check(buf()["used"] > 0, "nothing left in the buffer for snapshot-end")
    t0 = time.time()
    ctl.ok("snapshot-end")
    t = time.time() - t0
    check(t < 1.0, "snapshot-end took %.2f s with a buffer to discard" % t)
    check(buf()["used"] == 0, "buffer not empty after snapshot-end: %s"
          % buf())
    now = live.pread(size, 0)
    ctl.ok("snapshot-begin")
    for c in range(36, 48):
        first_touch(c, 100 + c)
    expect_same(snap_read(36, 12), now[36 * C:48 * C],
                "clusters 36-47 of the second snapshot", 36 * C)

    log("6. a background target write fails")
    lost0 = buf()["lost_bytes"]
    open(a.fail, "w").close()
    try:
        new = pattern(999, 4096)
        live.pwrite(new, 56 * C)        # completes: its copy is buffered
        deadline = time.time() + 10
        while ctl.snap()["broken"] is None and time.time() < deadline:
            time.sleep(0.1)
        s = ctl.snap()
        check(s["broken"] is not None and "cbw-buffer" in s["broken"],
              "snapshot not broken by a lost background write: %s" % s)
        check(buf()["lost_bytes"] > lost0, "lost_bytes: %s" % buf())
        h = connect(a.sock, "snapshot")
        expect_error(lambda: h.pread(C, 56 * C), "read of the lost cluster",
                     ["EPERM"])
        expect_error(lambda: h.pread(C, 30 * C), "read of a broken snapshot",
                     ["EPERM"])
        close(h)
        check(live.pread(4096, 56 * C) == new, "live data of cluster 56")
    finally:
        os.unlink(a.fail)
    ctl.ok("snapshot-end")

    log("7. a slot released while being written, then written again")
    ctl.ok("snapshot-begin")
    first_touch(60, 60)                 # copy to slot 60, being written
    h = connect(a.sock, "snapshot")
    h.trim(C, 60 * C)                   # slot 60 free again
    close(h)
    ctl.ok("snapshot-begin name=b")
    b_point = live.pread(C, 60 * C)
    first_touch(60, 61)                 # copy for b, to slot 60 again
    deadline = time.time() + 10
    while buf()["used"] and time.time() < deadline:
        time.sleep(0.1)
    h = connect(a.sock, "snapshot@b")
    expect_same(h.pread(C, 60 * C), b_point, "cluster 60 of snapshot b",
                60 * C)
    close(h)
    ctl.ok("snapshot-end name=b")
    ctl.ok("snapshot-end")
    close(live)


if __name__ == "__main__":
    run_main(main)

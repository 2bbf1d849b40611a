#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# One combination of test-fleece-scenario.sh: known data on the live
# disk, snapshot-begin, a series of writes, zeroes and trims through the
# live export, then the snapshot must still read the original bytes
# everywhere (libnbd, nbdcopy, qemu-img compare), the live disk the new
# ones; after snapshot-end the disk holds the new data, the snapshot is
# gone, and a second snapshot sees the new data, not stale copies.

import argparse
import os
import random
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleece_lib import (MiB, Ctl, Model, check, close, connect, expect_error,
                        expect_same, fail, file_sha, log, pattern, read_all,
                        run_main, sha, try_connect, uri)
import nbd

p = argparse.ArgumentParser()
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
p.add_argument("--cluster", type=int, required=True)
p.add_argument("--tmpdir", required=True)
p.add_argument("--source-file", help="the file plugin's file")
p.add_argument("--backend-sock", help="the server the nbd plugin uses")
p.add_argument("--target-file", help="cbw-target file, if any")
p.add_argument("--target-sock", help="cbw-target NBD server, if any")
args = p.parse_args()

SIZE = 64 * MiB
C = args.cluster

# Data on the disk before the snapshot: (offset, length, seed).
# Everything else is a hole.
PRE = [
    (0, 24 * MiB, 1),
    (32 * MiB, 2 * MiB, 2),
    (48 * MiB + 4096, 8192, 3),
    (60 * MiB, 4 * MiB, 4),
]


def ops():
    """Live-export operations after snapshot-begin, as
    (kind, offset, length, flags, seed)."""
    return [
        # A whole cluster.
        ("write", 1 * MiB, C, 0, 10),
        # Two partial clusters on either side of a cluster boundary.
        ("write", 3 * MiB + C - 512, 1024, 0, 11),
        # Adjacent clusters, then rewrite clusters already copied.
        ("write", 6 * MiB, C, 0, 12),
        ("write", 6 * MiB + C, C, 0, 13),
        ("write", 6 * MiB + 100, 200, 0, 14),
        ("write", 6 * MiB + C - 10, 20, 0, 15),
        # One unaligned write spanning many clusters.
        ("write", 9 * MiB + 100, 8 * C + 300, 0, 16),
        # Write zeroes over data: aligned (may punch holes), and
        # unaligned with NO_HOLE.
        ("zero", 19 * MiB, 2 * C, 0, None),
        ("zero", 22 * MiB + 1000, C, nbd.CMD_FLAG_NO_HOLE, None),
        # From data into a hole.
        ("write", 24 * MiB - 100, 200, 0, 17),
        # Trim data; then write into the trimmed (already copied) part.
        ("trim", 32 * MiB, 2 * C, 0, None),
        ("write", 32 * MiB + 4096, 4096, 0, 18),
        # Trim a small island of data (partly holes around it).
        ("trim", 48 * MiB, 16384, 0, None),
        # A write into a hole.
        ("write", 40 * MiB + 7, 3 * C // 2, 0, 19),
        # The very end of the disk.
        ("write", SIZE - 700, 700, 0, 20),
        # The same bytes again, and the first cluster of the disk.
        ("write", 1 * MiB, C, 0, 21),
        ("write", 0, 512, 0, 22),
    ]


def nbd_allocated(sock):
    """Bytes an NBD server reports as not a hole (base:allocation)."""
    h = connect(sock, meta=True)
    size = h.get_size()
    total = 0
    off = 0
    while off < size:
        ext = []

        def cb(meta, o, entries, err):
            if meta == "base:allocation":
                ext.extend(zip(entries[0::2], entries[1::2]))
            return 0
        h.block_status(size - off, off, cb)
        check(ext, "target block status returned nothing")
        for length, flags in ext:
            if not flags & 1:
                total += length
            off += length
    close(h)
    return total


def clusters(off, n):
    return range(off // C, (off + n + C - 1) // C)


def concurrent(model, now):
    """Four live connections write disjoint pieces of the same clusters
    at once (each cluster in 8 pieces, spread over the connections)
    while two snapshot connections read those clusters.  Every snapshot
    read must return the snapshot's data, whole: a copy must not pick
    up a neighbour's new piece, and a read must not see half a copy."""
    lives = [connect(args.sock) for _ in range(4)]
    snaps = [connect(args.sock, "snapshot") for _ in range(2)]
    ncl = min(16, 16 * MiB // C)
    piece = C // 8
    pieces = [(c * C + i * piece, piece)
              for c in range(ncl) for i in range(8)]
    rnd = random.Random(99)
    rnd.shuffle(pieces)
    writes = []
    reads = []
    for k, (off, n) in enumerate(pieces):
        data = pattern(1000 + k, n)
        hh = lives[k % 4]
        writes.append((hh, hh.aio_pwrite(data, off), data))
        model.write(off, data)
        if k % 3 == 0:
            c = rnd.randrange(ncl)
            buf = bytearray(C)
            hs = snaps[k % 2]
            reads.append((hs, hs.aio_pread(buf, c * C), buf, c * C))
    for hh in lives + snaps:
        while hh.aio_in_flight() > 0:
            hh.poll(-1)
    for hh, cookie, data in writes:
        check(hh.aio_command_completed(cookie), "concurrent write pending")
    for hs, cookie, buf, off in reads:
        check(hs.aio_command_completed(cookie), "concurrent read pending")
        expect_same(bytes(buf), now[off:off + C],
                    "snapshot read of cluster at %d during concurrent "
                    "writes" % off, off)
    for hh in lives + snaps:
        close(hh)


def main():
    h = connect(args.sock)
    check(h.get_size() == SIZE, "live size %d, expected %d"
          % (h.get_size(), SIZE))
    model = Model(SIZE)
    for off, n, seed in PRE:
        data = pattern(seed, n)
        for o in range(0, n, 8 * MiB):
            h.pwrite(data[o:o + 8 * MiB], off + o)
        model.write(off, data)
    h.flush()

    # The reference copy of the disk at the snapshot point.
    pre_img = os.path.join(args.tmpdir, "pre.img")
    subprocess.run(["nbdcopy", uri(args.sock), pre_img], check=True)
    with open(pre_img, "rb") as f:
        pre = f.read()
    expect_same(pre, model.bytes(), "nbdcopy of the live disk before the "
                "snapshot vs the written data")

    ctl = Ctl(args.ctl)
    s = ctl.snap()
    check(s["active"] is False, "active before snapshot-begin: %s" % s)
    ctl.ok("snapshot-begin")
    s = ctl.snap()
    check(s["active"] is True and isinstance(s["started"], str)
          and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
                       s["started"]) and s["broken"] is None
          and s["clusters_copied"] == 0,
          "status right after snapshot-begin: %s" % s)

    hs1 = connect(args.sock, "snapshot", meta=True)
    check(hs1.get_size() == SIZE, "snapshot size %d" % hs1.get_size())
    check(hs1.is_read_only(), "the snapshot export is not read-only")

    touched = set()
    needed = set()
    for kind, off, n, flags, seed in ops():
        what = "%s at %d+%d (cluster %d)" % (kind, off, n, C)
        cl = set(clusters(off, n))
        touched |= cl
        needed |= {c for c in cl if any(pre[c * C:(c + 1) * C])}
        if kind == "write":
            data = pattern(seed, n)
            h.pwrite(data, off, flags)
            model.write(off, data)
        elif kind == "zero":
            h.zero(n, off, flags)
            model.zero(off, n)
        elif kind == "trim":
            h.trim(n, off, flags)
            # Trimmed bytes read as before or as zero.
            got = h.pread(n, off)
            old = model.get(off, n)
            for i in ([] if got == old or not any(got) else range(n)):
                if got[i] != old[i] and got[i] != 0:
                    fail("%s: live byte %d reads %d, neither the old %d "
                         "nor zero" % (what, off + i, got[i], old[i]))
            model.write(off, got)
        # The region and a cluster either side, on both exports.
        lo = max(0, off - C)
        hi = min(SIZE, off + n + C)
        expect_same(h.pread(hi - lo, lo), model.get(lo, hi - lo),
                    "live read after " + what, lo)
        expect_same(hs1.pread(hi - lo, lo), pre[lo:hi],
                    "snapshot read after " + what, lo)

    h.flush()
    live = read_all(h, SIZE)
    expect_same(live, model.bytes(), "live disk after the writes")
    check(live != pre, "the writes changed nothing?")
    snap1 = read_all(hs1, SIZE)
    expect_same(snap1, pre, "snapshot (connection opened before the "
                "writes) vs the disk before the snapshot")
    check(sha(snap1) == sha(pre), "snapshot checksum")
    hs2 = connect(args.sock, "snapshot")
    for kind, off, n, flags, seed in ops():
        lo = max(0, off - C)
        hi = min(SIZE, off + n + C)
        expect_same(hs2.pread(hi - lo, lo), pre[lo:hi],
                    "snapshot (connection opened after the writes) at "
                    "%d+%d" % (lo, hi - lo), lo)
    close(hs2)

    # base:allocation on the snapshot must not call data zero.
    ext = []

    def cb(meta, off, entries, err):
        if meta == "base:allocation":
            for i in range(0, len(entries), 2):
                ext.append((entries[i], entries[i + 1]))
        return 0

    check(hs1.can_meta_context("base:allocation"),
          "snapshot export has no base:allocation")
    off = 0
    while off < SIZE:
        ext.clear()
        hs1.block_status(SIZE - off, off, cb)
        check(ext, "block status at %d returned nothing" % off)
        for length, flags in ext:
            if flags & 2 and any(pre[off:off + length]):
                fail("snapshot block status says ZERO at %d+%d but the "
                     "snapshot holds data there" % (off, length))
            off += length

    # nbdcopy (several connections) and qemu-img agree.
    snap_img = os.path.join(args.tmpdir, "snap.img")
    subprocess.run(["nbdcopy", uri(args.sock, "snapshot"), snap_img],
                   check=True)
    check(file_sha(snap_img) == sha(pre),
          "nbdcopy of the snapshot differs from the pre-snapshot copy")
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                        snap_img, pre_img])
    check(r.returncode == 0, "qemu-img compare snapshot vs pre-snapshot: "
          "exit %d" % r.returncode)

    s = ctl.snap()
    log("status during the snapshot: %s" % s)
    check(s["active"] is True and s["broken"] is None,
          "status during the snapshot: %s" % s)
    check(len(needed) <= s["clusters_copied"] <= len(touched),
          "clusters_copied %d, expected between %d (changed clusters that "
          "held data) and %d (clusters touched)"
          % (s["clusters_copied"], len(needed), len(touched)))
    check(s["target_bytes"] > 0, "target_bytes is %d" % s["target_bytes"])
    if args.target_file:
        st = os.stat(args.target_file)
        during = st.st_blocks * 512
        check(during > 0, "the target file %s has nothing allocated"
              % args.target_file)
    if args.target_sock:
        during = nbd_allocated(args.target_sock)
        check(during > 0, "the NBD target has nothing allocated")

    ctl.ok("snapshot-end")
    s = ctl.snap()
    check(s["active"] is False, "status after snapshot-end: %s" % s)
    expect_error(lambda: hs1.pread(4096, 1 * MiB),
                 "read from a snapshot connection after snapshot-end")
    close(hs1)
    hx, err = try_connect(args.sock, "snapshot")
    check(hx is None, "the snapshot export opens after snapshot-end")
    if args.target_file and os.path.exists(args.target_file):
        after = os.stat(args.target_file).st_blocks * 512
        check(after <= 64 * 1024,
              "the target file still has %d bytes allocated after "
              "snapshot-end (%d during)" % (after, during))
    if args.target_sock:
        after = nbd_allocated(args.target_sock)
        check(after == 0, "the NBD target still has %d bytes allocated "
              "after snapshot-end (%d during)" % (after, during))

    expect_same(read_all(h, SIZE), model.bytes(),
                "live disk after snapshot-end")
    # The data really reached the plugin.
    if args.source_file:
        with open(args.source_file, "rb") as f:
            expect_same(f.read(), model.bytes(), "source file")
    if args.backend_sock:
        hb = connect(args.backend_sock)
        expect_same(read_all(hb, SIZE), model.bytes(), "backend server")
        close(hb)

    # A second snapshot shows the disk as it is now, not the copies the
    # first one made; rewriting clusters copied last time preserves them
    # again.
    now = model.bytes()
    ctl.ok("snapshot-begin")
    s = ctl.snap()
    check(s["active"] is True and s["clusters_copied"] == 0
          and s["broken"] is None, "status after the second "
          "snapshot-begin: %s" % s)
    hs3 = connect(args.sock, "snapshot")
    for off, n, seed in [(1 * MiB, C, 30), (6 * MiB + 50, 2 * C, 31),
                         (32 * MiB, 4096, 32)]:
        data = pattern(seed, n)
        h.pwrite(data, off)
        model.write(off, data)
    concurrent(model, now)
    expect_same(read_all(hs3, SIZE), now, "second snapshot")
    expect_same(read_all(h, SIZE), model.bytes(),
                "live disk during the second snapshot")
    check(ctl.snap()["clusters_copied"] > 0,
          "second snapshot copied nothing")
    ctl.ok("snapshot-end")
    close(hs3)
    close(h)


run_main(main)

#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-snapshot-discard.sh: a provider releases regions of
# the snapshot with TRIM (snapshot-discard=true), 16 MiB disk, 64K
# clusters.  --target-file is the file that ends up holding the
# target's data: cbw-target=FILE itself, or the file an nbdkit file
# plugin serves as the NBD target.
#
#   1. fill the disk with a pattern; snapshot-begin; guest writes copy
#      clusters 0-7 and 16-23 to the target
#   2. the provider TRIMs, on the snapshot export:
#      - clusters 0-7 (copied): 512K released from the target
#      - clusters 64-67 (never copied): 256K released
#      - 96K from the middle of cluster 160 (1.5 clusters): exactly
#        cluster 161 released
#      - partial clusters only (a piece of copied cluster 16, 64K
#        straddling clusters 128 and 129, the tail of 161 again):
#        nothing released
#      - clusters 0-7 again: nothing more released
#      released_bytes must grow by exactly the released bytes each
#      time; target_bytes drops by the copied bytes released; the
#      target file loses exactly those blocks and has a hole there
#      (SEEK_DATA), the copies of clusters 16-23 stay
#   3. guest writes and zeroes to every released cluster: nothing is
#      copied (clusters_copied, target_bytes and the target file's
#      blocks unchanged)
#   4. every cluster of the snapshot is read: the released ones fail
#      with EPERM ("Operation not permitted"), all others read as the
#      snapshot point (partially trimmed clusters included)
#   5. the live disk (over NBD and the disk file) equals the model.

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleece_lib import (MiB, Ctl, Model, check, close, connect, expect_same,
                        fail, file_sha, log, pattern, read_all, read_log,
                        run_main, sha)
import nbd

p = argparse.ArgumentParser()
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
p.add_argument("--disk", required=True, help="the live disk's file")
p.add_argument("--log", required=True, help="the fleece server's log")
p.add_argument("--target-file", required=True)
args = p.parse_args()

SIZE = 16 * MiB
C = 64 * 1024


def blocks():
    """Bytes the target file has allocated."""
    os.sync()
    return os.stat(args.target_file).st_blocks * 512


def first_data():
    """Offset of the first data in the target file (SEEK_DATA)."""
    fd = os.open(args.target_file, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    except OSError:
        return None                     # all hole
    finally:
        os.close(fd)


def run():
    ctl = Ctl(args.ctl)
    h = connect(args.sock)
    model = Model(SIZE)
    data = pattern(1, SIZE)
    h.pwrite(data, 0)
    model.write(0, data)
    h.flush()
    pre = model.bytes()

    ctl.ok("snapshot-begin")
    hs = connect(args.sock, "snapshot")
    check(hs.can_trim(), "the snapshot export does not offer TRIM with "
          "snapshot-discard=true")

    # 1. Copies of clusters 0-7 and 16-23.
    for c0 in (0, 16):
        d = pattern(10 + c0, 8 * C)
        h.pwrite(d, c0 * C)
        model.write(c0 * C, d)
    s = ctl.snap()
    log("after the copies: %s; target file holds %d bytes"
        % (s, blocks()))
    check(s["clusters_copied"] == 16 and s["target_bytes"] == 16 * C and
          s["released_bytes"] == 0, "status after copying 16 clusters: %s"
          % s)
    check(blocks() >= 16 * C, "the target file holds %d bytes after 16 "
          "clusters were copied" % blocks())
    check(first_data() == 0, "the target file has no data at offset 0 "
          "after cluster 0 was copied")

    # 2. Releases.
    released = set()

    def trim(off, n, newly, from_target, what):
        b0, s0 = blocks(), ctl.snap()
        hs.trim(n, off)
        s1 = ctl.snap()
        b1 = blocks()
        log("trim %d+%d (%s): released_bytes %d -> %d, target_bytes "
            "%d -> %d, target file %d -> %d bytes"
            % (off, n, what, s0["released_bytes"], s1["released_bytes"],
               s0["target_bytes"], s1["target_bytes"], b0, b1))
        check(s1["released_bytes"] - s0["released_bytes"] == len(newly) * C,
              "%s: released_bytes grew by %d, expected %d"
              % (what, s1["released_bytes"] - s0["released_bytes"],
                 len(newly) * C))
        check(s0["target_bytes"] - s1["target_bytes"] == from_target * C,
              "%s: target_bytes fell by %d, expected %d"
              % (what, s0["target_bytes"] - s1["target_bytes"],
                 from_target * C))
        check(b0 - b1 == from_target * C,
              "%s: the target file freed %d bytes, expected %d"
              % (what, b0 - b1, from_target * C))
        check(s1["clusters_copied"] == s0["clusters_copied"],
              "%s: clusters_copied changed: %s -> %s" % (what, s0, s1))
        released.update(newly)

    trim(0, 8 * C, range(0, 8), 8, "copied clusters 0-7")
    check(first_data() == 16 * C,
          "after releasing clusters 0-7 the target file's first data is "
          "at %s, expected the copy of cluster 16 at %d"
          % (first_data(), 16 * C))
    trim(64 * C, 4 * C, range(64, 68), 0, "uncopied clusters 64-67")
    trim(160 * C + C // 2, 3 * C // 2, [161], 0,
         "1.5 clusters from the middle of cluster 160")
    trim(16 * C + 4096, C - 8192, [], 0, "inside copied cluster 16")
    trim(128 * C + C // 2, C, [], 0, "halves of clusters 128 and 129")
    trim(161 * C + C // 2, C // 2 + 4096, [], 0,
         "the tail of released 161 and the head of 162")
    trim(0, 8 * C, [], 0, "clusters 0-7 again")
    s = ctl.snap()
    check(s["released_bytes"] == 13 * C and s["target_bytes"] == 8 * C,
          "status after the releases: %s" % s)

    # 3. Guest writes and zeroes to released clusters copy nothing.
    b0 = blocks()
    for c in sorted(released):
        if c % 2:
            h.zero(C, c * C)
            model.zero(c * C, C)
        else:
            d = pattern(100 + c, C)
            h.pwrite(d, c * C)
            model.write(c * C, d)
    s1 = ctl.snap()
    log("after writing every released cluster: %s; target file %d bytes"
        % (s1, blocks()))
    check(s1["clusters_copied"] == s["clusters_copied"] and
          s1["target_bytes"] == s["target_bytes"] and
          s1["released_bytes"] == s["released_bytes"],
          "writes to released clusters changed the counters: %s -> %s"
          % (s, s1))
    check(blocks() == b0, "writes to released clusters grew the target "
          "file from %d to %d bytes" % (b0, blocks()))

    # 4. The snapshot: released clusters fail with EPERM, the rest is
    # the snapshot point.
    errs = {}
    for c in range(SIZE // C):
        try:
            got = hs.pread(C, c * C)
        except nbd.Error as e:
            errs[c] = e
            continue
        expect_same(got, pre[c * C:(c + 1) * C],
                    "snapshot cluster %d" % c, c * C)
    check(set(errs) == released,
          "snapshot reads failed for clusters %s, expected exactly the "
          "released %s" % (sorted(errs), sorted(released)))
    for c, e in sorted(errs.items()):
        check(e.errno == "EPERM" and "not permitted" in str(e),
              "reading released cluster %d failed with %s (%s), expected "
              "EPERM (Operation not permitted)" % (c, e.errno, e))
    # A read straddling a kept and a released cluster fails as well.
    try:
        hs.pread(8192, 8 * C - 4096)
        fail("a read across released cluster 7 and cluster 8 succeeded")
    except nbd.Error as e:
        check(e.errno == "EPERM", "a read across released cluster 7 and "
              "cluster 8 failed with %s, expected EPERM" % e.errno)
    check("does not hold this cluster" in read_log(args.log),
          "the server log does not say why the reads were refused")

    # 5. Live data.
    want = sha(model.bytes())
    check(sha(read_all(h, SIZE)) == want, "live disk differs from the model")
    h.flush()
    check(file_sha(args.disk) == want, "disk file differs from the model")

    close(hs)
    ctl.ok("snapshot-end")
    close(h)


run_main(run)

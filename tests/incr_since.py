#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-since-snapshot.sh.  Two servers, A and B, get the same
# disk contents and the same writes:
#
#   checkpoint-create c0; snapshot-begin checkpoint=c1 (full backup of A
#   with nbdcopy); snapshot-end; writes W1;
#   A: snapshot-begin checkpoint=c2 since=c1     B: ... checkpoint=c2
#   writes W2 (over clusters W1 changed and clusters it did not).
#
# Then:
#   - A's reply: clusters_preserved == the clusters overlapping a granule
#     W1 changed (< all clusters); B preserves every cluster;
#   - status clusters_copied: A == clusters W2 changed among the
#     preserved ones, B == every cluster W2 changed, so A < B;
#   - A's "snapshot": every preserved cluster reads as the snapshot
#     point; an unpreserved cluster (changed by W2 or not), and a read
#     spanning a preserved and an unpreserved one, fail with EPERM on
#     the wire (the log says the snapshot does not hold the cluster);
#   - A's snapshot/since/c1 maps exactly W1's granules and applied onto
#     the c1 full backup gives the disk at the snapshot point (sha256);
#     the same on B; snapshot/since/c0 is refused on A (older than since);
#   - both live disks hold the model.

import argparse
import os
import random
import subprocess

import nbd

from fleece_lib import Model
from incr_lib import *

ap = argparse.ArgumentParser()
ap.add_argument("--sock-a", required=True)
ap.add_argument("--ctl-a", required=True)
ap.add_argument("--log-a", required=True)
ap.add_argument("--sock-b", required=True)
ap.add_argument("--ctl-b", required=True)
ap.add_argument("--cluster", type=int, required=True)
ap.add_argument("--gran", type=int, default=64 * 1024)
ap.add_argument("--tmpdir", required=True)
ap.add_argument("--seed", type=int, default=5)
args = ap.parse_args()

C, G = args.cluster, args.gran


def clusters_of_granules(gs):
    out = set()
    for g in gs:
        out.update(range(g * G // C, ((g + 1) * G - 1) // C + 1))
    return out


def main():
    ca, cb = Ctl(args.ctl_a), Ctl(args.ctl_b)
    ha, hb = connect(args.sock_a), connect(args.sock_b)
    size = ha.get_size()
    check(hb.get_size() == size, "the two disks differ in size")
    nclusters = (size + C - 1) // C
    model = Model(size)
    rng = random.Random(args.seed)

    def both(kind, off, n):
        if kind == "write":
            data = pattern(rng.getrandbits(40), n)
            ha.pwrite(data, off)
            hb.pwrite(data, off)
            model.write(off, data)
        else:
            ha.zero(n, off)
            hb.zero(n, off)
            model.zero(off, n)

    # Data in every cluster, written before any checkpoint.
    for off in range(0, size, READ_CHUNK):
        both("write", off, min(READ_CHUNK, size - off))

    for c in (ca, cb):
        c.ok("checkpoint-create c0")
        c.ok("snapshot-begin checkpoint=c1")
    full = os.path.join(args.tmpdir, "full-c1.img")
    p = subprocess.run(["nbdcopy", uri(args.sock_a, "snapshot"), full],
                       stderr=subprocess.PIPE)
    check(p.returncode == 0, "nbdcopy of A's snapshot failed: %s"
          % p.stderr.decode(errors="replace"))
    expect_same(read_file(full), model.bytes(), "full backup at c1")
    for c in (ca, cb):
        c.ok("snapshot-end")

    def random_ops(count, region=None):
        """count requests; returns (granules, clusters) they touch."""
        gs, cs = set(), set()
        for _ in range(count):
            if region is None:
                off = rng.randrange(0, size - 1)
            else:
                off = rng.choice(region) * G + rng.randrange(0, G)
            n = min(rng.choice([1, 700, 4096, 30000, 65536, 150000]),
                    size - off)
            both("write" if rng.random() < 0.8 else "zero", off, n)
            gs.update(granules_of(off, n, G))
            cs.update(granules_of(off, n, C))
        return gs, cs

    # W1: about 15% of the disk changes after c1.
    w1, _ = random_ops(60)
    point = model.bytes()
    preserved = clusters_of_granules(w1)
    check(0 < len(preserved) < nclusters, "test bug: W1 covers %d of %d "
          "clusters" % (len(preserved), nclusters))

    ra = ca.ok("snapshot-begin checkpoint=c2 since=c1")
    rb = cb.ok("snapshot-begin checkpoint=c2")
    check(ra.get("clusters_preserved") == len(preserved),
          "A: snapshot-begin since=c1: clusters_preserved %s, expected %d "
          "(the clusters overlapping the %d granules changed since c1; %d "
          "clusters in all)" % (ra.get("clusters_preserved"),
                                len(preserved), len(w1), nclusters))
    if "clusters_preserved" in rb:
        check(rb["clusters_preserved"] == nclusters,
              "B: full snapshot preserves %s clusters, expected all %d"
              % (rb["clusters_preserved"], nclusters))

    # W2: random writes, plus some into W1's granules and some outside.
    outside = [g for g in range(size // G) if g not in w1]
    touched_clusters = set()
    for count, region in ((40, None), (15, sorted(w1)), (15, outside)):
        touched_clusters |= random_ops(count, region)[1]

    sa, sb = ca.snap(), cb.snap()
    want_a = len(touched_clusters & preserved)
    want_b = len(touched_clusters)
    log("C=%d: preserved %d of %d clusters; W2 touched %d clusters, %d of "
        "them preserved; clusters_copied A=%s B=%s"
        % (C, len(preserved), nclusters, want_b, want_a,
           sa["clusters_copied"], sb["clusters_copied"]))
    check(sb["clusters_copied"] == want_b,
          "B (full snapshot): clusters_copied %d, expected %d (each cluster "
          "W2 touched, once)" % (sb["clusters_copied"], want_b))
    check(sa["clusters_copied"] == want_a,
          "A (since=c1): clusters_copied %d, expected %d (only the clusters "
          "W2 touched that changed since c1)" % (sa["clusters_copied"],
                                                 want_a))
    check(sa["clusters_copied"] < sb["clusters_copied"],
          "since=c1 copied %d clusters, not fewer than the full snapshot's %d"
          % (sa["clusters_copied"], sb["clusters_copied"]))

    # A's snapshot: preserved clusters read as the point, others fail.
    hs = connect(args.sock_a, "snapshot")
    for c in sorted(preserved):
        n = min(C, size - c * C)
        got = hs.pread(n, c * C)
        if got != point[c * C:c * C + n]:
            expect_same(got, point[c * C:c * C + n],
                        "A: preserved cluster %d of the snapshot" % c)
    unpres = [c for c in range(nclusters) if c not in preserved]
    picks = [c for c in unpres if c in touched_clusters][:3] + \
            [c for c in unpres if c not in touched_clusters][:3]
    check(len(picks) == 6, "test bug: not enough unpreserved clusters")
    for c in picks:
        try:
            hs.pread(4096, c * C + (C - 4096) // 2)
        except nbd.Error as e:
            check(e.errno == "EPERM",
                  "A: reading unpreserved cluster %d failed with %s (%s), "
                  "expected EPERM" % (c, e.errno, e))
            continue
        fail("A: reading unpreserved cluster %d (%s by W2) of the since=c1 "
             "snapshot succeeded, expected it to fail"
             % (c, "changed" if c in touched_clusters else "not changed"))
    # A read spanning a preserved cluster and an unpreserved neighbour.
    span = [c for c in sorted(preserved)
            if c + 1 < nclusters and c + 1 not in preserved]
    check(span, "test bug: no preserved cluster next to an unpreserved one")
    c = span[0]
    try:
        hs.pread(2 * 4096, (c + 1) * C - 4096)
        fail("A: a read across preserved cluster %d and unpreserved %d "
             "succeeded, expected it to fail" % (c, c + 1))
    except nbd.Error as e:
        check(e.errno == "EPERM",
              "A: a read across preserved cluster %d and unpreserved %d "
              "failed with %s (%s), expected EPERM" % (c, c + 1, e.errno, e))
    close(hs)
    check("does not hold this cluster" in read_log(args.log_a),
          "A: the log does not say why the reads were refused")

    # Delta backups since c1 onto the c1 full backup.
    base = read_file(full)
    delta_check(args.sock_a, "c1", size, G, base, point, w1,
                "A (since=c1 snapshot)", exact=True, full_read=True)
    delta_check(args.sock_b, "c1", size, G, base, point, w1,
                "B (full snapshot)", exact=True, full_read=False,
                use_nbdinfo=False)
    expect_open_refused(args.sock_a, "snapshot/since/c0",
                        "A: delta view older than since=c1")
    for c in (ca, cb):
        c.ok("snapshot-end")

    for h, name in ((ha, "A"), (hb, "B")):
        live = b"".join(h.pread(min(READ_CHUNK, size - o), o)
                        for o in range(0, size, READ_CHUNK))
        expect_same(live, model.bytes(), "%s: live disk" % name)
        close(h)


run_main(main)

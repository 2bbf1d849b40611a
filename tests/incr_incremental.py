#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-incremental.sh: an incremental backup chain end to end,
# with live writers running during every backup.
#
# Two writer threads (own libnbd connections) do seeded random writes,
# zeroes and trims on the live export all the time.  At each snapshot
# point they are paused (a barrier) just long enough to record the model
# of the disk and the granules written since the previous point, then
# snapshot-begin checkpoint=cN is sent and they resume while the backup
# reads.
#
#   c1      full backup: nbdcopy of "snapshot" == model at c1.
#   c2..c4  plain snapshot-begin checkpoint=c<k+1>; the delta view
#           snapshot/since/c<k>: its map (libnbd block status, and
#           nbdinfo --map agrees) is EXACTLY the granules written in
#           between, the rest reads as zeroes; pread of the data extents
#           applied onto backup k gives the model at the point (sha256).
#   c5      snapshot-begin checkpoint=c5 since=c4: clusters_preserved is
#           the changed clusters, the delta backup is still correct, and
#           a delta view older than c4 is refused.
#   delete c3 (a middle checkpoint): c2's dirty_bytes becomes the union.
#   c6      since c5 exact; since c2 (across the deleted c3) maps every
#           granule written since c2 and applied onto the KEPT backup 2
#           gives the model; since c4 onto backup 4 too; since c3 refused.
#   delete c6 while it records (writers running): c5 records again.
#   c7      since c5 covers everything since c5, applied onto backup 5.
# status after every step: one recording checkpoint (the newest), the
# others frozen with dirty_bytes == written granules * granularity,
# consistent true, persistent false (no bitmap-file).

import argparse
import os
import random
import subprocess
import time

from fleece_lib import Model
from incr_lib import *

ap = argparse.ArgumentParser()
ap.add_argument("--sock", required=True)
ap.add_argument("--ctl", required=True)
ap.add_argument("--tmpdir", required=True)
ap.add_argument("--size", type=int, default=64 * MiB)
ap.add_argument("--gran", type=int, default=64 * 1024)
ap.add_argument("--seed", type=int, default=7)
args = ap.parse_args()

SIZE = args.size
G = args.gran


def main():
    ctl = Ctl(args.ctl)
    model = Model(SIZE)

    # Initial data (before any checkpoint, so untracked): patterns over
    # about a third of the disk, in runs of 1-4 MiB.
    h = connect(args.sock)
    check(h.get_size() == SIZE, "disk size %d" % h.get_size())
    rng = random.Random(args.seed)
    for i in range(8):
        off = rng.randrange(0, SIZE // MiB - 4) * MiB + rng.randrange(0, G)
        n = rng.randint(1, 4) * MiB
        data = pattern(args.seed * 100 + i, n)
        h.pwrite(data, off)
        model.write(off, data)
    close(h)

    st = ctl.ok("status")
    check(st["checkpoints"] == [], "checkpoints before any: %s"
          % st["checkpoints"])

    w = Writers(args.sock, model, SIZE, G, n=2, seed=args.seed, rate=120)
    w.start()
    time.sleep(0.2)

    chain = []          # names, oldest first (what status must list)
    frozen = {}         # name -> granules it must hold (once not recording)
    intervals = {}      # name -> granules written while it recorded
    backups = {}        # name -> path of the backup at its point
    points = {}         # name -> model at its point

    def expect_status(snapshot_active):
        st = ctl.ok("status")
        cps = st["checkpoints"]
        names = [c["name"] for c in cps]
        check(names == chain, "status lists checkpoints %s, expected %s"
              % (names, chain))
        for c in cps:
            what = "status of checkpoint %s" % c["name"]
            check(c["recording"] is (c["name"] == chain[-1]),
                  "%s: recording is %s (the newest, %s, must be the only "
                  "recording one)" % (what, c["recording"], chain[-1]))
            check(c["consistent"] is True, "%s: consistent %s"
                  % (what, c["consistent"]))
            check(c["persistent"] is False,
                  "%s: persistent %s without bitmap-file"
                  % (what, c["persistent"]))
            check(isinstance(c["created"], str) and c["created"].endswith("Z"),
                  "%s: created %r" % (what, c["created"]))
            if c["name"] in frozen:
                want = len(frozen[c["name"]]) * G
                check(c["dirty_bytes"] == want and want > 0,
                      "%s: dirty_bytes %d, expected %d (%d granules "
                      "written while it recorded)"
                      % (what, c["dirty_bytes"], want,
                         len(frozen[c["name"]])))
        check(st["snapshot"]["active"] is snapshot_active,
              "status snapshot.active %s, expected %s"
              % (st["snapshot"]["active"], snapshot_active))
        return st

    def point(name, since=None):
        """Pause the writers, record, snapshot-begin, resume."""
        w.pause()
        pm = model.bytes()
        written = w.take_written()
        if chain:
            intervals[chain[-1]] = intervals.get(chain[-1], set()) | written
            frozen[chain[-1]] = intervals[chain[-1]]
        line = "snapshot-begin checkpoint=%s" % name
        if since:
            line += " since=%s" % since
        r = ctl.ok(line)
        w.resume()
        chain.append(name)
        points[name] = pm
        log("%s: %d granule(s) written since the previous point, "
            "%d writer requests so far" % (line, len(written), w.ops))
        return pm, written, r

    def end():
        ctl.ok("snapshot-end")
        expect_status(False)

    # --- c1: the full backup, read with nbdcopy while writers run.
    pm, _, _ = point("c1")
    expect_status(True)
    b1 = os.path.join(args.tmpdir, "backup-c1.img")
    p = subprocess.run(["nbdcopy", uri(args.sock, "snapshot"), b1],
                       stderr=subprocess.PIPE)
    check(p.returncode == 0, "nbdcopy of the snapshot failed: %s"
          % p.stderr.decode(errors="replace"))
    expect_same(read_file(b1), pm, "full backup c1 (nbdcopy)")
    log("  full backup c1 OK, sha256 %s" % sha(pm)[:16])
    backups["c1"] = b1
    w.check()
    end()
    time.sleep(0.4)

    def incremental(prev, new, since=None, full_read=True):
        pm, written, r = point(new, since)
        expect_status(True)
        st = [c for c in ctl.ok("status")["checkpoints"]
              if c["name"] == prev][0]
        check(st["dirty_bytes"] > 0, "dirty_bytes of %s is 0 after %d "
              "granules were written" % (prev, len(written)))
        base = read_file(backups[prev])
        out, got = delta_check(args.sock, prev, SIZE, G, base, pm,
                               intervals[prev],
                               "incremental %s -> %s" % (prev, new),
                               exact=True, full_read=full_read)
        path = os.path.join(args.tmpdir, "backup-%s.img" % new)
        write_sparse(path, out)
        backups[new] = path
        w.check()
        return r

    # --- c2..c4: plain snapshots with a new checkpoint.
    for k in range(1, 4):
        incremental("c%d" % k, "c%d" % (k + 1))
        end()
        time.sleep(0.3)

    # --- c5: snapshot-begin since=c4.
    r = incremental("c4", "c5", since="c4")
    want = len(intervals["c4"])          # cluster size == granularity here
    check(r.get("clusters_preserved") == want,
          "snapshot-begin since=c4: clusters_preserved %s, expected %d "
          "(the clusters changed since c4)" % (r.get("clusters_preserved"),
                                               want))
    check(want < SIZE // G, "the test wrote every cluster; lower the rate")
    for old in ("c3", "c1"):
        msg = expect_open_refused(args.sock, "snapshot/since/%s" % old,
                                  "snapshot begun with since=c4")
        log("  snapshot/since/%s refused as expected: %s" % (old, msg))
    end()
    time.sleep(0.3)

    # --- delete a middle checkpoint: c3 merges into c2.
    ctl.ok("checkpoint-delete c3")
    chain.remove("c3")
    frozen["c2"] = intervals["c2"] = intervals["c2"] | intervals["c3"]
    expect_status(False)
    time.sleep(0.3)

    # --- c6: deltas since c5, c4 and (across the deleted c3) c2.
    incremental("c5", "c6", full_read=False)
    since_c2 = set().union(intervals["c2"], intervals["c4"], intervals["c5"])
    delta_check(args.sock, "c2", SIZE, G, read_file(backups["c2"]), points["c6"],
                since_c2, "since c2 across deleted c3", exact=False,
                full_read=True)
    delta_check(args.sock, "c4", SIZE, G, read_file(backups["c4"]), points["c6"],
                intervals["c4"] | intervals["c5"], "since c4 (two checkpoints)",
                exact=True, full_read=False, use_nbdinfo=False)
    expect_open_refused(args.sock, "snapshot/since/c3", "deleted checkpoint c3")
    w.check()
    end()
    time.sleep(0.3)

    # --- delete the recording checkpoint c6 while writers run: c5 records.
    ctl.ok("checkpoint-delete c6")
    chain.remove("c6")
    del frozen["c5"]
    time.sleep(0.3)
    st = expect_status(False)
    check([c["name"] for c in st["checkpoints"] if c["recording"]] == ["c5"],
          "after deleting the recording c6, c5 must record: %s"
          % st["checkpoints"])

    # --- c7: since c5 covers what c5 and the deleted c6 recorded.
    pm, written, _ = point("c7")
    expect_status(True)
    delta_check(args.sock, "c5", SIZE, G, read_file(backups["c5"]), pm,
                intervals["c5"], "since c5 across deleted c6 (recording)",
                exact=False, full_read=True)
    end()

    w.stop()
    h = connect(args.sock)
    live = b"".join(h.pread(min(READ_CHUNK, SIZE - o), o)
                    for o in range(0, SIZE, READ_CHUNK))
    close(h)
    expect_same(live, model.bytes(), "live disk after all rounds")
    log("writers did %d requests; live disk matches the model" % w.ops)


run_main(main)

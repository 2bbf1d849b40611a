#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Backup jobs that do not complete, with bitmap-file persistence:
#  - the target fails with EIO mid-job (nbdkit's error filter in front
#    of an NBD target, turned on by a trigger file): the job fails with
#    a clear error, the checkpoint it started is merged back, live
#    writers running throughout never see an error, and the next
#    incremental since the older checkpoint equals the disk;
#  - nbdkit stopped with SIGTERM mid-job: after a restart the job's
#    checkpoint is gone (merged back before the file was saved), the
#    older one is consistent and the next incremental since it equals
#    the disk;
#  - nbdkit killed with SIGKILL mid-job (bitmap-sync=write-ahead, the
#    default): after a restart the job's provisional checkpoint is
#    merged back, the older ones are consistent and the next
#    incremental since the older one equals the disk;
#  - the same with bitmap-sync=clean-stop: the checkpoints are
#    inconsistent, an incremental backup is refused (never silently
#    wrong) and a full one works.

import argparse
import os
import signal

from fleece_lib import Model, Ctl, run_main
from incr_lib import MiB, check, log, expect_same, read_file, Writers
from job_lib import (Server, stack, fill, start_job, wait_job,
                     expect_completed, wait_progress, checkpoint_names, uri)

SIZE = 32 * MiB
GRAN = 64 * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmpdir", required=True)
    ap.add_argument("--filters", nargs=3, required=True)
    a = ap.parse_args()
    t = a.tmpdir
    disk, sock, ctlp = t + "/disk.img", t + "/nbd.sock", t + "/ctl.sock"
    bm = "bitmap-file=" + t + "/disk.bitmaps"
    raw = t + "/raw.img"
    with open(disk, "wb") as f:
        f.truncate(SIZE)

    bm_args = [""]              # bitmap-sync=..., changed in case 4

    def start():
        return stack(t, disk, sock, ctlp, a.filters,
                     [bm] + [x for x in bm_args if x])

    srv = start()
    ctl = Ctl(ctlp)
    model = Model(SIZE)
    fill(sock, model, [(0, 16 * MiB)])
    jid = start_job(ctl, "target=%s checkpoint=c1" % raw)
    expect_completed(ctl, jid)
    expect_same(read_file(raw), model.bytes(), "full backup c1")

    # 1. The target fails mid-job; writers run throughout.
    writers = Writers(sock, model, SIZE, GRAN, n=2, rate=80)
    writers.start()
    esock, trigger = t + "/eio.sock", t + "/eio.trigger"
    e = Server(esock, ["nbdkit", "-f", "--filter=error", "memory", str(SIZE),
                       "error-pwrite-rate=100%", "error-file=" + trigger])
    jid = start_job(ctl, "target=%s checkpoint=c2 target-zeroed=true "
                    "speed=4M" % uri(esock))
    wait_progress(ctl, jid, 1)
    with open(trigger, "w"):
        pass
    j = wait_job(ctl, jid, 30)
    check(j["state"] == "failed", "job with a failing target ended %s"
          % j["state"])
    check(j["error"] and "target" in j["error"] and
          "Input/output error" in j["error"],
          "failed job's error does not name the target and EIO: %r"
          % j["error"])
    check(j["bytes_done"] < j["bytes_total"], "the EIO came after the end")
    names = checkpoint_names(ctl)
    check(names == ["c1"], "after the failed job the checkpoints are %s; "
          "c2 must be merged back" % names)
    check(ctl.ok("status")["snapshot"]["active"] is False,
          "the failed job's snapshot is still active")
    e.stop()
    writers.pause()
    snap = model.bytes()
    jid = start_job(ctl, "target=%s since=c1 checkpoint=c2" % raw)
    writers.resume()
    expect_completed(ctl, jid)
    expect_same(read_file(raw), snap,
                "incremental since c1 after the target failed")
    writers.stop()
    log("target EIO: job failed (%s), c2 merged back, writers did %d "
        "requests without error, next incremental equal"
        % (j["error"], writers.ops))

    # 2. SIGTERM mid-job.
    fill(sock, model, [(16 * MiB, 8 * MiB)], seed=21)
    jid = start_job(ctl, "target=%s since=c2 checkpoint=c3 speed=2M" % raw)
    wait_progress(ctl, jid, 1)
    rc = srv.stop(signal.SIGTERM)
    check(rc == 0, "nbdkit exited with %d on SIGTERM" % rc)
    check("nbdkit is shutting down" in srv.log_text(),
          "the log does not say why the job stopped")
    srv = start()
    cps = ctl.ok("status")["checkpoints"]
    check([c["name"] for c in cps] == ["c1", "c2"] and
          all(c["consistent"] for c in cps),
          "after SIGTERM mid-job the checkpoints are %s; want c1, c2 "
          "consistent (c3 merged back before the save)" % cps)
    jid = start_job(ctl, "target=%s since=c2 checkpoint=c3" % raw)
    j = expect_completed(ctl, jid)
    check(j["bytes_total"] >= 8 * MiB, "incremental after SIGTERM read "
          "%d bytes" % j["bytes_total"])
    expect_same(read_file(raw), model.bytes(),
                "incremental since c2 after SIGTERM mid-job")
    log("SIGTERM mid-job: c3 merged back and saved, next incremental equal")

    # 3. SIGKILL mid-job, write-ahead tracking: the job's checkpoint
    # was provisional in the file, and is merged back at start-up.
    fill(sock, model, [(4 * MiB, 8 * MiB)], seed=31)
    jid = start_job(ctl, "target=%s since=c3 checkpoint=c4 speed=2M" % raw)
    wait_progress(ctl, jid, 1)
    srv.stop(signal.SIGKILL)
    srv = start()
    cps = ctl.ok("status")["checkpoints"]
    check([c["name"] for c in cps] == ["c1", "c2", "c3"] and
          all(c["consistent"] for c in cps),
          "after SIGKILL mid-job the checkpoints are %s; want c1, c2, c3 "
          "consistent (c4 merged back at start-up)" % cps)
    jid = start_job(ctl, "target=%s since=c3 checkpoint=c4" % raw)
    j = expect_completed(ctl, jid)
    check(j["bytes_total"] >= 8 * MiB, "incremental after SIGKILL read "
          "%d bytes" % j["bytes_total"])
    expect_same(read_file(raw), model.bytes(),
                "incremental since c3 after SIGKILL mid-job")
    log("SIGKILL mid-job: c4 merged back at start-up, next incremental equal")

    # 4. SIGKILL mid-job, clean-stop tracking: nothing is trusted.
    srv.stop()
    bm_args[0] = "bitmap-sync=clean-stop"
    srv = start()
    fill(sock, model, [(4 * MiB, 8 * MiB)], seed=41)
    jid = start_job(ctl, "target=%s since=c4 checkpoint=c5 speed=2M" % raw)
    wait_progress(ctl, jid, 1)
    srv.stop(signal.SIGKILL)
    srv = start()
    cps = ctl.ok("status")["checkpoints"]
    check(cps and not any(c["consistent"] for c in cps),
          "after SIGKILL in clean-stop mode the checkpoints should all be "
          "inconsistent: %s" % cps)
    for c in cps:
        ctl.refused("backup-start target=%s since=%s" % (raw, c["name"]),
                    "not consistent|inconsistent")
    check(ctl.ok("status")["snapshots"] == [],
          "a refused incremental left a snapshot")
    jid = start_job(ctl, "target=%s sync=full checkpoint=f1" % raw)
    expect_completed(ctl, jid)
    expect_same(read_file(raw), model.bytes(), "full backup after SIGKILL")
    log("SIGKILL mid-job, clean-stop: incremental refused (inconsistent), "
        "full equal")
    srv.stop()
    os.unlink(raw)


if __name__ == "__main__":
    run_main(main)

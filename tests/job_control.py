#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Controlling backup jobs, and bad input:
#  - speed=8M holds the average rate within 10% (bytes_done over ~2 s),
#    job-set-speed 16M takes effect at once, job-pause stops bytes_done
#    (state paused), job-resume and job-set-speed 0 let it finish;
#    bytes_done is monotonic and equals bytes_total at the end, and the
#    backup equals the disk;
#  - a full backup to an NBD export full of garbage, not declared
#    zeroed, still equals the disk (holes are zeroed on the target);
#  - job-cancel mid-job: state cancelled, the checkpoint it started is
#    merged back, the next incremental since the older checkpoint is
#    exact;
#  - bad input: one clear error each, and nothing changed (no snapshot,
#    same checkpoints, no target file created or touched).

import argparse
import os
import time

from fleece_lib import Model, Ctl, run_main, read_all, connect, close
from incr_lib import MiB, check, log, expect_same, read_file
from job_lib import (Server, stack, fill, job_of, start_job, wait_job,
                     expect_completed, wait_progress, checkpoint_names, uri)

SIZE = 64 * MiB
GRAN = 64 * 1024


def rate(ctl, jid, seconds):
    j0 = job_of(ctl, jid)
    t0 = time.monotonic()
    time.sleep(seconds)
    j1 = job_of(ctl, jid)
    t1 = time.monotonic()
    return (j1["bytes_done"] - j0["bytes_done"]) / (t1 - t0), j1


def speed_pause(ctl, t, model):
    out = t + "/speed.img"
    jid = start_job(ctl, "target=%s speed=8M checkpoint=s1" % out)
    wait_progress(ctl, jid, 1)
    r, j = rate(ctl, jid, 2.0)
    check(j["speed"] == 8 * MiB, "status speed %s, want %d" % (j["speed"],
                                                               8 * MiB))
    check(abs(r - 8 * MiB) <= 0.1 * 8 * MiB,
          "speed=8M: measured %.2f MiB/s over 2 s" % (r / MiB))
    log("speed=8M: %.2f MiB/s" % (r / MiB))

    ctl.ok("job-set-speed id=%s speed=16M" % jid)
    time.sleep(0.2)
    r, j = rate(ctl, jid, 1.5)
    check(abs(r - 16 * MiB) <= 0.1 * 16 * MiB,
          "after job-set-speed 16M: measured %.2f MiB/s" % (r / MiB))
    log("job-set-speed 16M: %.2f MiB/s" % (r / MiB))

    ctl.ok("job-pause id=%s" % jid)
    check(job_of(ctl, jid)["state"] == "paused", "state is not paused")
    ctl.refused("job-pause id=%s" % jid, "already paused")
    # Pieces already in flight finish (slowly on a loaded machine):
    # wait until bytes_done stops, then it must stay put.
    a = job_of(ctl, jid)["bytes_done"]
    for _ in range(50):
        time.sleep(0.3)
        n = job_of(ctl, jid)["bytes_done"]
        if n == a:
            break
        a = n
    time.sleep(1.0)
    b = job_of(ctl, jid)
    check(b["bytes_done"] == a and b["state"] == "paused",
          "paused job moved from %d to %d bytes (%s)" % (a, b["bytes_done"],
                                                         b["state"]))
    check(a < b["bytes_total"], "the job finished before it was paused")
    log("paused at %d of %d bytes" % (a, b["bytes_total"]))
    ctl.ok("job-resume id=%s" % jid)
    ctl.refused("job-resume id=%s" % jid, "not paused")
    r, j = rate(ctl, jid, 0.5)
    check(r > 0, "bytes_done does not grow after job-resume")
    ctl.ok("job-set-speed id=%s speed=0" % jid)
    j = expect_completed(ctl, jid)
    check(j["bytes_total"] == SIZE,
          "a disk full of data: bytes_total %d, want %d"
          % (j["bytes_total"], SIZE))
    expect_same(read_file(out), model.bytes(), "rate-limited full backup")
    ctl.refused("job-pause id=%s" % jid, "already ended")
    ctl.refused("job-cancel id=%s" % jid, "already ended")
    os.unlink(out)


def garbage_target(ctl, t, model, sock):
    """Full backup to an NBD export that holds garbage."""
    gsock = t + "/garbage.sock"
    g = Server(gsock, ["nbdkit", "-f", "memory", str(SIZE)])
    h = connect(gsock)
    h.pwrite(b"\xa5" * (4 * MiB), 20 * MiB)       # where the disk has holes
    h.pwrite(b"\x5a" * MiB, SIZE - MiB)
    close(h)
    # Make some of the disk holes again.
    h = connect(sock)
    h.zero(8 * MiB, 18 * MiB)
    h.trim(MiB, SIZE - MiB)
    close(h)
    model.zero(18 * MiB, 8 * MiB)
    model.zero(SIZE - MiB, MiB)
    jid = start_job(ctl, "target=%s checkpoint=g1" % uri(gsock))
    expect_completed(ctl, jid)
    h = connect(gsock)
    got = read_all(h, SIZE)
    close(h)
    g.stop()
    expect_same(got, model.bytes(), "full backup over a garbage NBD target")
    log("full backup over a non-zeroed NBD target: equal")


def cancel(ctl, t, model, sock):
    base = t + "/base.img"
    jid = start_job(ctl, "target=%s checkpoint=c1" % base)
    expect_completed(ctl, jid)
    fill(sock, model, [(4 * MiB, 12 * MiB)], seed=11)
    before = checkpoint_names(ctl)
    jid = start_job(ctl, "target=%s since=c1 checkpoint=c2 speed=2M" % base)
    wait_progress(ctl, jid, 1)
    # The job's snapshot is its own: the user cannot end it, and may
    # take the default snapshot beside it.
    ctl.refused("snapshot-end name=%s" % jid, "job-cancel id=%s" % jid)
    ctl.refused("snapshot-end", "no snapshot is active")
    ctl.ok("snapshot-begin")
    ctl.ok("snapshot-end")
    ctl.ok("job-cancel id=%s" % jid)
    j = wait_job(ctl, jid, 20)
    check(j["state"] == "cancelled", "cancelled job ended %s: %s"
          % (j["state"], j["error"]))
    check(0 < j["bytes_done"] < j["bytes_total"],
          "cancel was not mid-job: %d of %d" % (j["bytes_done"],
                                                j["bytes_total"]))
    check(j["finished"] is not None, "finished not set")
    names = checkpoint_names(ctl)
    check("c2" not in names and names == [n for n in before],
          "after cancel the checkpoints are %s (were %s): c2 must be "
          "merged back" % (names, before))
    check(ctl.ok("status")["snapshots"] == [],
          "the cancelled job's snapshot is still active")
    # The next incremental since c1 still sees every change.
    jid = start_job(ctl, "target=%s since=c1 checkpoint=c2" % base)
    j = expect_completed(ctl, jid)
    check(j["bytes_total"] >= 12 * MiB, "incremental after cancel read "
          "only %d bytes" % j["bytes_total"])
    expect_same(read_file(base), model.bytes(),
                "incremental since c1 after a cancelled job")
    log("cancel at %d bytes: c2 merged back, next incremental equal"
        % j["bytes_done"])


def bad_input(ctl, t, model, sock):
    big = t + "/big.img"
    jid = start_job(ctl, "target=%s speed=1M" % big)
    small = t + "/small.img"
    with open(small, "wb") as f:
        f.truncate(SIZE // 2)
    link = t + "/link.img"
    victim = t + "/victim.img"
    with open(victim, "wb") as f:
        f.write(b"keep")
    os.symlink(victim, link)
    ssock = t + "/small.sock"
    s = Server(ssock, ["nbdkit", "-f", "memory", "1M"])

    # While a job runs.
    # Several jobs run at once, each with its own snapshot; at most 4.
    others = [start_job(ctl, "target=%s/other%d.img speed=1M" % (t, k))
              for k in range(3)]
    st = ctl.ok("status")
    check(sorted(s["name"] for s in st["snapshots"]) ==
          sorted([jid] + others),
          "each running job has its own named snapshot: %s"
          % st["snapshots"])
    ctl.refused("backup-start target=%s/fifth.img" % t, "4 backup jobs")
    for o in others:
        ctl.ok("job-cancel id=%s" % o)
    for o in others:
        check(wait_job(ctl, o)["state"] == "cancelled", "%s not cancelled" % o)
        os.unlink("%s/other%d.img" % (t, others.index(o)))
    ctl.refused("snapshot-begin name=%s" % jid, "already active")
    ctl.refused("snapshot-end name=%s" % jid,
                "cancel the job with job-cancel id=%s" % jid)
    ctl.refused("job-cancel id=nosuch", "no job with id nosuch")
    ctl.refused("job-set-speed id=%s speed=fast" % jid, "speed=fast")
    ctl.refused("job-set-speed id=%s" % jid, "needs speed")
    ctl.refused("job-pause", "needs id")
    ctl.ok("job-cancel id=%s" % jid)
    check(wait_job(ctl, jid)["state"] == "cancelled", "not cancelled")
    os.unlink(big)

    names = checkpoint_names(ctl)
    cases = [
        ("target=%s/base.img since=nosuch" % t, "nosuch"),
        ("target=%s/nodir/a.img checkpoint=n1" % t, "does not exist"),
        ("target=%s sync=incremental since=c1 checkpoint=n1" % small,
         "less than the disk"),
        ("target=%s sync=incremental since=c1" % uri(ssock),
         "less than the disk"),
        ("target=%s/a.img sync=incremental checkpoint=n1" % t,
         "needs since"),
        ("target=%s/a.img sync=full since=c1" % t, "sync=incremental"),
        ("target=%s/a.img sync=bogus" % t, "sync=bogus"),
        ("target=%s/a.img speed=fast" % t, "speed=fast"),
        ("target=%s/a.img speed=-1" % t, "speed=-1"),
        ("target=%s checkpoint=n1" % link, "symbolic link"),
        ("target=%s/missing.img sync=incremental since=c1" % t,
         "does not exist"),
        ("target=a.img", "absolute path"),
        ("target=%s/a.img target-zeroed=true" % t, "target-zeroed"),
        ("target=%s/a.img checkpoint=c1" % t, "c1"),    # exists already
        ("target=%s/a.img checkpoint=../x" % t, "checkpoint name"),
        ("target=%s/a.img bogus=1" % t, "bogus"),
        ("sync=full", "needs target"),
    ]
    for args, regex in cases:
        ctl.refused("backup-start " + args, regex)
        st = ctl.ok("status")
        check(st["snapshot"]["active"] is False and st["snapshots"] == [],
              "backup-start %s left a snapshot active" % args)
        check([c["name"] for c in st["checkpoints"]] == names,
              "backup-start %s changed the checkpoints: %s -> %s"
              % (args, names, [c["name"] for c in st["checkpoints"]]))
        check(not os.path.exists(t + "/a.img"),
              "backup-start %s created the target file" % args)
        check(os.path.getsize(small) == SIZE // 2,
              "backup-start %s changed the small target" % args)
        check(read_file(victim) == b"keep",
              "backup-start %s wrote through a symlink" % args)
    # With the user's snapshot active, a job takes its own beside it.
    ctl.ok("snapshot-begin")
    jid = start_job(ctl, "target=%s/a.img" % t)
    check(ctl.ok("status")["snapshot"]["active"] is True,
          "the user's snapshot ended with the job's start")
    expect_completed(ctl, jid)
    expect_same(read_file(t + "/a.img"), model.bytes(),
                "a job beside the user's snapshot")
    ctl.ok("snapshot-end")
    os.unlink(t + "/a.img")
    s.stop()
    log("bad input: %d cases refused, nothing changed" % len(cases))


def concurrent(ctl, t, model, sock):
    """Two full backups at once, to two files, both equal the disk."""
    a_, b_ = t + "/con-a.img", t + "/con-b.img"
    ja = start_job(ctl, "target=%s speed=8M" % a_)
    jb = start_job(ctl, "target=%s speed=8M" % b_)
    for j in (ja, jb):
        expect_completed(ctl, j)
    jobs = {j["id"]: j for j in ctl.ok("status")["jobs"]}
    check(ja in jobs and jb in jobs, "both jobs listed after they ended: %s"
          % list(jobs))
    expect_same(read_file(a_), model.bytes(), "concurrent job A")
    expect_same(read_file(b_), model.bytes(), "concurrent job B")
    check(ctl.ok("status")["snapshots"] == [], "a job's snapshot is left")
    os.unlink(a_)
    os.unlink(b_)
    log("two jobs at once: both complete and equal the disk")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmpdir", required=True)
    ap.add_argument("--filters", nargs=3, required=True)
    a = ap.parse_args()
    t = a.tmpdir
    disk, sock, ctlp = t + "/disk.img", t + "/nbd.sock", t + "/ctl.sock"
    with open(disk, "wb") as f:
        f.truncate(SIZE)
    srv = stack(t, disk, sock, ctlp, a.filters)
    ctl = Ctl(ctlp)
    model = Model(SIZE)
    fill(sock, model, [(0, SIZE)])
    speed_pause(ctl, t, model)
    garbage_target(ctl, t, model, sock)
    cancel(ctl, t, model, sock)
    concurrent(ctl, t, model, sock)
    bad_input(ctl, t, model, sock)
    srv.stop()


if __name__ == "__main__":
    run_main(main)

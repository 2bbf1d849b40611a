#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-fleecectl-backup.sh: push backups with fleecectl
# while two writers run on the live disk (incr_lib.Writers, byte model).
# At each backup the writers are paused until the job has begun
# copying (its snapshot exists), so the model's hash then is the disk
# at the snapshot point; they run during the rest of the copy.
#
#   1. fleecectl backup --checkpoint c1 --speed 2M full.img: exit 0,
#      plain progress lines (stdout is a pipe), full.img == point 1.
#   2. fleecectl backup --since c1 --checkpoint c2 incr.img (a copy of
#      full.img, updated in place) == point 2.
#   3. fleecectl backup --since c2 --checkpoint c3 to a qcow2 overlay
#      of incr.img served by qemu-nbd; qemu-img convert of the overlay
#      == point 3.

import argparse
import os
import shutil
import signal
import subprocess
import time

from fleece_lib import Model
from job_lib import listening
from incr_lib import *

ap = argparse.ArgumentParser()
ap.add_argument("--sock", required=True)
ap.add_argument("--ctl", required=True)
ap.add_argument("--tmpdir", required=True)
ap.add_argument("--fleecectl", required=True)
ap.add_argument("--size", type=int, default=8 * MiB)
args = ap.parse_args()

SIZE = args.size
G = 64 * 1024


def job_ids(ctl):
    return {j.get("id") for j in ctl.ok("status").get("jobs") or []}


def wait_copying(ctl, p, old_ids):
    """Until the new job (not in old_ids: the previous one stays listed
    until this one starts) has copied something or ended."""
    t0 = time.time()
    while time.time() - t0 < 30:
        if p.poll() is not None:
            return
        for j in ctl.ok("status").get("jobs") or []:
            if j.get("id") in old_ids:
                continue
            if j.get("bytes_done", 0) > 0 or j.get("state") != "running":
                return
        time.sleep(0.05)
    fail("the backup job did not start copying within 30 s")


def backup(ctl, w, model, extra, target, what):
    w.pause()
    want = model.bytes()
    old_ids = job_ids(ctl)
    p = subprocess.Popen([args.fleecectl, "-c", args.ctl, "backup",
                          "--interval", "100"] + extra + [target],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=args.tmpdir)
    try:
        wait_copying(ctl, p, old_ids)
    finally:
        w.resume()
    out, err = p.communicate(timeout=300)
    log(out.rstrip())
    check(p.returncode == 0, "%s: fleecectl backup exited with %d: %s"
          % (what, p.returncode, err.strip()))
    check(err == "", "%s: unexpected stderr: %s" % (what, err))
    lines = out.splitlines()
    check(lines and " completed, " in lines[-1],
          "%s: no completion line" % what)
    progress = [l for l in lines if "% " in l and " bytes, " in l]
    return want, progress


def main():
    ctl = Ctl(args.ctl)
    model = Model(SIZE)
    h = connect(args.sock)
    for i in range(4):
        data = pattern(100 + i, MiB)
        h.pwrite(data, (2 * i) * MiB + 4096)
        model.write((2 * i) * MiB + 4096, data)
    close(h)

    w = Writers(args.sock, model, SIZE, G, n=2, seed=3, rate=100)
    w.start()
    try:
        full = os.path.join(args.tmpdir, "full.img")
        want, progress = backup(ctl, w, model,
                                ["--checkpoint", "c1", "--speed", "2M"],
                                "full.img", "full backup")
        check(len(progress) >= 2, "full backup of 4M of data at 2M/s printed %d "
              "progress lines, expected one a second" % len(progress))
        expect_same(read_file(full), want,
                    "full backup vs the disk at its snapshot point")

        incr = os.path.join(args.tmpdir, "incr.img")
        shutil.copyfile(full, incr)
        want, _ = backup(ctl, w, model, ["--since", "c1", "--checkpoint",
                                         "c2"], incr, "incremental 1")
        expect_same(read_file(incr), want,
                    "incremental backup vs the disk at its snapshot point")

        qcow = os.path.join(args.tmpdir, "incr2.qcow2")
        qsock = os.path.join(args.tmpdir, "q.sock")
        qpid = os.path.join(args.tmpdir, "q.pid")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                        incr, "-F", "raw", qcow], check=True)
        q = subprocess.Popen(["qemu-nbd", "-t", "-k", qsock, "--pid-file",
                              qpid, "-f", "qcow2", qcow])
        try:
            for _ in range(100):
                if listening(qsock):
                    break
                time.sleep(0.1)
            want, _ = backup(ctl, w, model,
                             ["--since", "c2", "--checkpoint", "c3"],
                             "nbd+unix:///?socket=" + qsock,
                             "incremental 2 (qcow2 over NBD)")
        finally:
            q.send_signal(signal.SIGTERM)
            q.wait(30)
        restored = os.path.join(args.tmpdir, "restored.img")
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                        qcow, restored], check=True)
        expect_same(read_file(restored), want,
                    "qcow2 chain restore vs the disk at its snapshot point")
    finally:
        w.stop()


run_main(main)

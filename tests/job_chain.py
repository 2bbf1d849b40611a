#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Push backup jobs end to end with live writers running throughout: a
# full backup then three incrementals, to a raw file updated in place
# (checkpoints r0..r3) and, interleaved, to a qcow2 chain served by
# qemu-nbd, each overlay backed by the previous backup (checkpoints
# q0..q3).  The writers pause only around each backup-start, so the
# model at that moment is the disk at the snapshot point.  Every backup
# (the raw file, qemu-img convert of the chain) must equal it, byte
# for byte; an incremental job must read exactly the granules written
# since its since= checkpoint (bytes_total); the full backup to a file
# must be as sparse as the data.

import argparse

from fleece_lib import Model, Ctl, run_main
from incr_lib import MiB, check, log, sha, expect_same, read_file, Writers
from job_lib import (Server, stack, fill, start_job, expect_completed,
                     checkpoint_names, restore_qcow2, qcow2_create,
                     allocated, data_bytes, uri)

SIZE = 64 * MiB
GRAN = 64 * 1024


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
    fill(sock, model, [(0, 3 * MiB), (10 * MiB, 5 * MiB),
                       (40 * MiB + 12345, 2 * MiB)])
    writers = Writers(sock, model, SIZE, GRAN, n=2, rate=100)
    writers.start()
    acc = {"r": set(), "q": set()}

    def point():
        """Pause the writers: the disk now is the next snapshot."""
        writers.pause()
        w = writers.take_written()
        acc["r"] |= w
        acc["q"] |= w
        return model.bytes()

    raw = t + "/raw.img"
    qsock = t + "/q.sock"
    for k in range(4):
        # The raw file, updated in place.
        snap = point()
        if k == 0:
            jid = start_job(ctl, "target=%s checkpoint=r0" % raw)
        else:
            jid = start_job(ctl, "target=%s sync=incremental since=r%d "
                            "checkpoint=r%d" % (raw, k - 1, k))
        writers.resume()
        j = expect_completed(ctl, jid)
        check(j["sync"] == ("full" if k == 0 else "incremental"),
              "job %s: sync is %s" % (jid, j["sync"]))
        if k > 0:
            check(j["bytes_total"] == len(acc["r"]) * GRAN,
                  "raw round %d: the job read %d bytes, the writers "
                  "touched %d granules (%d bytes) since r%d"
                  % (k, j["bytes_total"], len(acc["r"]),
                     len(acc["r"]) * GRAN, k - 1))
        else:
            check(allocated(raw) <= data_bytes(snap) + GRAN,
                  "full backup to a file: %d bytes allocated for %d bytes "
                  "of data (not sparse)" % (allocated(raw),
                                            data_bytes(snap)))
        acc["r"] = set()
        expect_same(read_file(raw), snap, "raw backup round %d" % k)
        log("raw round %d: %s %d bytes copied, sha256 %s OK"
            % (k, j["sync"], j["bytes_done"], sha(snap)[:16]))

        # The qcow2 chain through qemu-nbd.
        q = t + "/q%d.qcow2" % k
        qcow2_create(q, SIZE, t + "/q%d.qcow2" % (k - 1) if k else None)
        qn = Server(qsock, ["qemu-nbd", "-t", "-f", "qcow2", q],
                    sock_opt="-k")
        snap = point()
        if k == 0:
            jid = start_job(ctl, "target=%s checkpoint=q0 target-zeroed=true"
                            % uri(qsock))
        else:
            jid = start_job(ctl, "target=%s since=q%d checkpoint=q%d"
                            % (uri(qsock), k - 1, k))
        writers.resume()
        j = expect_completed(ctl, jid)
        qn.stop()
        if k > 0:
            check(j["bytes_total"] == len(acc["q"]) * GRAN,
                  "qcow2 round %d: the job read %d bytes, the writers "
                  "touched %d granules since q%d"
                  % (k, j["bytes_total"], len(acc["q"]), k - 1))
        acc["q"] = set()
        got = restore_qcow2(q, t + "/restore.raw")
        expect_same(got, snap, "restore of the qcow2 chain q0..q%d" % k)
        log("qcow2 round %d: %s %d bytes copied, restore sha256 %s OK"
            % (k, j["sync"], j["bytes_done"], sha(snap)[:16]))

    writers.stop()
    names = checkpoint_names(ctl)
    for n in ["r0", "r1", "r2", "r3", "q0", "q1", "q2", "q3"]:
        check(n in names, "checkpoint %s missing after its job completed: "
              "%s" % (n, names))
    check(ctl.ok("status")["snapshot"]["active"] is False,
          "a job left its snapshot active")
    log("writers did %d requests, none failed" % writers.ops)
    srv.stop()


if __name__ == "__main__":
    run_main(main)

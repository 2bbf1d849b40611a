#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driver of test-stream-vs-qemu.sh: the stream filter and QEMU's
# block-stream (a qcow2 overlay over the same NBD base, run by
# qemu-storage-daemon) get the same seeded guest operations while their
# jobs run; every read is checked on both, and at the end both disks
# must equal the model (the base plus the guest's operations).
#
#   stream_vs_qemu.py mkbase PATH SIZE SEED
#       a sparse base: seeded data, ~25% whole-cluster holes, ~10% of
#       clusters with a zero run inside
#   stream_vs_qemu.py run --base PATH --ours URI --ctl SOCK --qemu URI
#                         --qmp SOCK --seed N --ops N --model-out PATH
#       start block-stream (the overlay node is "ovl"), run the
#       operations, lift both speed limits, wait for both jobs, compare
#   stream_vs_qemu.py check-file PATH MODEL
#
# Trims are whole 64K clusters.  Ours must read them as zeroes (the
# file plugin punches a hole); QEMU may drop a discard (NBD makes trim
# advisory, and QEMU 7.2 drops it below block-stream's copy-on-read
# node), so QEMU may read either zeroes or the old data there.  Before
# the final comparison every cluster still in that state is written
# with zeroes on both sides, so the final image is defined.

import argparse
import random
import sys
import time

import nbd

from fleece_lib import (Ctl, Qmp, check, close, connect_uri, expect_same, fail,
                        holey_pattern, log, pattern, read_all, run_main,
                        write_sparse)

CL = 64 * 1024


def mkbase(path, size, seed):
    write_sparse(path, holey_pattern(seed, size, CL))


def qemu_job(qmp):
    for j in qmp.cmd("query-block-jobs"):
        if j["device"] == "stream0":
            return j
    return None


def run(a):
    with open(a.base, "rb") as f:
        base = f.read()
    size = len(base)
    m_ours = bytearray(base)     # what ours must read
    m_alt = bytearray(base)      # the same, with trims dropped
    ctl = Ctl(a.ctl)
    qmp = Qmp(a.qmp, timeout=60)
    ours = connect_uri(a.ours)
    qemu = connect_uri(a.qemu)
    check(ours.get_size() == size and qemu.get_size() == size,
          "sizes: ours %d, qemu %d, base %d"
          % (ours.get_size(), qemu.get_size(), size))

    qmp.cmd("block-stream", **{"job-id": "stream0", "device": "ovl",
                               "speed": a.speed})
    log("block-stream started at %d bytes/s; ours: %s"
        % (a.speed, ctl.ok("status")["stream"]))

    def check_read(off, n):
        got_o = ours.pread(n, off)
        got_q = qemu.pread(n, off)
        expect_same(got_o, bytes(m_ours[off:off + n]),
                    "ours: read %d+%d" % (off, n), off)
        # QEMU: each cluster as ours or with its trims dropped.
        p = off
        while p < off + n:
            q = min((p // CL + 1) * CL, off + n)
            g = got_q[p - off:q - off]
            if g != m_ours[p:q] and g != m_alt[p:q]:
                expect_same(g, bytes(m_ours[p:q]),
                            "qemu: read %d+%d" % (off, n), p)
            p = q

    rng = random.Random(a.seed)
    counts = {}
    t0 = time.time()
    for k in range(a.ops):
        r = rng.random()
        if r < 0.30:
            kind = "read"
            off = rng.randrange(0, size)
            n = min(rng.choice([1, 512, 4096, CL, 3 * CL + 17,
                                rng.randint(1, 256 * 1024)]), size - off)
        elif r < 0.50:
            kind = "write"           # partial, may cross a cluster
            off = rng.randrange(0, size)
            n = min(rng.randint(1, CL + CL // 2), size - off)
        elif r < 0.65:
            kind = "write"           # whole clusters
            off = rng.randrange(0, size // CL) * CL
            n = min(rng.randint(1, 4) * CL, size - off)
        elif r < 0.75:
            kind = "zero"            # partial
            off = rng.randrange(0, size)
            n = min(rng.randint(1, 2 * CL), size - off)
        elif r < 0.87:
            kind = "zero"            # whole clusters
            off = rng.randrange(0, size // CL) * CL
            n = min(rng.randint(1, 8) * CL, size - off)
        else:
            kind = "trim"
            off = rng.randrange(0, size // CL) * CL
            n = min(rng.randint(1, 4) * CL, size - off)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "read":
            check_read(off, n)
            continue
        if kind == "write":
            data = pattern(a.seed * 100003 + k, n)
            ours.pwrite(data, off)
            qemu.pwrite(data, off)
            m_ours[off:off + n] = data
            m_alt[off:off + n] = data
        elif kind == "zero":
            ours.zero(n, off)
            qemu.zero(n, off)
            m_ours[off:off + n] = bytes(n)
            m_alt[off:off + n] = bytes(n)
        else:
            ours.trim(n, off)
            qemu.trim(n, off)
            m_ours[off:off + n] = bytes(n)
        # Read back around the request, on both.
        lo = max(0, off - 4096)
        check_read(lo, min(size, off + n + 4096) - lo)
    log("%d operations (%s) in %.1f s"
        % (a.ops, ", ".join("%s %d" % kv for kv in sorted(counts.items())),
           time.time() - t0))

    # Both jobs must still have been running: the operations met
    # clusters not yet populated on both sides.
    st = ctl.ok("status")["stream"]
    qj = qemu_job(qmp)
    log("after the operations: ours %s; qemu %s" % (st, qj))
    check(st["state"] == "running" and st["bytes_done"] < size,
          "our stream job was no longer running during the operations: "
          "%s (lower the speed)" % st)
    check(qj is not None and qj["offset"] < qj["len"],
          "QEMU's stream job was no longer running during the "
          "operations: %s" % qj)

    # Trimmed clusters that QEMU kept: zero them on both sides.
    kept = 0
    for c in range(size // CL):
        s = slice(c * CL, (c + 1) * CL)
        if m_ours[s] != m_alt[s]:
            ours.zero(CL, c * CL)
            qemu.zero(CL, c * CL)
            m_ours[s] = bytes(CL)
            m_alt[s] = bytes(CL)
            kept += 1
    log("trimmed clusters that may differ, now zeroed on both: %d" % kept)

    ctl.ok("stream-set-speed speed=0")
    qmp.cmd("block-job-set-speed", device="stream0", speed=0)
    t0 = time.time()
    while ctl.ok("status")["stream"]["state"] != "complete":
        if time.time() - t0 > 120:
            fail("our stream did not complete within 120 s: %s"
                 % ctl.ok("status")["stream"])
        time.sleep(0.1)
    log("ours complete after %.1f s" % (time.time() - t0))
    ev = qmp.event("BLOCK_JOB_COMPLETED", 120)
    log("qemu: %s" % ev["data"])
    check("error" not in ev["data"] and ev["data"]["offset"] == size,
          "QEMU's stream job did not complete cleanly: %s" % ev["data"])

    model = bytes(m_ours)
    got_o = read_all(ours, size)
    got_q = read_all(qemu, size)
    expect_same(got_o, model, "ours after completion")
    expect_same(got_q, model, "qemu after completion")
    expect_same(got_o, got_q, "ours vs qemu after completion")
    close(ours)
    close(qemu)
    with open(a.model_out, "wb") as f:
        f.write(model)
    log("both final images equal the model (base + %d operations)" % a.ops)


def check_file(path, model):
    with open(path, "rb") as f:
        got = f.read()
    with open(model, "rb") as f:
        want = f.read()
    expect_same(got, want, path)
    log("%s equals the model" % path)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mkbase")
    m.add_argument("path")
    m.add_argument("size", type=int)
    m.add_argument("seed", type=int)
    r = sub.add_parser("run")
    for opt in ("base", "ours", "ctl", "qemu", "qmp", "model-out"):
        r.add_argument("--" + opt, required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--ops", type=int, default=400)
    r.add_argument("--speed", type=int, required=True)
    c = sub.add_parser("check-file")
    c.add_argument("path")
    c.add_argument("model")
    a = p.parse_args()
    if a.cmd == "mkbase":
        run_main(lambda: mkbase(a.path, a.size, a.seed))
    elif a.cmd == "run":
        run_main(lambda: run(a))
    else:
        run_main(lambda: check_file(a.path, a.model))


if __name__ == "__main__":
    sys.exit(main())

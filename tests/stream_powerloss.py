#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# stream_test.py powerloss: stream-sync=flush, where a guest write to
# an unpopulated cluster is acknowledged once it and the cluster's
# populated bit are in the page cache, a flush makes every cluster
# populated before it began durable, and a write with FUA the clusters
# it writes.
#
# A power loss is simulated by kill -9 and a restart with another fake
# kernel boot id (FLEECE_TEST_BOOT_ID): the filter must then trust only
# what was made durable.  The local file still holds every byte (the
# page cache was not really lost), so after the "reboot":
#   - a cluster first populated (first read or written, as the clients
#     saw their requests complete) before the last completed flush
#     began, or written with FUA, reads exactly as the model at the
#     crash;
#   - any other cluster reads as the model or exactly as the base (it
#     was refilled), never a mix of the two.
# Requests in flight at the kill may read as their old or new contents,
# 512 bytes of the disk at a time.  Across the trials some cluster must
# have been refilled, else nothing was tested.
#
# Each trial also stops the server cleanly (SIGTERM) after clients
# wrote without flushing: after a restart with another boot id the
# disk equals the model exactly.  A targeted case first checks one
# cluster at a time: unflushed write lost, flushed write kept, write
# with FUA kept, the same boot keeps everything, a clean stop too.

import random
import time

import nbd

from fleece_lib import (check, close, connect, expect_same, fail, log,
                        pattern)
from stream_lib import CL, SIZE, Clients, Tracker, old_or_new

_boots = [0]


def new_boot():
    """A fake boot id never used before in this run."""
    _boots[0] += 1
    return "00000000-0000-4000-8000-%012x" % _boots[0]


def run(args, E, base_srv, stream_srv):
    if args.sync != "flush":
        fail("powerloss needs --sync flush")

    def start(boot, speed="1M", pause=False):
        srv = stream_srv(speed, boot_id=boot)
        srv.start(wait_ctl=True)
        s = E.status()
        check(s.get("sync") == "flush",
              "status should say \"sync\": \"flush\": %s" % s)
        if pause:
            E.ctl.ok("stream-pause")
        return srv

    targeted(args, E, base_srv, start)
    rng = random.Random(args.seed)
    refilled = 0
    for trial in range(args.trials):
        refilled += trial_run(args, E, base_srv, start, rng, trial)
    check(refilled > 0,
          "in %d trials no cluster was refilled from the base after a "
          "simulated power loss: the test did not exercise the volatile "
          "page cache" % args.trials)
    log("powerloss: OK (%d trials, %d clusters refilled in all)"
        % (args.trials, refilled))


def cluster(b, c):
    return bytes(b[c * CL:(c + 1) * CL])


def targeted(args, E, base_srv, start):
    """One cluster at a time, with the job paused so that nothing but
    the guest's requests makes anything durable."""
    base = E.fresh(args.seed * 7)
    model = bytearray(base)
    base_srv.start()
    # Clusters far from the start, where the job (paused at once) never
    # got; each written in part, so it is first filled from the base.
    X, Y, Z, W, Q, S = 200, 201, 202, 203, 204, 205
    h = None

    def write(c, what, fua=False):
        off = c * CL + 1000
        data = pattern(c * 31 + len(what), 3000)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if fua else 0)
        model[off:off + len(data)] = data

    def expect(c, want, what):
        h2 = connect(E.sock)
        got = h2.pread(CL, c * CL)
        close(h2)
        expect_same(got, cluster(want, c), "cluster %d at %d: %s"
                    % (c, c * CL, what), base=c * CL)

    boot = new_boot()
    srv = start(boot, "64K", pause=True)
    h = connect(E.sock)
    write(X, "x")
    h.flush()
    write(Y, "y")
    srv.kill()
    boot = new_boot()
    srv = start(boot, "64K", pause=True)
    expect(X, model, "written and flushed before a power loss: the write "
           "must be there")
    expect(Y, base, "written without a flush before a power loss: the "
           "cluster must read as the base again (the populated bit was "
           "in the page cache only)")
    model[Y * CL:(Y + 1) * CL] = cluster(base, Y)

    h = connect(E.sock)
    write(Z, "z", fua=True)
    write(W, "w")
    srv.kill()
    boot = new_boot()
    srv = start(boot, "64K", pause=True)
    expect(Z, model, "written with FUA before a power loss")
    expect(W, base, "written without a flush after a write with FUA to "
           "another cluster, then a power loss: the cluster must read as "
           "the base again")
    model[W * CL:(W + 1) * CL] = cluster(base, W)

    h = connect(E.sock)
    write(Q, "q")
    srv.kill()
    srv = start(boot, "64K", pause=True)          # the same boot
    expect(Q, model, "written without a flush, then kill -9 and a restart "
           "in the same boot: the write must be there")

    h = connect(E.sock)
    write(S, "s")
    close(h)
    srv.stop()
    boot = new_boot()
    srv = start(boot, "0")
    expect(S, model, "written without a flush, then a clean stop (SIGTERM) "
           "and a restart after a power loss: the write must be there")
    E.wait_state("complete", 60)
    E.check_whole(model, "targeted case, after completion")
    srv.stop()
    base_srv.stop()
    log("targeted: OK")


def trial_run(args, E, base_srv, start, rng, trial):
    """One trial, each part on a new disk; returns how many clusters
    were refilled."""
    seed = args.seed * 1000 + trial
    sigterm_case(args, E, base_srv, start, rng, trial, seed)

    # Clients flush now and then; power loss at a random moment.
    base = E.fresh(seed)
    model = bytearray(base)
    base_srv.start()
    finish = trial % 2 == 1
    gap = rng.choice([(0.02, 0.3), (0.2, 1.0)])
    log("trial %d: seed %d, flushes every %.2f-%.2f s, then %s"
        % (trial, seed, gap[0], gap[1], "finish" if finish else "pause"))
    srv = start(new_boot(), "256K")
    tr = Tracker()
    # Slow clients, so that clusters are still populated for the first
    # time when the power goes.
    cl = Clients(E, model, seed * 10 + 1, args.clients, flushes=gap,
                 tracker=tr, pace=0.01)
    # Every other trial, no flush in the last 0.3 s before the power
    # loss, and the power goes only once clients wrote to 3 clusters
    # they populated since (on a slow machine too), so that some
    # clusters must be refilled.
    t0 = time.monotonic()
    quiet = trial % 2 == 0
    t_kill = t0 + rng.uniform(0.4, 1.2) + (0.3 if quiet else 0)
    if quiet:
        cl.flush_until = t_kill - 0.3
    cl.start()
    time.sleep(t_kill - time.monotonic())
    while quiet and time.monotonic() < t_kill + 10 and \
            written_since(tr, cl.flush_until, base, model) < 3:
        time.sleep(0.02)
    srv.kill()
    cl.stop()
    check(not cl.bad, "; ".join(cl.bad))
    srv = start(new_boot(), "0" if finish else "256K", pause=not finish)
    if finish:
        E.wait_state("complete", 60)
    got = E.read_disk()
    refilled = check_rule(got, base, model, cl.uncertain, tr, t0, trial)
    srv.stop()
    if finish:
        E.check_file(got, "trial %d, local image after completion" % trial)
    base_srv.stop()
    return refilled


def written_since(tr, t, base, model):
    """How many clusters were first populated after t and differ from
    the base (were written) now."""
    with tr.lock:
        new = [c for c, first in tr.first.items() if first > t]
    return sum(1 for c in new if cluster(model, c) != cluster(base, c))


def sigterm_case(args, E, base_srv, start, rng, trial, seed):
    """A clean stop makes everything durable: clients write without
    flushing, SIGTERM, restart with another boot id.  Only the clusters
    the clients touched are read back (the others read as the base
    whatever happened)."""
    base = E.fresh(seed + 500)
    model = bytearray(base)
    base_srv.start()
    srv = start(new_boot(), "256K")
    tr = Tracker()
    cl = Clients(E, model, seed * 10, args.clients, tracker=tr)
    cl.start()
    time.sleep(rng.uniform(0.2, 0.5))
    cl.stop()
    check(not cl.errors and not cl.bad, "; ".join(cl.errors + cl.bad))
    srv.stop()
    srv = start(new_boot(), "256K", pause=True)
    h = connect(E.sock)
    for c in sorted(tr.first):
        expect_same(h.pread(CL, c * CL), cluster(model, c),
                    "trial %d: clients wrote without a flush, then a clean "
                    "stop (SIGTERM) and a restart after a power loss"
                    % trial, base=c * CL)
    close(h)
    srv.stop()
    base_srv.stop()
    log("trial %d: %d requests, then SIGTERM: %d clusters exact"
        % (trial, cl.ops, len(tr.first)))


def check_rule(got, base, model, uncertain, tr, t0, trial):
    """The rule of a power loss (top of the file) for every cluster.
    Returns how many clusters were refilled from the base."""
    new = bytearray(model)
    for off, _, data in uncertain:
        new[off:off + len(data)] = data
    last = tr.last_flush()
    counts = {"before": 0, "after": 0, "refilled": 0, "kept": 0}

    def as_model(c):
        g, a = cluster(got, c), cluster(model, c)
        if g == a:
            return True
        return old_or_new(g, c * CL, a, cluster(new, c)) is None

    def why_durable(c, first):
        if first is not None and last is not None and first < last[0]:
            return ("first populated at +%.3f s, before the last completed "
                    "flush (began +%.3f s, completed +%.3f s)"
                    % (first - t0, last[0] - t0, last[1] - t0))
        if c in tr.fua:
            return ("written with FUA (completed +%.3f s)"
                    % (tr.fua[c] - t0))
        return None

    for c in range(SIZE // CL):
        first = tr.first.get(c)
        why = why_durable(c, first)
        g = cluster(got, c)
        ok = as_model(c)
        if why:
            counts["before"] += 1
            if not ok:
                fail("trial %d: cluster %d at %d was %s, yet after a power "
                     "loss it %s" % (trial, c, c * CL, why,
                                     "reads as the base (refilled)"
                                     if g == cluster(base, c)
                                     else "differs from the model"))
            continue
        counts["after"] += 1
        if ok:
            if cluster(model, c) != cluster(base, c):
                counts["kept"] += 1
            continue
        if g != cluster(base, c):
            when = "never" if first is None else "+%.3f s" % (first - t0)
            fail("trial %d: cluster %d at %d (first populated %s, last "
                 "completed flush %s) reads after a power loss as neither "
                 "the model nor the base: a mix" % (
                     trial, c, c * CL,
                     when,
                     "began +%.3f s" % (last[0] - t0) if last else "none"))
        counts["refilled"] += 1
    log("trial %d: %d flushes completed, %d uncertain requests; clusters "
        "durable (populated before the last flush, or FUA) %d, others %d "
        "(%d of them refilled from the base, %d kept)"
        % (trial, len(tr.flushes), len(uncertain), counts["before"],
           counts["after"], counts["refilled"], counts["kept"]))
    return counts["refilled"]

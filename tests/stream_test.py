#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The stream filter (live restore) against a byte model: the local disk
# must always read as the base plus every guest write, zero and trim.
# The disk's layout and the clients: stream_lib.py.
#
#   stream_test.py model ...   several clients at once (reads, partial
#       and whole-cluster writes, zeroes, trims, clusters shared between
#       clients) while the job runs slowly; pause/resume/set-speed; the
#       base killed and restarted mid-stream (EIO for unpopulated
#       clusters, whole-cluster writes go on, the job waits and
#       resumes); completion; a restart without stream-base passes
#       through.
#   stream_test.py crash ...   kill -9 of the server at random moments
#       while clients run, restart with the same state file, finish:
#       nothing acknowledged is lost, nothing is refilled from the base.
#   stream_test.py powerloss ...   stream-sync=flush across simulated
#       reboots (stream_powerloss.py).
#
# --sync MODE passes stream-sync=MODE to the filter (default: not
# given), and then the clients also flush now and then and write with
# FUA.

import argparse
import random
import time

import nbd

from fleece_lib import (check, close, connect, expect_same, fail, log,
                        pattern, run_main)
from stream_lib import SIZE, CL, U_END, Clients, Env, Server

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["model", "crash", "powerloss"])
p.add_argument("--dir", required=True)
p.add_argument("--filter", required=True)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--trials", type=int, default=3)
p.add_argument("--clients", type=int, default=3)
p.add_argument("--seconds", type=float, default=4)
p.add_argument("--sync", choices=["write", "flush"])
args = p.parse_args()

E = Env(args.dir, args.filter)
base_srv = Server(E, E.base_sock, ["-r", "file", E.base_img], "base.log")


def stream_srv(speed, with_base=True, sync=args.sync, boot_id=None):
    """The stream server; boot_id: a fake kernel boot id for it."""
    argv = ["--filter=" + args.filter, "file", E.local,
            "stream-state=" + E.state, "stream-speed=" + speed,
            "control=" + E.ctl_path]
    if with_base:
        argv.append("stream-base=nbd+unix:///?socket=" + E.base_sock)
    if sync:
        argv.append("stream-sync=" + sync)
    env = {"FLEECE_TEST_BOOT_ID": boot_id} if boot_id else None
    return Server(E, E.sock, argv, "nbdkit.log", env=env)


def flushes():
    """How often the clients flush: only when a sync mode is given."""
    return (0.02, 0.3) if args.sync else None


def mode_model():
    base = E.fresh(args.seed)
    model = bytearray(base)
    base_srv.start()
    srv = stream_srv("128K")
    srv.start(wait_ctl=True)
    s = E.status()
    check(s["state"] in ("running", "waiting-for-base")
          and s["bytes_total"] == SIZE and s["speed"] == 128 * 1024,
          "status after start: %s" % s)
    if args.sync:
        check(s.get("sync") == args.sync,
              "status should say \"sync\": \"%s\": %s" % (args.sync, s))

    # Paused: nothing moves.
    E.ctl.ok("stream-pause")
    check(E.status()["state"] == "paused", "stream-pause: %s" % E.status())
    time.sleep(0.3)
    d1 = E.status()["bytes_done"]
    time.sleep(0.6)
    d2 = E.status()["bytes_done"]
    check(d1 == d2, "paused, yet bytes_done moved from %d to %d" % (d1, d2))
    E.ctl.ok("stream-resume")
    E.ctl.refused("stream-set-speed speed=fast", "speed")
    E.ctl.refused("stream-set-speed", "speed")
    E.ctl.ok("stream-set-speed speed=64K")
    check(E.status()["speed"] == 64 * 1024, "set-speed: %s" % E.status())

    log("clients: %d for %.1f s" % (args.clients, args.seconds))
    cl = Clients(E, model, args.seed, args.clients, flushes=flushes())
    cl.start()
    time.sleep(args.seconds)
    cl.stop()
    check(not cl.errors and not cl.bad, "; ".join(cl.errors + cl.bad))
    log("%d requests checked; stream %s" % (cl.ops, E.status()))
    check(E.status()["bytes_done"] < SIZE,
          "the job should still be running at 64K/s: %s" % E.status())
    E.check_whole(model, "local disk while streaming", start=U_END)

    # The base goes away: populated clusters and whole-cluster writes
    # go on, unpopulated ones fail with EIO, never zeroes.
    base_srv.kill()
    E.wait_state("waiting-for-base", 10)
    check(E.status()["base_connected"] is False, "base_connected: %s"
          % E.status())
    h = connect(E.sock)
    last = U_END - CL
    try:
        h.pread(4096, last)
        fail("a read of an unpopulated cluster succeeded without the base")
    except nbd.Error as e:
        check(e.errnum == 5, "expected EIO, got %s" % e)
    try:
        h.pwrite(b"x" * 100, last + 100)
        fail("a partial write to an unpopulated cluster succeeded without "
             "the base")
    except nbd.Error as e:
        check(e.errnum == 5, "expected EIO, got %s" % e)
    whole = pattern(99, CL)
    h.pwrite(whole, last - CL)
    model[last - CL:last] = whole
    h.zero(CL, last - 2 * CL)
    model[last - 2 * CL:last - CL] = bytes(CL)
    expect_same(h.pread(CL, last - CL), whole, "whole-cluster write "
                "without the base")
    close(h)
    base_srv.start()
    E.ctl.ok("stream-set-speed speed=0")
    s = E.wait_state("complete", 60)
    check(s["bytes_done"] == SIZE and s["base_connected"] is False,
          "complete: %s" % s)
    E.check_whole(model, "local disk after completion")
    E.check_file(model, "local image file after completion")
    E.ctl.refused("stream-pause", "complete")
    srv.stop()

    # Complete: no base needed any more, everything passes through.
    base_srv.stop()
    srv = stream_srv("0", with_base=False)
    srv.start(wait_ctl=True)
    check(E.status()["state"] == "complete", "restart: %s" % E.status())
    h = connect(E.sock)
    h.pwrite(b"y" * 1000, 12345)
    model[12345:13345] = b"y" * 1000
    close(h)
    E.check_whole(model, "after the restart without stream-base")
    srv.stop()
    log("model: OK")


def mode_crash():
    rng = random.Random(args.seed)
    for trial in range(args.trials):
        seed = args.seed * 1000 + trial
        base = E.fresh(seed)
        model = bytearray(base)
        base_srv.start()
        kills = rng.randint(2, 3)
        log("trial %d: seed %d, %d kills" % (trial, seed, kills))
        for k in range(kills + 1):
            srv = stream_srv("1M")
            srv.start(wait_ctl=True)
            cl = Clients(E, model, seed * 10 + k, args.clients,
                         flushes=flushes())
            cl.start()
            if k < kills:
                time.sleep(rng.uniform(0.1, 0.8))
                srv.kill()
                cl.stop()
                check(not cl.bad, "; ".join(cl.bad))
                settle_after = cl.uncertain
                srv = stream_srv("1M")
                srv.start(wait_ctl=True)
                cl.uncertain = settle_after
                cl.settle()
                E.check_whole(model, "trial %d after kill %d"
                              % (trial, k + 1))
                srv.stop()
            else:
                time.sleep(0.5)
                cl.stop()
                check(not cl.errors and not cl.bad,
                      "; ".join(cl.errors + cl.bad))
                E.ctl.ok("stream-set-speed speed=0")
                E.wait_state("complete", 60)
                E.check_whole(model, "trial %d, final" % trial)
                srv.stop()
                E.check_file(model, "trial %d, local image" % trial)
        base_srv.stop()
    log("crash: OK (%d trials)" % args.trials)


def mode_powerloss():
    import stream_powerloss
    stream_powerloss.run(args, E, base_srv, stream_srv)


run_main({"model": mode_model, "crash": mode_crash,
          "powerloss": mode_powerloss}[args.mode])

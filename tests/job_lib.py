#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helpers shared by the backup job tests' Python drivers (job_*.py):
# servers started and stopped from Python (the stack, NBD targets,
# qemu-nbd), starting and following a job through the control socket,
# and restoring a qcow2 chain.  Built on fleece_lib.py and incr_lib.py.

import atexit
import os
import signal
import subprocess
import time

from fleece_lib import MiB, fail, check, log, pattern, connect, close, \
    read_all, uri

_procs = []


def _kill_all():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_kill_all)


def listening(path):
    """True once a socket bound to path accepts connections.  The file
    appears at bind(), before listen(), so its existence is not enough;
    /proc/net/unix shows the listening state without connecting (a
    probe connection would end a qemu-nbd that serves one client).
    The shell tests' twin is sock_listening in tests/functions.sh."""
    # The table shows the path as the server gave it to bind().
    names = (path, os.path.abspath(path))
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Flags 00010000 is __SO_ACCEPTCON: listen() was called.
            if len(fields) >= 8 and fields[7] in names and \
               int(fields[3], 16) & 0x10000:
                return True
    return False


class Server:
    """A background server on Unix socket sock: argv is the command
    without the socket option; sock_opt is how the program takes its
    socket ("-U" for nbdkit, "-k" for qemu-nbd)."""

    def __init__(self, sock, argv, sock_opt="-U", log_path=None):
        self.sock = sock
        if os.path.exists(sock):
            os.unlink(sock)
        self.log_path = log_path or sock + ".log"
        self.logf = open(self.log_path, "ab")
        self.p = subprocess.Popen([argv[0], sock_opt, sock] + argv[1:],
                                  stdout=self.logf, stderr=subprocess.STDOUT)
        _procs.append(self.p)
        for _ in range(200):
            if listening(sock):
                return
            if self.p.poll() is not None:
                fail("%s exited during start-up: %s"
                     % (argv[0], open(self.log_path, errors="replace")
                        .read()[-2000:]))
            time.sleep(0.05)
        fail("%s did not create %s within 10 s" % (argv[0], sock))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send sig and wait for the exit; returns the exit status."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            fail("server on %s did not exit within %d s of signal %d"
                 % (self.sock, timeout, sig))
        self.logf.close()
        # nbdkit and qemu-nbd leave their socket behind.
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        return rc

    def log_text(self):
        return open(self.log_path, errors="replace").read()


def stack(tmpdir, disk, sock, ctl, filters, extra=()):
    """nbdkit with the project's filters over the file plugin."""
    sa, cbw, db = filters
    return Server(sock, ["nbdkit", "-f", "-v", "--filter=" + sa,
                         "--filter=" + cbw, "--filter=" + db,
                         "file", disk, "control=" + ctl] + list(extra))


def fill(sock, model, regions, seed=7):
    """Write seeded patterns at [(offset, length)] through the live
    export and into the model."""
    h = connect(sock)
    try:
        for i, (off, n) in enumerate(regions):
            data = pattern(seed * 100 + i, n)
            for o in range(0, n, 4 * MiB):
                m = min(4 * MiB, n - o)
                h.pwrite(data[o:o + m], off + o)
            model.write(off, data)
    finally:
        close(h)


def job_of(ctl, jid):
    jobs = ctl.ok("status").get("jobs")
    check(isinstance(jobs, list), "status has no jobs list")
    for j in jobs:
        if j.get("id") == jid:
            return j
    fail("job %s is not listed in status: %s" % (jid, jobs))


def start_job(ctl, args):
    r = ctl.ok("backup-start " + args)
    jid = r.get("job")
    check(isinstance(jid, str) and jid, "backup-start gave no job id: %s" % r)
    return jid


def wait_job(ctl, jid, timeout=60, states=("completed", "failed",
                                           "cancelled")):
    """Poll until the job's state is one of states; check that
    bytes_done never decreases and never passes bytes_total.  Returns
    the last job dict."""
    t0 = time.time()
    last = -1
    while True:
        j = job_of(ctl, jid)
        check(j["bytes_done"] >= last, "job %s: bytes_done went back from "
              "%d to %d" % (jid, last, j["bytes_done"]))
        check(j["bytes_total"] == 0 or j["bytes_done"] <= j["bytes_total"],
              "job %s: bytes_done %d > bytes_total %d"
              % (jid, j["bytes_done"], j["bytes_total"]))
        last = j["bytes_done"]
        if j["state"] in states:
            return j
        if time.time() - t0 > timeout:
            fail("job %s still %s after %d s: %s" % (jid, j["state"],
                                                     timeout, j))
        time.sleep(0.05)


def expect_completed(ctl, jid, timeout=60):
    j = wait_job(ctl, jid, timeout)
    check(j["state"] == "completed" and j["error"] is None,
          "job %s ended %s: %s" % (jid, j["state"], j["error"]))
    check(j["bytes_done"] == j["bytes_total"],
          "job %s completed with bytes_done %d != bytes_total %d"
          % (jid, j["bytes_done"], j["bytes_total"]))
    check(j["finished"] is not None and j["started"] is not None,
          "job %s: started/finished not set: %s" % (jid, j))
    return j


def wait_progress(ctl, jid, at_least, timeout=20):
    """Wait until bytes_done >= at_least (the job is under way)."""
    t0 = time.time()
    while True:
        j = job_of(ctl, jid)
        if j["bytes_done"] >= at_least:
            return j
        check(j["state"] in ("running", "paused"),
              "job %s ended (%s: %s) before it was under way"
              % (jid, j["state"], j["error"]))
        if time.time() - t0 > timeout:
            fail("job %s: no progress within %d s" % (jid, timeout))
        time.sleep(0.02)


def checkpoint_names(ctl):
    return [c["name"] for c in ctl.ok("status")["checkpoints"]]


def restore_qcow2(path, out):
    """qemu-img convert of the chain ending at path to raw out."""
    p = subprocess.run(["qemu-img", "convert", "-O", "raw", path, out],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(p.returncode == 0, "qemu-img convert %s: %s"
          % (path, p.stdout.decode(errors="replace")))
    with open(out, "rb") as f:
        return f.read()


def qcow2_create(path, size, backing=None):
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-b", backing, "-F", "qcow2"]
    argv += [path, str(size)]
    p = subprocess.run(argv, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    check(p.returncode == 0, "qemu-img create %s: %s"
          % (path, p.stdout.decode(errors="replace")))


def allocated(path):
    return os.stat(path).st_blocks * 512


def data_bytes(b, block=64 * 1024):
    """Bytes in the block-sized pieces of b that are not all zero."""
    zero = bytes(block)
    return sum(block for o in range(0, len(b), block)
               if b[o:o + block] != zero[:len(b[o:o + block])])


__all__ = ["Server", "stack", "fill", "job_of", "start_job", "wait_job",
           "expect_completed", "wait_progress", "checkpoint_names",
           "restore_qcow2", "qcow2_create", "allocated", "data_bytes",
           "read_all", "uri", "log"]

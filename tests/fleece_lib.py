#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helpers shared by the fleecing tests' Python drivers (fleece_*.py):
# seeded byte patterns, a byte model of the disk, the control socket,
# libnbd connections and whole-disk checksums.

import hashlib
import json
import os
import random
import signal
import socket
import sys
import time

import nbd

MiB = 1024 * 1024
CHUNK = 8 * MiB


class TestFailure(Exception):
    pass


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def log(msg):
    print(msg, flush=True)


def pattern(seed, n):
    """n reproducible bytes for seed, never an all-zero block."""
    b = bytearray(random.Random(seed).randbytes(n))
    # Make sure every 512-byte piece contains a non-zero byte, so a
    # region written with a pattern is never mistaken for a hole.
    for i in range(0, n, 512):
        b[i] = (b[i] | 1)
    return bytes(b)


def uri(sock, export=""):
    return "nbd+unix:///%s?socket=%s" % (export, sock)


def connect(sock, export="", meta=False, strict=True):
    h = nbd.NBD()
    if meta:
        h.add_meta_context("base:allocation")
    if not strict:
        h.set_strict_mode(0)
    h.set_export_name(export)
    h.connect_unix(sock)
    return h


def try_connect(sock, export=""):
    """(handle, None) or (None, error string)."""
    try:
        return connect(sock, export), None
    except nbd.Error as e:
        return None, str(e)


def close(h):
    try:
        h.shutdown()
    except nbd.Error:
        pass


def read_all(h, size):
    out = []
    for off in range(0, size, CHUNK):
        out.append(h.pread(min(CHUNK, size - off), off))
    return b"".join(out)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def file_sha(path):
    with open(path, "rb") as f:
        return sha(f.read())


def first_diff(a, b):
    n = min(len(a), len(b))
    for off in range(0, n, MiB):
        if a[off:off + MiB] != b[off:off + MiB]:
            for i in range(off, min(off + MiB, n)):
                if a[i] != b[i]:
                    return i
    return None if len(a) == len(b) else n


def expect_same(got, want, what, base=0):
    """got == want, else fail naming the first differing disk offset
    (base: the disk offset of got[0])."""
    if got != want:
        d = first_diff(got, want)
        if d is None:
            fail("%s: content differs" % what)
        d += base
        fail("%s: content differs (first difference at disk offset %d = "
             "%d MiB + %d)" % (what, d, d // MiB, d % MiB))


def expect_error(fn, what, errnos=None):
    """fn() must raise nbd.Error; return the error.  errnos: accepted
    errno names (None: any)."""
    try:
        fn()
    except nbd.Error as e:
        if errnos is not None and e.errno not in errnos:
            fail("%s: failed with %s (%s), expected one of %s"
                 % (what, e.errno, e, errnos))
        return e
    fail("%s: succeeded, expected an error" % what)


def timed_pwrite(h, data, off, limit):
    """pwrite that fails the test if it takes more than limit s."""
    c = h.aio_pwrite(data, off)
    t0 = time.time()
    while not h.aio_command_completed(c):   # raises if the write failed
        left = limit - (time.time() - t0)
        if left <= 0:
            fail("a guest write at %d+%d did not complete within %.1f s"
                 % (off, len(data), limit))
        h.poll(max(1, int(left * 1000)))


def kill_server(pid_file):
    """SIGKILL the nbdkit whose pid is in pid_file, wait until it is
    dead, and remove pid_file so that no clean-up signals a reused pid."""
    with open(pid_file) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] in ("Z", "X"):
                    break
        except OSError:
            break
        time.sleep(0.05)
    else:
        fail("target nbdkit %d did not die" % pid)
    os.unlink(pid_file)


class Model:
    """A byte-exact model of what the live disk must hold."""

    def __init__(self, size):
        self.b = bytearray(size)

    def write(self, off, data):
        self.b[off:off + len(data)] = data

    def zero(self, off, n):
        self.b[off:off + n] = bytes(n)

    def get(self, off, n):
        return bytes(self.b[off:off + n])

    def bytes(self):
        return bytes(self.b)


class Ctl:
    """The control socket.  timeout: seconds a reply may take before
    the test fails (socket.timeout, an OSError)."""

    def __init__(self, path, timeout=30):
        self.path = path
        self.timeout = timeout

    def __call__(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        s.sendall((line + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        try:
            return json.loads(buf.decode())
        except ValueError:
            fail("control '%s': reply is not JSON: %r" % (line, buf))

    def ok(self, line):
        r = self(line)
        check(r.get("ok") is True, "control '%s' failed: %s" % (line, r))
        return r

    def refused(self, line, regex=None):
        import re
        r = self(line)
        check(r.get("ok") is False and isinstance(r.get("error"), str)
              and r["error"] != "",
              "control '%s' should fail with an error, got %s" % (line, r))
        if regex is not None:
            check(re.search(regex, r["error"], re.I),
                  "control '%s': error %r does not match /%s/"
                  % (line, r["error"], regex))
        return r

    def snap(self):
        return self.ok("status")["snapshot"]


def read_log(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def run_main(fn):
    """Run fn(), turning TestFailure into exit status 1."""
    t0 = time.time()
    try:
        fn()
    except TestFailure as e:
        print("FAIL: %s" % e, file=sys.stderr, flush=True)
        sys.exit(1)
    log("(%.2f s)" % (time.time() - t0))

#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The one Python library of the tests' drivers, the bench and load
# scripts (bench/*.py and the Python in bench/*.sh import it from here):
# seeded byte patterns, a byte model of the disk, the control socket
# client, libnbd connections, whole-disk checksums, sparse files,
# stopping servers, and a pause barrier for worker threads.
# incr_lib.py adds what the change-tracking drivers need on top.

import hashlib
import json
import os
import random
import re
import signal
import socket
import sys
import threading
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


def holey_pattern(seed, size, cluster=64 * 1024, long_hole=True):
    """pattern(seed, size) with about 30% of it zero: a quarter of the
    clusters whole, a tenth with a zero run inside, and with long_hole
    (from 16 MiB) a 4 MiB hole at 8 MiB, so block status has a long run
    of clusters to report.  A base image for the stream filter."""
    rng = random.Random(seed)
    b = bytearray(pattern(seed, size))
    for c in range(size // cluster):
        r = rng.random()
        if r < 0.25:
            b[c * cluster:(c + 1) * cluster] = bytes(cluster)
        elif r < 0.35:
            off = c * cluster + rng.randrange(0, cluster // 2, 512)
            b[off:off + cluster // 4] = bytes(cluster // 4)
    if long_hole and size >= 16 * MiB:
        b[8 * MiB:12 * MiB] = bytes(4 * MiB)
    return b


def chunky_disk(path, size, seed, pct):
    """A sparse file of size bytes whose 1 MiB chunks are random data
    with probability pct% (picked by seed), the rest holes.  Returns the
    bytes of data.  The benches' disk and base images."""
    size = int(size)
    rnd = random.Random(int(seed))
    n = size >> 20
    picks = sorted(rnd.sample(range(n), n * int(pct) // 100))
    with open(path, "wb") as f:
        f.truncate(size)
        for c in picks:
            f.seek(c << 20)
            f.write(rnd.randbytes(1 << 20))
    return len(picks) << 20


def cpu_ticks(pid):
    """User + system CPU time of process pid so far, in clock ticks."""
    with open("/proc/%d/stat" % int(pid)) as f:
        s = f.read()
    v = s[s.rindex(")") + 2:].split()
    return int(v[11]) + int(v[12])


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


def connect_uri(u, meta=False, local_files=False):
    """A connection to URI u (meta: ask for base:allocation;
    local_files: let libnbd read files the URI names, such as a
    tls-psk-file)."""
    h = nbd.NBD()
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if local_files:
        h.set_uri_allow_local_file(True)
    h.connect_uri(u)
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


def wait_dead(pid, limit):
    """True once process pid has exited (gone or a zombie), False if
    it still runs after limit seconds."""
    t0 = time.time()
    while True:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        if time.time() - t0 >= limit:
            return False
        time.sleep(0.05)


def kill_server(pid_file):
    """SIGKILL the nbdkit whose pid is in pid_file, wait until it is
    dead, and remove pid_file so that no clean-up signals a reused pid."""
    with open(pid_file) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    if not wait_dead(pid, 5):
        fail("target nbdkit %d did not die" % pid)
    os.unlink(pid_file)


def write_sparse(path, data, block=64 * 1024):
    """Write data to path, leaving all-zero blocks as holes."""
    zero = bytes(block)
    with open(path, "wb") as f:
        f.truncate(len(data))
        mv = memoryview(data)
        for off in range(0, len(data), block):
            piece = mv[off:off + block]
            if piece != zero[:len(piece)]:
                f.seek(off)
                f.write(piece)


class PauseGate:
    """Lets a controller park n worker threads between two requests,
    so that nothing is in flight while it looks at the disk.

    Workers call between() before each request, and leave() when they
    end early (an error: they then count as parked for good).  The
    controller calls pause() (True once every worker is parked, False
    after timeout seconds), resume(), and stop() at the end.  cond
    also guards whatever the caller keeps beside the gate."""

    def __init__(self, n):
        self.n = n
        self.cond = threading.Condition()
        self.pausing = False
        self.stopping = False
        self.idle = 0
        self.errors = []

    def between(self):
        """Parks while a pause is asked.  None: stop now; True: the
        worker was parked (restart any pacing); False: go on."""
        with self.cond:
            parked = False
            if self.pausing:
                parked = True
                self.idle += 1
                self.cond.notify_all()
                while self.pausing and not self.stopping:
                    self.cond.wait()
                self.idle -= 1
            if self.stopping:
                return None
            return parked

    def leave(self, error=None):
        with self.cond:
            if error is not None:
                self.errors.append(error)
            self.idle += 1
            self.cond.notify_all()

    def pause(self, timeout=30):
        with self.cond:
            self.pausing = True
            return self.cond.wait_for(lambda: self.idle >= self.n,
                                      timeout=timeout)

    def resume(self):
        with self.cond:
            self.pausing = False
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.pausing = False
            self.cond.notify_all()


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
    """The control socket: one connection per command, one line in,
    one JSON line out.  timeout: seconds a reply may take.

    ctl(line)          the parsed reply; a connection error or timeout
                       raises OSError (socket.timeout is one), a reply
                       that is not JSON fails the test
    ctl.ok(line)       the reply, which must say ok
    ctl.refused(line)  the reply, which must be an error (matching regex)
    ctl.raw(line)      the parsed reply, or None if no whole line came
                       back (connection refused or closed, timeout)
    ctl.query(line)    never raises: a failure to talk to the socket is
                       {"ok": false, "error": ...}, for load drivers
                       that count errors instead of stopping."""

    def __init__(self, path, timeout=30):
        self.path = path
        self.timeout = timeout

    def exchange(self, line, timeout=None, sent=None):
        """Send line, return the reply bytes as far as they came (up to
        and including the newline).  sent: a Condition notified, with
        its nsent attribute counting, once the line is sent."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout if timeout is None else timeout)
            s.connect(self.path)
            s.sendall((line + "\n").encode())
            if sent is not None:
                with sent:
                    sent.nsent = getattr(sent, "nsent", 0) + 1
                    sent.notify_all()
            buf = b""
            while not buf.endswith(b"\n"):
                d = s.recv(65536)
                if not d:
                    break
                buf += d
        return buf

    def _parse(self, line, buf):
        try:
            return json.loads(buf.decode())
        except ValueError:
            fail("control '%s': reply is not JSON: %r" % (line, buf))

    def __call__(self, line):
        return self._parse(line, self.exchange(line))

    def raw(self, line, timeout=None, sent=None):
        try:
            buf = self.exchange(line, timeout, sent)
        except OSError:
            return None
        if not buf.endswith(b"\n"):
            return None
        return self._parse(line, buf)

    def query(self, line):
        try:
            buf = self.exchange(line)
        except OSError as e:
            return {"ok": False, "error": "control socket: %s" % e}
        try:
            return json.loads(buf.decode())
        except ValueError:
            return {"ok": False, "error": "reply is not JSON: %r" % buf}

    def ok(self, line):
        r = self(line)
        check(r.get("ok") is True, "control '%s' failed: %s" % (line, r))
        return r

    def refused(self, line, regex=None):
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


class Qmp:
    """A minimal QMP client of qemu-storage-daemon: commands, and the
    events that arrive meanwhile (kept in self.events).  timeout: of
    every read of the monitor, in seconds (None: wait forever)."""

    def __init__(self, path, timeout=None):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        # Unbuffered: what select() says about self.s is all there is.
        self.f = self.s.makefile("rwb", buffering=0)
        self.events = []
        self.read()                         # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.f.readline()
        if not line:
            fail("QMP: qemu-storage-daemon closed the monitor")
        return json.loads(line)

    def cmd(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg).encode() + b"\n")
        while True:
            r = self.read()
            if "event" in r:
                self.events.append(r)
            elif "error" in r:
                fail("QMP %s: %s" % (name, r["error"]))
            elif "return" in r:
                return r["return"]

    def event(self, name, limit=None):
        """The first event called name (taken out of self.events),
        waiting for it at most limit seconds (None: forever)."""
        end = None if limit is None else time.time() + limit
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            if end is not None:
                left = end - time.time()
                if left <= 0:
                    fail("QMP: no %s within %d s" % (name, limit))
                self.s.settimeout(max(0.1, left))
            try:
                self.events.append(self.read())
            except socket.timeout:
                fail("QMP: no %s within %d s" % (name, limit))


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

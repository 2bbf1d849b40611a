#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helpers shared by the change-tracking tests' Python drivers (incr_*.py):
# the changed-block map of a delta view (libnbd block status and
# nbdinfo --map), applying a delta view onto a previous backup, sparse
# backup files, granule arithmetic, background writer threads with a
# pause barrier, and a reader for the bitmap-file format.
#
# Built on fleece_lib.py (control socket, connections, patterns).

import json
import random
import struct
import subprocess
import threading
import time
import zlib

import nbd

from fleece_lib import (MiB, TestFailure, fail, check, log, pattern, uri,
                        connect, close, sha, expect_same, Ctl, run_main,
                        read_log, write_sparse, PauseGate)

__all__ = [
    "MiB", "TestFailure", "fail", "check", "log", "pattern", "uri",
    "connect", "close", "sha", "expect_same", "Ctl", "run_main", "read_log",
    "PauseGate",
    "HOLE_ZERO", "READ_CHUNK", "granules_of", "fmt_granules", "block_map",
    "nbdinfo_map", "map_granules", "check_granules", "delta_check",
    "write_sparse", "read_file", "Writers", "expect_open_refused",
    "parse_bitmap_file", "status_checkpoints",
]

HOLE_ZERO = 3                    # LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO
READ_CHUNK = 4 * MiB


def granules_of(off, n, gran):
    """The granules a request of n bytes at off touches."""
    if n <= 0:
        return range(0)
    return range(off // gran, (off + n - 1) // gran + 1)


def fmt_granules(gs, gran, limit=12):
    gs = sorted(gs)
    s = ", ".join("%d (@%d)" % (g, g * gran) for g in gs[:limit])
    if len(gs) > limit:
        s += ", ... (%d in all)" % len(gs)
    return s


def block_map(h, size):
    """base:allocation of the whole export as [(offset, length, flags)],
    adjacent extents of the same flags merged."""
    check(h.can_meta_context("base:allocation"),
          "the server did not agree to base:allocation")
    out = []
    off = 0
    while off < size:
        got = []

        def cb(metacontext, offset, entries, err):
            if metacontext == "base:allocation":
                got.extend(entries)
            return 0

        h.block_status(min(size - off, 1 << 30), off, cb)
        check(len(got) >= 2, "block status at %d returned no extent" % off)
        for i in range(0, len(got), 2):
            n, flags = got[i], got[i + 1]
            check(n > 0, "block status at %d: extent of length 0" % off)
            n = min(n, size - off)
            if out and out[-1][2] == flags and out[-1][0] + out[-1][1] == off:
                out[-1] = (out[-1][0], out[-1][1] + n, flags)
            else:
                out.append((off, n, flags))
            off += n
            if off >= size:
                break
    return out


def nbdinfo_map(u):
    """nbdinfo --map --json of URI u, merged like block_map."""
    p = subprocess.run(["nbdinfo", "--map", "--json", u],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    check(p.returncode == 0, "nbdinfo --map %s failed: %s"
          % (u, p.stderr.decode(errors="replace").strip()))
    try:
        entries = json.loads(p.stdout.decode())
    except ValueError:
        fail("nbdinfo --map --json %s: output is not JSON: %r"
             % (u, p.stdout[:200]))
    out = []
    for e in entries:
        off, n, flags = e["offset"], e["length"], e["type"]
        if out and out[-1][2] == flags and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n, flags)
        else:
            out.append((off, n, flags))
    return out


def map_granules(extents, gran, size, what):
    """The granules a delta view's map reports as data.  Every extent
    must be data (type 0) or HOLE|ZERO (type 3), cover the export
    without gaps, and data extents must start and end on granules."""
    pos = 0
    gs = set()
    for off, n, flags in extents:
        check(off == pos, "%s: map has a gap or overlap at %d" % (what, pos))
        check(flags in (0, HOLE_ZERO),
              "%s: extent at %d+%d has type %d; a delta view reports only "
              "0 (changed) or 3 (hole,zero)" % (what, off, n, flags))
        if flags == 0:
            check(off % gran == 0 and ((off + n) % gran == 0 or
                                       off + n == size),
                  "%s: data extent %d+%d is not granule-aligned (%d)"
                  % (what, off, n, gran))
            gs.update(granules_of(off, n, gran))
        pos = off + n
    check(pos == size, "%s: map covers %d bytes, export has %d"
          % (what, pos, size))
    return gs


def check_granules(got, want, gran, what, exact=True):
    """got (reported) must equal want, or include it (exact=False)."""
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    if missing:
        fail("%s: %d written granule(s) are NOT in the changed-block map: "
             "%s" % (what, len(missing), fmt_granules(missing, gran)))
    if exact and extra:
        fail("%s: %d granule(s) in the map were never written in the "
             "interval: %s" % (what, len(extra), fmt_granules(extra, gran)))


def delta_check(sock, name, size, gran, base, point, want, what,
                exact=True, full_read=True, use_nbdinfo=True,
                export_prefix="snapshot"):
    """Back up through the delta view export_prefix/since/NAME:
    read its map (libnbd block status, and nbdinfo --map agrees), check
    the changed granules against want (a set), pread only the data
    extents and apply them onto base (the previous backup's bytes).
    The result must equal point (the disk at the snapshot point).  With
    full_read, the whole view is also read: changed granules must read
    as the snapshot, the rest as zeroes.  Returns (new backup bytes,
    reported granules)."""
    export = "%s/since/%s" % (export_prefix, name)
    h = connect(sock, export, meta=True)
    try:
        check(h.get_size() == size, "%s: %s has size %d, disk has %d"
              % (what, export, h.get_size(), size))
        ext = block_map(h, size)
        got = map_granules(ext, gran, size, "%s: %s" % (what, export))
        if use_nbdinfo:
            ext2 = nbdinfo_map(uri(sock, export))
            got2 = map_granules(ext2, gran, size,
                                "%s: nbdinfo --map %s" % (what, export))
            check(got2 == got and ext2 == ext,
                  "%s: nbdinfo --map of %s disagrees with libnbd block "
                  "status: nbdinfo %s ... vs libnbd %s ..."
                  % (what, export, ext2[:6], ext[:6]))
        check_granules(got, want, gran, "%s: %s" % (what, export), exact)

        out = bytearray(base)
        ndata = 0
        for off, n, flags in ext:
            if flags != 0:
                continue
            for o in range(off, off + n, READ_CHUNK):
                m = min(READ_CHUNK, off + n - o)
                out[o:o + m] = h.pread(m, o)
                ndata += m
        if bytes(out) != point:
            expect_same(bytes(out), point,
                        "%s: backup from %s + %s" % (what, "previous backup",
                                                     export))

        if full_read:
            want_view = bytearray(size)
            for g in got:
                want_view[g * gran:(g + 1) * gran] = \
                    point[g * gran:(g + 1) * gran]
            view = bytearray()
            for o in range(0, size, READ_CHUNK):
                view += h.pread(min(READ_CHUNK, size - o), o)
            if view != want_view:
                expect_same(bytes(view), bytes(want_view),
                            "%s: reading all of %s (changed granules = "
                            "snapshot, the rest = zeroes)" % (what, export))
        log("  %s: %s maps %d granule(s) (%d expected), %d bytes read, "
            "backup sha256 %s OK" % (what, export, len(got), len(want),
                                     ndata, sha(point)[:16]))
        return bytes(out), got
    finally:
        close(h)


def expect_open_refused(sock, export, what):
    """Opening export must fail."""
    try:
        h = connect(sock, export)
    except nbd.Error as e:
        return str(e)
    close(h)
    fail("%s: opening export %s succeeded, expected it to be refused"
         % (what, export))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def status_checkpoints(ctl):
    return ctl.ok("status")["checkpoints"]


class Writers:
    """Background writers, each with its own libnbd connection to the
    live export, doing seeded random writes, zeroes and trims inside
    the 1 MiB stripes it owns (writer i owns stripes s with
    s % n == i), so writers never touch the same bytes and the model
    stays exact.  The model and the set of granules written since the
    last take_written() are updated after each request's reply.

    pause() returns once every writer is idle between requests;
    resume() lets them go on."""

    STRIPE = MiB

    def __init__(self, sock, model, size, gran, n=2, seed=1, rate=150,
                 use_trim=True):
        self.sock = sock
        self.model = model
        self.size = size
        self.gran = gran
        self.n = n
        self.rate = rate
        self.use_trim = use_trim
        self.gate = PauseGate(n)
        self.cond = self.gate.cond      # also guards written and ops
        self.errors = self.gate.errors
        self.written = set()
        self.ops = 0
        self.threads = [threading.Thread(target=self._run,
                                         args=(i, seed * 1000 + i),
                                         daemon=True)
                        for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def _op(self, rng, i):
        nstripes = self.size // self.STRIPE
        stripe = rng.randrange(i, nstripes, self.n)
        base = stripe * self.STRIPE
        r = rng.random()
        if r < 0.45:
            n = rng.randint(1, 4096)
        elif r < 0.75:
            n = rng.randint(4097, 65536)
        elif r < 0.9:
            n = rng.randint(65537, 256 * 1024)
        else:
            n = rng.randint(1, 3) * self.gran
        if r >= 0.9:
            off = base + rng.randrange(0, self.STRIPE // self.gran) * self.gran
        else:
            off = base + rng.randrange(0, self.STRIPE)
        n = min(n, base + self.STRIPE - off)
        k = rng.random()
        if k < 0.7:
            kind = "write"
        elif k < 0.85 or not self.use_trim:
            kind = "zero"
        else:
            kind = "trim"
        return kind, off, n, rng.getrandbits(48)

    def _run(self, i, seed):
        rng = random.Random(seed)
        try:
            h = connect(self.sock)
        except nbd.Error as e:
            self.gate.leave("writer %d: connect: %s" % (i, e))
            return
        if not h.can_trim():
            self.use_trim = False
        t_next = time.monotonic()
        try:
            while True:
                parked = self.gate.between()
                if parked is None:
                    return
                if parked:
                    t_next = time.monotonic()
                kind, off, n, dseed = self._op(rng, i)
                if kind == "write":
                    data = pattern(dseed, n)
                    h.pwrite(data, off)
                    self.model.write(off, data)
                elif kind == "zero":
                    h.zero(n, off)
                    self.model.zero(off, n)
                else:
                    h.trim(n, off)
                    self.model.zero(off, n)
                with self.cond:
                    self.written.update(granules_of(off, n, self.gran))
                    self.ops += 1
                t_next += 1.0 / self.rate
                d = t_next - time.monotonic()
                if d > 0:
                    time.sleep(d)
                else:
                    t_next = time.monotonic()
        except Exception as e:          # nbd.Error or a bug: report it
            self.gate.leave("writer %d: %s: %s" % (i, type(e).__name__, e))
        finally:
            close(h)

    def check(self):
        if self.errors:
            fail("a live writer failed: %s" % "; ".join(self.errors))

    def pause(self):
        ok = self.gate.pause(30)
        self.check()
        check(ok, "writers did not pause within 30 s")

    def resume(self):
        self.gate.resume()

    def take_written(self):
        """Granules written since the last call (call while paused)."""
        with self.cond:
            w = self.written
            self.written = set()
            return w

    def stop(self):
        self.gate.stop()
        for t in self.threads:
            t.join(30)
        self.check()


def parse_bitmap_file(path, data=None):
    """Parse a bitmap-file per the documented format (versions 2 to 4;
    from version 3 on the newest checkpoint's bits are the live region
    after the checksummed part; version 4 has the intent map between
    them).  Returns a dict, or raises TestFailure saying
    what is wrong.  data: the file's bytes, if not read from path."""
    b = read_file(path) if data is None else data
    check(len(b) >= 44, "%s: %d bytes, too short for a bitmap file"
          % (path, len(b)))
    version, = struct.unpack_from("<I", b, 8)
    meta, live, live_len = len(b), 0, 0
    intent, intent_len, shift, boot = 0, 0, 0, b""
    if version in (3, 4):
        hdr = 64 if version == 3 else 100
        check(len(b) >= hdr + 5, "%s: too short for version %d"
              % (path, version))
        meta, live, live_len = struct.unpack_from("<QQQ", b, 40)
        check(hdr + 5 <= meta <= len(b), "%s: meta length %d" % (path, meta))
        if version == 4:
            intent, intent_len, shift = struct.unpack_from("<QQI", b, 64)
            boot = bytes(b[84:100])
            check((intent == 0) == (live == 0) and
                  (intent == 0 or (intent % 4096 == 0 and intent >= meta and
                                   intent + intent_len <= live)),
                  "%s: intent map %d+%d" % (path, intent, intent_len))
        if live:
            check(live % 4096 == 0 and live >= meta
                  and live + live_len == len(b),
                  "%s: live region %d+%d in %d bytes"
                  % (path, live, live_len, len(b)))
        else:
            check(live_len == 0 and meta == len(b),
                  "%s: no live region but %d bytes after %d"
                  % (path, len(b) - meta, meta))
    crc, = struct.unpack_from("<I", b, meta - 4)
    check(crc == zlib.crc32(b[:meta - 4]) & 0xffffffff,
          "%s: CRC-32 %08x does not match the contents (%08x)"
          % (path, crc, zlib.crc32(b[:meta - 4]) & 0xffffffff))
    check(b[:8] == b"FLEECEBM", "%s: magic is %r" % (path, b[:8]))
    version, flags, size, gran, n, next_seq = \
        struct.unpack_from("<IIQIIQ", b, 8)
    check(version in (2, 3, 4), "%s: version %d" % (path, version))
    p = {2: 40, 3: 64, 4: 100}[version]
    ln = b[p]
    disk_id = b[p + 1:p + 1 + ln].decode()
    p += 1 + ln
    cps = []
    for i in range(n):
        ln = b[p]
        p += 1
        name = b[p:p + ln].decode()
        p += ln
        seq, created, consistent, rlen = struct.unpack_from("<QqBB", b, p)
        p += 18
        reason = b[p:p + rlen].decode()
        p += rlen
        blen, = struct.unpack_from("<Q", b, p)
        p += 8
        bits = b[p:p + blen]
        check(len(bits) == blen, "%s: bitmap of %s is cut short"
              % (path, name))
        p += blen
        if version >= 3 and i == n - 1:
            check(blen == 0, "%s: newest checkpoint has inline bits" % path)
            bits, blen = b[live:live + live_len], live_len
        gs = set()
        for byte_i, v in enumerate(bits):
            if v:
                for bit in range(8):
                    if v & (1 << bit):
                        gs.add(byte_i * 8 + bit)
        cps.append({"name": name, "seq": seq, "created": created,
                    "consistent": consistent, "reason": reason,
                    "granules": gs,
                    "bitmap_len": blen})
    check(p == meta - 4, "%s: %d bytes of trailing garbage before the CRC"
          % (path, meta - 4 - p))
    return {"in_use": bool(flags & 1), "flags": flags, "size": size,
            "version": version, "write_ahead": bool(flags & 2),
            "intent": bytes(b[intent:intent + intent_len]),
            "intent_shift": shift, "boot_id": boot,
            "disk_id": disk_id,
            "granularity": gran, "next_seq": next_seq, "checkpoints": cps}

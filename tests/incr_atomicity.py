#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-checkpoint-atomicity.sh: writes racing
# 'snapshot-begin checkpoint=cN'.
#
# Writer threads (own libnbd connections) write 4K blocks continuously,
# each block filled with records (magic, writer, granule, seq), so every
# write is identifiable.  Writer w owns a contiguous range of granules
# and walks it in order, one block per granule, so a granule is written
# again only after the writer wrapped around: the granule of a write in
# flight at a snapshot point is not rewritten in that round, and which
# checkpoint it was marked in is visible in the maps.  The writers are
# paced, but go back to back from a few ms before each snapshot-begin
# until a few ms after its reply, so requests are in flight at the point.
#
# Each round: checkpoint c<r-1> records; the writers run; snapshot-begin
# checkpoint=c<r> is sent with no pause (t_send before sending, t_reply
# after the reply); the writers run a little longer and are then paused
# for the checks.  For every granule g, k_r(g) = how many of g's writes
# the snapshot shows (every block of g must equal the replay of g's first
# k writes: never torn, never a mix).  Then:
#   - a write whose reply arrived before t_send is in the snapshot
#     (index <= k_r(g));
#   - a write sent after t_reply is not (index > k_r(g));
#   - k_r(g) >= k_{r-1}(g);
#   - the map of snapshot/since/c<r-1> (the old checkpoint) is EXACTLY
#     {g : k_{r-1}(g) < k_r(g)}, the writes up to the snapshot point.
# The same check one round later (and a final round with the writers
# stopped: the map of snapshot/since/c<last> is exactly
# {g : k_last(g) < writes(g)}) proves every write after the point is in
# the new checkpoint.  So a write in flight at the point is either in
# the snapshot and the old checkpoint's map, or not in the snapshot and
# in the new checkpoint's map -- never neither (nor both).

import argparse
import random
import struct
import threading
import time

from incr_lib import *

ap = argparse.ArgumentParser()
ap.add_argument("--sock", required=True)
ap.add_argument("--ctl", required=True)
ap.add_argument("--size", type=int, required=True)
ap.add_argument("--gran", type=int, required=True)
ap.add_argument("--writers", type=int, default=4)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--rate", type=float, default=2000,
                help="writes per second per writer")
ap.add_argument("--seed", type=int, default=11)
args = ap.parse_args()

SIZE, G, W = args.size, args.gran, args.writers
BLK = 4096
NGRAN = SIZE // G
REC = struct.Struct("<8sIIQQ")       # magic, writer, granule, seq, ~seq
MAGIC = b"INCRATOM"
NREC = BLK // REC.size


def block_data(w, g, seq):
    return REC.pack(MAGIC, w, g, seq, seq ^ 0xffffffffffffffff) * NREC


def decode(b, off):
    """None for a never-written (zero) block, else (writer, seq)."""
    if b == bytes(BLK):
        return None
    rec = b[:REC.size]
    if rec * NREC != b:
        fail("snapshot block at %d is torn or garbage (first record %s)"
             % (off, rec.hex()))
    magic, w, g, seq, inv = REC.unpack(rec)
    check(magic == MAGIC and inv == seq ^ 0xffffffffffffffff
          and g == off // G and w < W,
          "snapshot block at %d holds a record that no writer wrote there: "
          "%r" % (off, (magic, w, g, seq)))
    return (w, seq)


class Writer(threading.Thread):
    def __init__(self, i, ctlr):
        super().__init__(daemon=True)
        self.i = i
        self.c = ctlr
        self.log = []           # (granule, offset, seq, t0, t1)
        self.rng = random.Random(args.seed * 100 + i)
        self.per = NGRAN // W
        self.pos = self.rng.randrange(self.per)

    def run(self):
        c = self.c
        try:
            h = connect(args.sock)
            seq = 0
            t_next = time.monotonic()
            while True:
                parked = c.between()
                if parked is None:
                    break
                if parked:
                    t_next = time.monotonic()
                g = self.i * self.per + self.pos % self.per
                self.pos += 1
                off = g * G + self.rng.randrange(G // BLK) * BLK
                seq += 1
                data = block_data(self.i, g, seq)
                t0 = time.monotonic()
                h.pwrite(data, off)
                t1 = time.monotonic()
                self.log.append((g, off, seq, t0, t1))
                # Paced, except around a snapshot-begin (burst): then
                # back to back, so requests are in flight at the point.
                t_next += 1.0 / args.rate
                d = t_next - time.monotonic()
                if d > 0 and not c.burst.is_set():
                    c.burst.wait(d)
                else:
                    t_next = time.monotonic()
            close(h)
        except Exception as e:
            c.leave("writer %d: %s: %s" % (self.i, type(e).__name__, e))


class Control(PauseGate):
    """The writers' pause gate, and burst: set while they must write
    back to back."""

    def __init__(self):
        super().__init__(W)
        self.burst = threading.Event()

    def pause(self):
        ok = super().pause(30)
        check(not self.errors, "writer failed: %s" % self.errors)
        check(ok, "writers did not pause")

    def stop(self, ws):
        super().stop()
        for x in ws:
            x.join(30)
        check(not self.errors, "writer failed: %s" % self.errors)


def main():
    ctl = Ctl(args.ctl)
    check(SIZE % G == 0 and G % BLK == 0 and NGRAN % W == 0, "bad geometry")

    ctl.ok("checkpoint-create c0")
    c = Control()
    ws = [Writer(i, c) for i in range(W)]
    for x in ws:
        x.start()

    wl = {}                 # granule -> [(writer, seq, offset, t0, t1)]
    index = {}              # (writer, seq) -> (granule, 1-based index)
    seen = [0] * W          # log entries of each writer already in wl
    k_prev = {}             # granule -> writes shown by the last snapshot
    rng = random.Random(args.seed)
    totals = {"inflight": 0, "inflight_in": 0, "inflight_out": 0,
              "before": 0, "after": 0}

    def collect():
        for x in ws:
            for (g, off, seq, t0, t1) in x.log[seen[x.i]:]:
                lst = wl.setdefault(g, [])
                lst.append((x.i, seq, off, t0, t1))
                index[(x.i, seq)] = (g, len(lst))
            seen[x.i] = len(x.log)

    def read_blocks(h, offs):
        """Read the given block offsets of the snapshot, coalesced."""
        out = {}
        offs = sorted(offs)
        i = 0
        while i < len(offs):
            j = i
            while (j + 1 < len(offs) and offs[j + 1] == offs[j] + BLK
                   and offs[j + 1] - offs[i] < MiB):
                j += 1
            buf = h.pread(offs[j] + BLK - offs[i], offs[i])
            for o in offs[i:j + 1]:
                out[o] = buf[o - offs[i]:o - offs[i] + BLK]
            i = j + 1
        return out

    def analyse(rnd, t_send, t_reply, old):
        """The snapshot is active and the writers are paused."""
        collect()
        h = connect(args.sock, "snapshot")
        blocks = read_blocks(h, {e[2] for lst in wl.values() for e in lst})
        close(h)
        k = {}
        for g, lst in wl.items():
            vis = {}
            for off in {e[2] for e in lst}:
                vis[off] = decode(blocks[off], off)
            kg = 0
            for off, st in vis.items():
                if st is not None:
                    gg, i = index.get(st, (None, None))
                    check(gg == g, "round %d: block %d shows write %s, which "
                          "was not written there" % (rnd, off, st))
                    kg = max(kg, i)
            # Every block of g must be the replay of g's first kg writes.
            last = {}
            for (w, seq, off, t0, t1) in lst[:kg]:
                last[off] = (w, seq)
            for off, st in vis.items():
                check(last.get(off) == st,
                      "round %d: granule %d: the snapshot shows write %d of "
                      "the granule but block %d holds %s instead of %s (a "
                      "mix of before and after the snapshot point)"
                      % (rnd, g, kg, off, st, last.get(off)))
            check(kg >= k_prev.get(g, 0),
                  "round %d: granule %d went back from write %d to %d"
                  % (rnd, g, k_prev.get(g, 0), kg))
            for i, (w, seq, off, t0, t1) in enumerate(lst, 1):
                if t1 < t_send:
                    check(i <= kg, "round %d: write (writer %d, seq %d) at "
                          "%d completed %.1f ms BEFORE snapshot-begin was "
                          "sent but the snapshot does not show it"
                          % (rnd, w, seq, off, (t_send - t1) * 1e3))
                    if i > k_prev.get(g, 0):
                        totals["before"] += 1
                elif t0 > t_reply:
                    check(i > kg, "round %d: write (writer %d, seq %d) at %d "
                          "was sent %.1f ms AFTER the snapshot-begin reply "
                          "but the snapshot shows it"
                          % (rnd, w, seq, off, (t0 - t_reply) * 1e3))
                    totals["after"] += 1
                elif i > k_prev.get(g, 0):
                    totals["inflight"] += 1
                    totals["inflight_in" if i <= kg else "inflight_out"] += 1
            k[g] = kg

        # The old checkpoint's map: exactly the granules whose writes up
        # to the snapshot point came after the previous point.
        want = {g for g in k if k[g] > k_prev.get(g, 0)}
        hm = connect(args.sock, "snapshot/since/%s" % old, meta=True)
        got = map_granules(block_map(hm, SIZE), G, SIZE,
                           "round %d: snapshot/since/%s" % (rnd, old))
        close(hm)
        missing = want - got
        extra = got - want
        if missing or extra:
            def why(g):
                lst = wl.get(g, [])
                kp, kn = k_prev.get(g, 0), k.get(g, 0)
                return ("g%d: writes %d, snapshot %s shows %d, previous "
                        "showed %d; %s" %
                        (g, len(lst), rnd, kn, kp,
                         ["(w%d s%d t0%+.2fms t1%+.2fms)" %
                          (w, s, (t0 - t_send) * 1e3, (t1 - t_send) * 1e3)
                          for (w, s, o, t0, t1) in lst[max(kp - 1, 0):kn + 2]]))
            fail("round %d: map of snapshot/since/%s: %d granule(s) written "
                 "before the point and after %s's start are MISSING, %d "
                 "granule(s) present that were not written then.  "
                 "Missing: %s.  Extra: %s"
                 % (rnd, old, len(missing), old, len(extra),
                    "; ".join(why(g) for g in sorted(missing)[:4]),
                    "; ".join(why(g) for g in sorted(extra)[:4])))
        return k, len(want)

    t_start = time.monotonic()
    for rnd in range(1, args.rounds + 1):
        time.sleep(rng.uniform(0.05, 0.15))
        line = "snapshot-begin checkpoint=c%d" % rnd
        c.burst.set()
        time.sleep(0.003)
        t_send = time.monotonic()
        r = ctl(line)
        t_reply = time.monotonic()
        time.sleep(0.003)
        c.burst.clear()
        check(r.get("ok") is True, "%s failed: %s" % (line, r))
        time.sleep(0.03)
        c.pause()
        k, nmap = analyse(rnd, t_send, t_reply, "c%d" % (rnd - 1))
        k_prev.clear()
        k_prev.update(k)
        ctl.ok("snapshot-end")
        ctl.ok("checkpoint-delete c%d" % (rnd - 1))
        log("round %d: begin took %.2f ms; %d writes so far; map of "
            "since/c%d has %d granules; in flight so far %d (%d in the "
            "snapshot, %d not)"
            % (rnd, (t_reply - t_send) * 1e3, sum(len(x.log) for x in ws),
               rnd - 1, nmap, totals["inflight"], totals["inflight_in"],
               totals["inflight_out"]))
        c.resume()

    # Final: no more writes; the last checkpoint's map is exactly what
    # came after the last snapshot point.
    time.sleep(0.05)
    c.stop(ws)
    last = "c%d" % args.rounds
    t = time.monotonic()
    ctl.ok("snapshot-begin checkpoint=final")
    k, nmap = analyse(args.rounds + 1, t, time.monotonic(), last)
    for g, lst in wl.items():
        check(k[g] == len(lst), "final: granule %d shows write %d of %d"
              % (g, k[g], len(lst)))
    ctl.ok("snapshot-end")
    nwrites = sum(len(x.log) for x in ws)
    wraps = sum(1 for lst in wl.values() if len(lst) > 1)
    log("final: map of since/%s has %d granules; %d writes in all, %d "
        "granules written more than once; %d completed before a begin, %d "
        "sent after its reply, %d in flight (%d in the snapshot, %d not); "
        "%.1f s"
        % (last, nmap, nwrites, wraps, totals["before"], totals["after"],
           totals["inflight"], totals["inflight_in"], totals["inflight_out"],
           time.monotonic() - t_start))
    check(totals["inflight"] > 0,
          "no write was ever in flight during a snapshot-begin; the race "
          "was not exercised")
    check(totals["before"] > 0 and totals["after"] > 0,
          "no writes before/after the snapshot points")


run_main(main)

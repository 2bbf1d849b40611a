#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Helper for test-bitmap-persist.sh.  One step per call; the expected
# checkpoint chain (names, the granules each recorded, whether it must
# be trusted) is kept in a JSON state file between calls, because the
# shell script restarts and kills nbdkit in between.
#
#   create NAME            checkpoint-create NAME
#   write N SEED           N seeded writes/zeroes on the live export; their
#                          granules go to the recording checkpoint
#   status                 status must list the chain: names, recording,
#                          consistent, persistent true, dirty_bytes; a
#                          "reason" on exactly the inconsistent ones
#   reason NAME REGEX      status gives checkpoint NAME a reason matching
#                          REGEX (the bitmap file records the same)
#   delta NAME NEW         snapshot-begin checkpoint=NEW; the map of
#                          snapshot/since/NAME is exactly the granules
#                          written since NAME (across restarts), its data
#                          equals the disk, the rest reads as zeroes
#   refused NAME           snapshot/since/NAME refuses to open (plain
#                          snapshot), snapshot-begin since=NAME fails
#   file [--in-use 0|1]    the bitmap file parses per the documented format
#                          (magic, version, CRC-32), its header and its
#                          checkpoints match the chain, every inconsistent
#                          one with a reason
#   untrusted              after a damaged file: no checkpoint is trusted
#                          (none listed, or all inconsistent); the chain
#                          becomes what status lists, all untrusted
#   inconsistent           after kill -9 or a size change: the chain is
#                          kept, every checkpoint must now be inconsistent
#   damage MODE            damage the bitmap file (flip, truncate, random,
#                          text, badmagic, badstruct) and save a copy of the
#                          result as PATH.expected-damaged
#   size BYTES             the disk now has this size (state only)

import argparse
import json
import os
import random
import re
import shutil
import struct
import zlib

from incr_lib import *

ap = argparse.ArgumentParser()
ap.add_argument("--sock", required=True)
ap.add_argument("--ctl", required=True)
ap.add_argument("--state", required=True)
ap.add_argument("--bitmap-file", required=True)
ap.add_argument("--disk", required=True)
ap.add_argument("--gran", type=int, default=64 * 1024)
ap.add_argument("cmd")
ap.add_argument("rest", nargs="*")
ap.add_argument("--in-use", type=int)
args = ap.parse_args()
G = args.gran


def load():
    try:
        with open(args.state) as f:
            s = json.load(f)
    except FileNotFoundError:
        s = {"chain": []}
    for c in s["chain"]:
        c["granules"] = set(c["granules"])
    return s


def save(s):
    out = {"chain": [dict(c, granules=sorted(c["granules"]))
                     for c in s["chain"]]}
    with open(args.state + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(args.state + ".tmp", args.state)


def disk_size():
    return os.path.getsize(args.disk)


def cmd_create(s, name):
    Ctl(args.ctl).ok("checkpoint-create %s" % name)
    s["chain"].append({"name": name, "granules": set(), "consistent": True})


def cmd_write(s, n, seed):
    rng = random.Random(int(seed))
    size = disk_size()
    h = connect(args.sock)
    touched = set()
    for i in range(int(n)):
        off = rng.randrange(0, size - 1)
        ln = min(rng.choice([1, 512, 4096, 70000, 200000]), size - off)
        if rng.random() < 0.8:
            h.pwrite(pattern(rng.getrandbits(32), ln), off)
        else:
            h.zero(ln, off)
        touched.update(granules_of(off, ln, G))
    h.flush()
    close(h)
    if s["chain"]:
        s["chain"][-1]["granules"] |= touched
    log("  wrote %d requests over %d granules" % (int(n), len(touched)))


def cmd_status(s):
    st = Ctl(args.ctl).ok("status")
    cps = st["checkpoints"]
    names = [c["name"] for c in cps]
    want = [c["name"] for c in s["chain"]]
    check(names == want, "status lists %s, expected %s" % (names, want))
    for c, m in zip(cps, s["chain"]):
        what = "status of %s" % c["name"]
        check(c["persistent"] is True, "%s: persistent %s with bitmap-file"
              % (what, c["persistent"]))
        check(c["consistent"] is m["consistent"],
              "%s: consistent %s, expected %s" % (what, c["consistent"],
                                                  m["consistent"]))
        if c["consistent"]:
            check("reason" not in c, "%s: a reason (%r) on a consistent "
                  "checkpoint" % (what, c.get("reason")))
        else:
            check(isinstance(c.get("reason"), str) and c["reason"] != "",
                  "%s: inconsistent without a reason: %s" % (what, c))
        check(c["recording"] is (c["name"] == want[-1]),
              "%s: recording %s" % (what, c["recording"]))
        if m["consistent"]:
            check(c["dirty_bytes"] == len(m["granules"]) * G,
                  "%s: dirty_bytes %d, expected %d granules = %d"
                  % (what, c["dirty_bytes"], len(m["granules"]),
                     len(m["granules"]) * G))
    log("  status OK: %s" % ", ".join(
        "%s(%s)" % (c["name"], "ok" if c["consistent"] else
                    "inconsistent: %s" % c["reason"])
        for c in cps))


def cmd_reason(s, name, regex):
    cps = {c["name"]: c for c in Ctl(args.ctl).ok("status")["checkpoints"]}
    check(name in cps, "status does not list %s" % name)
    got = cps[name].get("reason")
    check(cps[name]["consistent"] is False and got is not None and
          re.fullmatch(regex, got) is not None,
          "checkpoint %s: reason %r, expected one matching /%s/"
          % (name, got, regex))
    in_file = {c["name"]: c for c in
               parse_bitmap_file(args.bitmap_file)["checkpoints"]}
    check(name in in_file and in_file[name]["reason"] == got,
          "checkpoint %s: the bitmap file records reason %r, status says %r"
          % (name, in_file.get(name, {}).get("reason"), got))
    log("  %s: %s" % (name, got))


def cmd_delta(s, name, new):
    ctl = Ctl(args.ctl)
    size = disk_size()
    ctl.ok("snapshot-begin checkpoint=%s" % new)
    names = [c["name"] for c in s["chain"]]
    check(name in names, "test bug: %s not in chain" % name)
    want = set()
    for c in s["chain"][names.index(name):]:
        check(c["consistent"], "test bug: %s is not consistent" % c["name"])
        want |= c["granules"]
    point = read_file(args.disk)
    # The disk is quiet, so the previous "backup" may be anything: apply
    # onto a copy of the disk with every changed granule scrambled.
    base = bytearray(point)
    for g in want:
        base[g * G:(g + 1) * G] = b"\xa5" * len(base[g * G:(g + 1) * G])
    delta_check(args.sock, name, size, G, bytes(base), point, want,
                "since %s" % name, exact=True, full_read=True)
    ctl.ok("snapshot-end")
    s["chain"].append({"name": new, "granules": set(), "consistent": True})


def cmd_refused(s, name):
    ctl = Ctl(args.ctl)
    ctl.ok("snapshot-begin")
    msg = expect_open_refused(args.sock, "snapshot/since/%s" % name,
                              "delta view of untrusted checkpoint %s" % name)
    ctl.ok("snapshot-end")
    ctl.refused("snapshot-begin since=%s" % name)
    check(ctl.snap()["active"] is False,
          "a refused snapshot-begin since=%s left a snapshot active" % name)
    log("  snapshot/since/%s refused (%s); snapshot-begin since=%s refused"
        % (name, msg.split(": ")[-1], name))


def cmd_file(s):
    f = parse_bitmap_file(args.bitmap_file)
    p = args.bitmap_file
    if args.in_use is not None:
        check(f["in_use"] is bool(args.in_use),
              "%s: in-use flag is %s, expected %s"
              % (p, f["in_use"], bool(args.in_use)))
    check(f["size"] == disk_size(), "%s: disk size %d, disk has %d"
          % (p, f["size"], disk_size()))
    check(f["granularity"] == G, "%s: granularity %d" % (p, f["granularity"]))
    names = [c["name"] for c in f["checkpoints"]]
    want = [c["name"] for c in s["chain"]]
    check(names == want, "%s lists %s, expected %s" % (p, names, want))
    seqs = [c["seq"] for c in f["checkpoints"]]
    check(seqs == sorted(set(seqs)) and all(q < f["next_seq"] for q in seqs),
          "%s: sequence numbers %s, next %d" % (p, seqs, f["next_seq"]))
    nbytes = (disk_size() // G + 7) // 8
    for c, m in zip(f["checkpoints"], s["chain"]):
        check(c["consistent"] == (1 if m["consistent"] else 0),
              "%s: checkpoint %s consistent byte %d, expected %s"
              % (p, c["name"], c["consistent"], m["consistent"]))
        check((c["reason"] == "") == bool(m["consistent"]),
              "%s: checkpoint %s (consistent %s) has reason %r"
              % (p, c["name"], m["consistent"], c["reason"]))
        if m["consistent"]:
            check(c["bitmap_len"] == nbytes, "%s: bitmap of %s is %d bytes, "
                  "expected %d" % (p, c["name"], c["bitmap_len"], nbytes))
            if not f["in_use"] or c["name"] != want[-1]:
                check_granules(c["granules"], m["granules"], G,
                               "%s: bitmap of %s" % (p, c["name"]))
    log("  bitmap file OK: in-use %s, %d checkpoint(s), %d bytes"
        % (f["in_use"], len(names), os.path.getsize(p)))


def cmd_untrusted(s):
    cps = Ctl(args.ctl).ok("status")["checkpoints"]
    for c in cps:
        check(c["consistent"] is False,
              "checkpoint %s is trusted (consistent true) after the bitmap "
              "file was damaged" % c["name"])
    s["chain"] = [{"name": c["name"], "granules": set(), "consistent": False}
                  for c in cps]
    log("  no checkpoint trusted (%d listed, all inconsistent)" % len(cps))


def cmd_inconsistent(s):
    for c in s["chain"]:
        c["consistent"] = False
    cmd_status(s)


def cmd_damage(s, mode):
    p = args.bitmap_file
    b = bytearray(read_file(p))
    rng = random.Random(len(b))
    # Where the CRC-32 is: last (version 2), or ending the checksummed
    # part (versions 3 and 4, whose in-place regions follow).
    meta = len(b)
    if struct.unpack_from("<I", b, 8)[0] in (3, 4):
        meta, = struct.unpack_from("<Q", b, 40)
    if mode == "flip":
        b[meta // 2] ^= 0x10
    elif mode == "truncate":
        b = b[:len(b) // 2]
    elif mode == "random":
        b = bytearray(rng.randbytes(4096))
    elif mode == "text":
        b = bytearray(b"This is not a bitmap file.\n" * 20)
    elif mode == "badmagic":
        # Structure and CRC fine, magic wrong.
        b[0:8] = b"FLEECEBX"
        b[meta - 4:meta] = struct.pack("<I", zlib.crc32(bytes(b[:meta - 4]))
                                       & 0xffffffff)
    elif mode == "badstruct":
        # CRC fine, but the header claims one more checkpoint than there is.
        n, = struct.unpack_from("<I", b, 28)
        struct.pack_into("<I", b, 28, n + 1)
        b[meta - 4:meta] = struct.pack("<I", zlib.crc32(bytes(b[:meta - 4]))
                                       & 0xffffffff)
    else:
        fail("unknown damage mode %s" % mode)
    with open(p, "wb") as f:
        f.write(b)
    shutil.copyfile(p, p + ".expected-damaged")
    log("  damaged %s (%s): now %d bytes" % (p, mode, len(b)))


def main():
    s = load()
    cmd = args.cmd
    r = args.rest
    if cmd == "create":
        cmd_create(s, *r)
    elif cmd == "write":
        cmd_write(s, *r)
    elif cmd == "status":
        cmd_status(s)
    elif cmd == "delta":
        cmd_delta(s, *r)
    elif cmd == "reason":
        cmd_reason(s, *r)
    elif cmd == "refused":
        cmd_refused(s, *r)
    elif cmd == "file":
        cmd_file(s)
    elif cmd == "untrusted":
        cmd_untrusted(s)
    elif cmd == "inconsistent":
        cmd_inconsistent(s)
    elif cmd == "damage":
        cmd_damage(s, *r)
    else:
        fail("unknown command %s" % cmd)
    save(s)


run_main(main)

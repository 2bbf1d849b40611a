#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driver for test-fleece-bad-input.sh: misuse of the snapshot and the
# control socket fails cleanly and never changes the snapshot or the
# live data.
#
#   --mode main         the whole list of misuses (see main())
#   --mode unreachable  the server runs with an unreachable NBD target:
#                       snapshot-begin fails naming the target, the live
#                       disk stays usable, no snapshot appears
#   --mode rename       the server runs with snapshot-export=backup:
#                       "backup" is the snapshot, "snapshot" is just
#                       another name for the live disk

import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleece_lib import (MiB, Ctl, Model, check, close, connect, expect_error,
                        expect_same, fail, log, pattern, read_all, read_log,
                        run_main, try_connect, uri)
import nbd

p = argparse.ArgumentParser()
p.add_argument("--mode", required=True,
               choices=["main", "unreachable", "rename"])
p.add_argument("--sock", required=True)
p.add_argument("--ctl", required=True)
p.add_argument("--log", required=True)
args = p.parse_args()

SIZE = 64 * MiB
C = 64 * 1024
NO_SNAP = re.compile(r"no snapshot is active", re.I)


def setup():
    h = connect(args.sock)
    check(h.get_size() == SIZE, "live size %d" % h.get_size())
    model = Model(SIZE)
    data = pattern(1, 4 * MiB)
    h.pwrite(data, 0)
    model.write(0, data)
    data = pattern(2, 1 * MiB)
    h.pwrite(data, 32 * MiB)
    model.write(32 * MiB, data)
    return h, model


def snapshot_unavailable(why):
    """Opening the snapshot export fails with a clear error."""
    before = len(NO_SNAP.findall(read_log(args.log)))
    hx, err = try_connect(args.sock, "snapshot")
    if hx is not None:
        close(hx)
        fail("%s: the snapshot export opened" % why)
    r = subprocess.run(["nbdinfo", uri(args.sock, "snapshot")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    check(r.returncode != 0, "%s: nbdinfo on the snapshot succeeded" % why)
    log("%s: libnbd: %s; nbdinfo: %s" % (why, err, r.stderr.strip()))
    after = len(NO_SNAP.findall(read_log(args.log)))
    check(after > before, "%s: the server log does not say 'no snapshot is "
          "active' for the refused open" % why)


def listed(name, why):
    """Whether nbdinfo --list shows export NAME; a listed snapshot
    export must carry a description."""
    r = subprocess.run(["nbdinfo", "--list", "--json", uri(args.sock)],
                       stdout=subprocess.PIPE, universal_newlines=True)
    check(r.returncode == 0, "%s: nbdinfo --list failed" % why)
    exports = json.loads(r.stdout)["exports"]
    names = [e["export-name"] for e in exports]
    check("" in names, "%s: nbdinfo --list does not show the live disk: %s"
          % (why, names))
    for e in exports:
        if e["export-name"] == name:
            check(e.get("description"), "%s: export %s is listed without a "
                  "description" % (why, name))
            check(e.get("is_read_only") is True,
                  "%s: export %s is listed as writable" % (why, name))
            return True
    return False


def live_usable(h, model, seed):
    data = pattern(seed, 3 * C)
    h.pwrite(data, 8 * MiB - 100)
    model.write(8 * MiB - 100, data)
    expect_same(read_all(h, SIZE), model.bytes(), "live disk")


def main():
    ctl = Ctl(args.ctl)
    h, model = setup()
    pre = model.bytes()
    s0 = ctl.snap()
    check(s0["active"] is False, "status at start: %s" % s0)

    # No snapshot yet.
    snapshot_unavailable("no snapshot begun yet")
    check(not listed("snapshot", "no snapshot"),
          "nbdinfo --list shows the snapshot export with no snapshot")
    ctl.refused("snapshot-end", r"snapshot")
    check(ctl.snap() == s0, "a refused snapshot-end changed the status")

    # snapshot-begin with arguments it does not know.
    for line in ["snapshot-begin foo=bar", "snapshot-begin now",
                 "snapshot-begin checkpoint", "snapshot-begin =x",
                 "snapshot-begin since=nosuchcheckpoint"]:
        ctl.refused(line)
        check(ctl.snap() == s0, "'%s' changed the status" % line)
    snapshot_unavailable("after refused snapshot-begins")

    # A snapshot; a second snapshot-begin is refused.
    ctl.ok("snapshot-begin")
    s1 = ctl.snap()
    check(s1["active"] is True, "status: %s" % s1)
    hs = connect(args.sock, "snapshot")
    hs_loose = connect(args.sock, "snapshot", strict=False)
    check(listed("snapshot", "during a snapshot"),
          "nbdinfo --list does not show the snapshot export")
    ctl.refused("snapshot-begin", r"active|already")
    s = ctl.snap()
    check(s["active"] is True and s["started"] == s1["started"],
          "a refused second snapshot-begin changed the snapshot: %s -> %s"
          % (s1, s))

    # Live writes after the refused begin are still preserved by the
    # first snapshot.
    for off, n, seed in [(1 * MiB, C, 10), (2 * MiB - 100, 200, 11),
                         (32 * MiB, 2 * C, 12)]:
        data = pattern(seed, n)
        h.pwrite(data, off)
        model.write(off, data)
    h.zero(C, 3 * MiB)
    model.zero(3 * MiB, C)
    expect_same(read_all(hs, SIZE), pre,
                "first snapshot after a refused second snapshot-begin")

    # Writes to the snapshot export fail: refused by libnbd for a
    # read-only export, and by the server when libnbd lets them through.
    check(hs.is_read_only(), "snapshot export is not read-only")
    check(not hs.can_trim(), "snapshot export offers trim without "
          "snapshot-discard")
    for hh, how in [(hs, "strict"), (hs_loose, "non-strict")]:
        expect_error(lambda: hh.pwrite(b"x" * 4096, 0),
                     "pwrite to the snapshot (%s libnbd)" % how)
        expect_error(lambda: hh.pwrite(b"y" * 4096, 1 * MiB,
                                       nbd.CMD_FLAG_FUA),
                     "pwrite+FUA to the snapshot (%s libnbd)" % how)
        expect_error(lambda: hh.zero(C, 0),
                     "zero on the snapshot (%s libnbd)" % how)
        expect_error(lambda: hh.trim(C, 4 * C),
                     "trim on the snapshot (%s libnbd)" % how)
    expect_same(read_all(hs, SIZE), pre, "snapshot after refused writes")
    expect_same(read_all(h, SIZE), model.bytes(),
                "live disk after refused snapshot writes")
    s = ctl.snap()
    check(s["released_bytes"] == 0 and s["broken"] is None,
          "status after refused snapshot writes: %s" % s)

    # Reads past the end of the snapshot.
    check(hs_loose.get_size() == SIZE, "snapshot size")
    expect_error(lambda: hs_loose.pread(1024, SIZE - 512),
                 "snapshot read across the end")
    expect_error(lambda: hs_loose.pread(512, SIZE),
                 "snapshot read at the end")
    expect_error(lambda: hs_loose.pread(4096, 2 * SIZE),
                 "snapshot read far past the end")
    expect_error(lambda: hs.pread(1024, SIZE - 512),
                 "snapshot read across the end (strict libnbd)")
    expect_same(hs_loose.pread(512, SIZE - 512), pre[SIZE - 512:],
                "the last sector of the snapshot")
    expect_same(read_all(hs_loose, SIZE), pre,
                "snapshot after reads past the end")

    # snapshot-end: connections opened on the snapshot get errors.
    ctl.ok("snapshot-end")
    check(ctl.snap()["active"] is False, "active after snapshot-end")
    for hh, how in [(hs, "strict"), (hs_loose, "non-strict")]:
        expect_error(lambda: hh.pread(4096, 0),
                     "read on an old snapshot connection (%s)" % how)
        expect_error(lambda: hh.pread(4096, 1 * MiB),
                     "read of a copied cluster on an old snapshot "
                     "connection (%s)" % how)
    snapshot_unavailable("after snapshot-end")
    check(not listed("snapshot", "after snapshot-end"),
          "nbdinfo --list shows the snapshot export after snapshot-end")
    ctl.refused("snapshot-end", r"snapshot")

    # A new snapshot: the old connections still get errors, never the
    # new snapshot's data; new connections see the new snapshot.
    now = model.bytes()
    ctl.ok("snapshot-begin")
    for hh, how in [(hs, "strict"), (hs_loose, "non-strict")]:
        expect_error(lambda: hh.pread(4096, 0),
                     "read on a connection to the previous snapshot (%s)"
                     % how)
    hs2 = connect(args.sock, "snapshot")
    data = pattern(20, 2 * C)
    h.pwrite(data, 1 * MiB)
    model.write(1 * MiB, data)
    expect_same(read_all(hs2, SIZE), now, "the second snapshot")
    ctl.ok("snapshot-end")
    close(hs)
    close(hs_loose)
    close(hs2)
    ctl.refused("snapshot-end")
    check(ctl.snap()["active"] is False, "active at the end")
    live_usable(h, model, 30)
    close(h)


def unreachable():
    ctl = Ctl(args.ctl)
    h, model = setup()
    r = ctl("snapshot-begin")
    log("snapshot-begin with an unreachable target: %s" % r)
    check(r.get("ok") is False, "snapshot-begin succeeded with an "
          "unreachable target: %s" % r)
    check(re.search(r"target|connect|nothing", r.get("error", ""), re.I),
          "the error does not mention the target: %s" % r)
    s = ctl.snap()
    check(s["active"] is False and s["clusters_copied"] == 0,
          "status after a failed snapshot-begin: %s" % s)
    snapshot_unavailable("after a failed snapshot-begin")
    live_usable(h, model, 40)
    # And once more: still refused, still no harm.
    ctl.refused("snapshot-begin")
    check(ctl.snap()["active"] is False, "active after the second try")
    live_usable(h, model, 41)
    close(h)


def rename():
    ctl = Ctl(args.ctl)
    h, model = setup()
    pre = model.bytes()
    hx, err = try_connect(args.sock, "backup")
    check(hx is None, "export 'backup' opens with no snapshot")
    ctl.ok("snapshot-begin")
    check(listed("backup", "snapshot-export=backup"),
          "nbdinfo --list does not show the 'backup' export")
    check(not listed("snapshot", "snapshot-export=backup"),
          "nbdinfo --list shows a 'snapshot' export with "
          "snapshot-export=backup")
    hb = connect(args.sock, "backup")
    check(hb.is_read_only(), "'backup' is not read-only")
    # "snapshot" stays reserved: a client asking for it never gets the
    # live disk, nor do names under backup/ that are no view.
    for name in ["snapshot", "snapshot/since/x", "snapshot@x", "backup/x",
                 "backup@x", "backup/since/"]:
        hx, err = try_connect(args.sock, name)
        check(hx is None, "reserved export %r opens" % name)
    for off, seed in [(1 * MiB, 50), (2 * MiB, 51)]:
        data = pattern(seed, 2 * C)
        h.pwrite(data, off)
        model.write(off, data)
    expect_same(read_all(h, SIZE), model.bytes(), "live disk")
    expect_same(read_all(hb, SIZE), pre, "snapshot through export 'backup'")
    ctl.ok("snapshot-end")
    expect_error(lambda: hb.pread(4096, 0), "'backup' after snapshot-end")
    hx, err = try_connect(args.sock, "backup")
    check(hx is None, "export 'backup' opens after snapshot-end")
    close(hb)
    close(h)


run_main({"main": main, "unreachable": unreachable,
          "rename": rename}[args.mode])

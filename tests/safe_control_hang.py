#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Driven by test-safe-control-hang.sh: the plugin's
# backend accepts one connection at a time (qemu-nbd -e 1 behind
# nbdkit's nbd plugin) and a guest holds it.  The control commands must
# still answer within 10 s (snapshot-begin uses what is already open,
# not a new backend connection), the guest keeps writing, and SIGTERM
# stops nbdkit within 10 s.  Every step has a time limit, so a hang is
# a failure, never a hung test.

import argparse
import os
import signal
import time

from fleece_lib import (fail, check, log, pattern, connect, close, Ctl,
                        run_main, timed_pwrite, expect_same, wait_dead)

LIMIT = 10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--disk", required=True)
    a = ap.parse_args()
    ctl = Ctl(a.ctl, timeout=LIMIT)

    def command(line):
        t0 = time.time()
        try:
            r = ctl(line)
        except OSError as e:
            fail("control '%s': no reply within %d s (%s)"
                 % (line, LIMIT, e))
        log("  %s -> %s (%.2f s)" % (line, r, time.time() - t0))
        check(r.get("ok") is True, "control '%s' failed: %s" % (line, r))
        return r

    guest = connect(a.sock)          # holds qemu-nbd's only slot
    size = guest.get_size()
    guest.pread(4096, 0)
    log("guest connected, %d bytes" % size)

    command("snapshot-begin")
    st = command("status")
    check(st["snapshot"]["active"] is True,
          "status after snapshot-begin: %s" % st["snapshot"])

    data = pattern(7, 100000)
    off = 3 * 65536 + 1234
    timed_pwrite(guest, data, off, LIMIT)
    expect_same(guest.pread(len(data), off), data, "guest read-back", off)

    command("snapshot-end")
    command("status")

    with open(a.disk, "rb") as f:
        f.seek(off)
        expect_same(f.read(len(data)), data, "the disk after the guest write",
                    off)

    # SIGTERM with the guest still connected.  nbdkit shuts the guest's
    # connection down and waits for the guest to close its end, as any
    # client does when it sees the server go; then it must exit.
    with open(a.pid_file) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGTERM)
    close(guest)
    del guest
    t0 = time.time()
    if not wait_dead(pid, LIMIT):
        fail("nbdkit did not stop within %d s of SIGTERM" % LIMIT)
    log("nbdkit stopped %.2f s after SIGTERM" % (time.time() - t0))
    os.unlink(a.pid_file)
    log("OK")


if __name__ == "__main__":
    run_main(main)

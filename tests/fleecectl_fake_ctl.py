#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# A scripted stand-in for the control socket, so that fleecectl's
# backup follower (progress, exit status, Ctrl-C) and its status
# summary are tested without a server that runs backup jobs.
#
#   fleecectl_fake_ctl.py SOCKET SCENARIO LOGFILE
#
# Every request line is appended to LOGFILE.  Scenarios:
#   complete  backup-start -> job "7"; bytes_done grows with time over
#             DURATION s (env FAKE_DURATION, default 2.5), paused for a
#             moment in the middle, then "completed"
#   fail      as complete, then "failed" with an error at 40%
#   numeric   as complete but the job id is the number 7
#   hang      the job runs slowly until job-cancel id=7 cancels it
#   vanish    the job disappears from the list after a few polls
#   refuse    backup-start is an unknown command
#   rich      status only: a document with every part of the contract
#             (named snapshots, a broken one, an inconsistent
#             checkpoint, jobs, stream) and keys the tool cannot know
#   garbage   every reply is not JSON

import json
import os
import socket
import sys
import threading
import time

sock_path, scenario, log_path = sys.argv[1:4]
DURATION = float(os.environ.get("FAKE_DURATION", "2.5"))
TOTAL = 100 * 1024 * 1024

state = {"start": None, "cancelled": False, "polls": 0}
lock = threading.Lock()


def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\n")


def job(jid="7"):
    """The job as status shows it now."""
    t = time.monotonic() - state["start"]
    frac = min(1.0, t / DURATION)
    st = "running"
    if 0.45 < frac < 0.55:
        st = "paused"
    err = None
    if scenario == "hang":
        frac = min(0.5, t / 100)
        st = "cancelled" if state["cancelled"] else "running"
        if state["cancelled"]:
            err = "cancelled by job-cancel"
    elif scenario == "fail" and frac >= 0.4:
        frac, st, err = 0.4, "failed", "writing the target: No space left on device"
    elif frac >= 1.0:
        st = "completed"
    return {"id": jid, "type": "backup", "sync": "full", "state": st,
            "bytes_total": TOTAL, "bytes_done": int(TOTAL * frac),
            "speed": 0, "started": "2026-11-22T15:00:00Z",
            "finished": None if st in ("running", "paused") else
            "2026-11-22T15:00:03Z",
            "error": err, "future_key": {"x": [1, 2]}}


RICH = {
    "ok": True,
    "snapshot": {"active": True, "started": "2026-11-22T15:00:00Z",
                 "clusters_copied": 12, "target_bytes": 786432,
                 "released_bytes": 65536, "broken": None,
                 "checkpoint": "c2", "since": "c1", "new_key": 1},
    "snapshots": [{"name": "n1", "active": True,
                   "started": "2026-11-22T15:30:00Z", "clusters_copied": 3,
                   "target_bytes": 196608, "released_bytes": 0,
                   "broken": "copy to the target failed: Input/output error"}],
    "checkpoints": [
        {"name": "c1", "created": "2026-11-22T14:00:00Z", "recording": False,
         "dirty_bytes": 1048576, "persistent": True, "consistent": False,
         "reason": "server did not stop cleanly"},
        {"name": "c2", "created": "2026-11-22T15:00:00Z", "recording": True,
         "dirty_bytes": 65536, "persistent": True, "consistent": True},
        {"name": "c3"}],
    "jobs": [
        {"id": "4", "type": "backup", "sync": "incremental",
         "state": "failed", "bytes_total": 2097152, "bytes_done": 1048576,
         "speed": 52428800, "started": "2026-11-22T15:00:00Z",
         "finished": "2026-11-22T15:00:02Z",
         "error": "target: Input/output error"},
        {"id": 5, "state": "running"}],
    "stream": {"state": "running", "bytes_total": 4194304,
               "bytes_done": 1048576, "speed": 0, "base_connected": True},
    "unknown_top": [{"a": None}],
}


def reply(line):
    words = line.split()
    cmd = words[0] if words else ""
    if scenario == "garbage":
        return "this is not json"
    if cmd == "status":
        if scenario == "rich":
            return json.dumps(RICH)
        with lock:
            state["polls"] += 1
            jobs = []
            if state["start"] is not None:
                if not (scenario == "vanish" and state["polls"] > 3):
                    jobs.append(job(7 if scenario == "numeric" else "7"))
                jobs.append({"id": "3", "state": "completed"})
        return json.dumps({"ok": True, "snapshot": {"active": False},
                           "checkpoints": [], "jobs": jobs})
    if cmd == "backup-start":
        if scenario == "refuse":
            return json.dumps({"ok": False, "error":
                               "unknown command 'backup-start'"})
        with lock:
            state["start"] = time.monotonic()
        return json.dumps({"ok": True,
                           "job": 7 if scenario == "numeric" else "7"})
    if cmd == "job-cancel":
        with lock:
            if words[1:] == ["id=7"] and state["start"] is not None:
                state["cancelled"] = True
                return json.dumps({"ok": True})
        return json.dumps({"ok": False, "error": "no such job"})
    return json.dumps({"ok": False, "error": "unknown command '%s'" % cmd})


def serve(conn):
    with conn:
        buf = b""
        while b"\n" not in buf:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        line = buf.split(b"\n")[0].decode()
        log(line)
        conn.sendall((reply(line) + "\n").encode())


def main():
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    # Listen under another name, then rename: the test waits for the
    # socket file, which must not appear before listen().
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_path + ".new"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    s.bind(tmp)
    s.listen(16)
    os.rename(tmp, sock_path)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()

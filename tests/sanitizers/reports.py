#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Reads the report files that a sanitizer run left in LOGDIR (asan.*,
# ubsan.*, tsan.*, written through log_path) and the reports in the logs
# of the tests of TREE (tests/*.log: what went to stderr), splits them
# into single reports (one leak, one race, one error), and sorts each
# into "ours" (a frame in our filters, common/ or tests/) or "not ours"
# (only nbdkit, libnbd, glibc...; and indirect leaks when no direct leak
# of that process is ours).  Prints every report, ours first, with
# the test that started the process when LOGDIR/invocations knows it,
# then one line "reports: N ours, N not ours".  Exit status 1 if any
# report is ours, else 0.
#
#   reports.py LOGDIR TREE     TREE: the top of the sanitized build

import os
import re
import sys

OUR_MODULE = re.compile(r"nbdkit-(cbw|snapshot-access|dirty-bitmap)-filter\.so")
# Source paths as the symbolizer prints them, absolute or relative.
OUR_SOURCE = re.compile(
    r"(^|[\s/(])(common|filters/(cbw|snapshot-access|dirty-bitmap)|tests)/"
    r"[A-Za-z0-9_.+-]+\.[ch]:\d+")


def split_reports(text):
    """Yield (kind, text) for every single report in one log file."""
    lines = text.splitlines()
    out = []
    if "ThreadSanitizer" in text:
        # Each report sits between two lines of '=' signs.
        cur = None
        for ln in lines:
            if ln.strip() == "==================":
                if cur is None:
                    cur = []
                else:
                    out.append(("tsan", "\n".join(cur)))
                    cur = None
            elif cur is not None:
                cur.append(ln)
            elif ln.strip():
                # Outside a block: "ThreadSanitizer: reported N warnings" etc.
                if "ThreadSanitizer:" in ln and "reported" in ln:
                    continue
                out.append(("tsan", ln))
        if cur:
            out.append(("tsan", "\n".join(cur)))
        return out
    if "LeakSanitizer: detected memory leaks" in text:
        cur = None
        for ln in lines:
            if re.match(r"^(Direct|Indirect) leak of", ln):
                if cur:
                    out.append(("leak", "\n".join(cur)))
                cur = [ln]
            elif ln.startswith("SUMMARY:"):
                if cur:
                    out.append(("leak", "\n".join(cur)))
                cur = None
            elif cur is not None:
                cur.append(ln)
        if cur:
            out.append(("leak", "\n".join(cur)))
        # Something else in the same file (an error before the leak check)?
        head = text.split("LeakSanitizer: detected memory leaks")[0]
        if "ERROR: AddressSanitizer" in head:
            out.insert(0, ("asan", head))
        return out
    if "runtime error:" in text:
        cur = None
        for ln in lines:
            if "runtime error:" in ln:
                if cur:
                    out.append(("ubsan", "\n".join(cur)))
                cur = [ln]
            elif cur is not None:
                cur.append(ln)
        if cur:
            out.append(("ubsan", "\n".join(cur)))
        return out
    if text.strip():
        out.append(("asan" if "AddressSanitizer" in text else "other", text))
    return out


def from_test_log(text):
    """Yield (kind, text) for the sanitizer reports in a test's log: the
    unit tests, and UBSan in them, write to stderr."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if "runtime error:" in ln:
            j = i + 1
            while j < len(lines) and re.match(r"^\s+#\d+ ", lines[j]):
                j += 1
            yield ("ubsan", "\n".join(lines[i:j]))
            i = j
        elif re.search(r"==\d+==ERROR: (Address|Leak)Sanitizer", ln):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("SUMMARY:"):
                j += 1
            yield from split_reports("\n".join(lines[i:j + 1]))
            i = j + 1
        elif "WARNING: ThreadSanitizer" in ln:
            j = i + 1
            while j < len(lines) and lines[j].strip() != "==================":
                j += 1
            yield ("tsan", "\n".join(lines[i:j]))
            i = j + 1
        else:
            i += 1


def is_ours(report, tree):
    if OUR_MODULE.search(report):
        return True
    if tree and (tree + "/filters/" in report or tree + "/common/" in report
                 or tree + "/tests/" in report):
        return True
    return bool(OUR_SOURCE.search(report))


def main():
    logdir, tree = sys.argv[1], sys.argv[2].rstrip("/")
    invocations = {}
    inv = os.path.join(logdir, "invocations")
    if os.path.exists(inv):
        with open(inv, errors="replace") as f:
            for ln in f:
                parts = ln.rstrip("\n").split(" ", 2)
                if len(parts) >= 2:
                    invocations[parts[0]] = (parts[1],
                                             parts[2] if len(parts) > 2 else "")
    ours, theirs = [], []
    for name in sorted(os.listdir(logdir)):
        if not re.match(r"^(asan|ubsan|tsan)\.", name):
            continue
        path = os.path.join(logdir, name)
        with open(path, errors="replace") as f:
            text = f.read()
        where = name
        # KIND.nbdkit.TEST.WRAPPERPID.PID from tests/sanitizers/nbdkit.
        m = re.match(r"^[a-z]+\.nbdkit\.(.*)\.(\d+)\.(\d+)$", name)
        if m:
            test, wpid, pid = m.groups()
            args = invocations.get(wpid, (test, "?"))[1]
            where = "%s\n  nbdkit started by %s: nbdkit %s%s" % (
                name, test, args,
                "" if pid == wpid else
                "\n  (in the server process that --run forked off)")
        reps = split_reports(text)
        # An indirect leak is only reachable from other leaked blocks.
        # When no direct leak of the same process is ours, it hangs from
        # a leak elsewhere: nbdkit 1.32 does not free the contexts of a
        # connection still open when it exits on SIGTERM, so our filter's
        # per-connection handle (never .close'd) is leaked with them.
        direct_ours = any(k == "leak" and rep.startswith("Direct")
                          and is_ours(rep, tree) for k, rep in reps)
        for kind, rep in reps:
            if (kind == "leak" and rep.startswith("Indirect")
                    and not direct_ours):
                theirs.append((where, "leak, indirect: reachable only from"
                               " leaked blocks that are not ours", rep))
            elif is_ours(rep, tree):
                ours.append((where, kind, rep))
            else:
                theirs.append((where, kind, rep))

    # Reports that went to the tests' own logs.
    testdir = os.path.join(tree, "tests")
    if os.path.isdir(testdir):
        for name in sorted(os.listdir(testdir)):
            if not name.endswith(".log") or name == "test-suite.log":
                continue
            with open(os.path.join(testdir, name), errors="replace") as f:
                text = f.read()
            for kind, rep in from_test_log(text):
                where = "tests/%s (the test's output)" % name
                (ours if is_ours(rep, tree) else theirs).append(
                    (where, kind, rep))

    # The same report from many processes is printed once, with a count.
    def signature(rep):
        rep = re.sub(r"0x[0-9a-f]+", "0x", rep)
        rep = re.sub(r"==\d+==", "==", rep)
        rep = re.sub(r"\b[TM]\d+\b", "X", rep)
        rep = re.sub(r"\b(tid|pid)=\d+", "", rep)
        rep = re.sub(r"\((running|finished)\)", "", rep)
        rep = re.sub(r"\d+ byte\(s\) in \d+ object\(s\)", "N bytes", rep)
        rep = re.sub(r"(heap block|size) of size \d+", "size", rep)
        rep = re.sub(r"size \d+", "size", rep)
        if "ThreadSanitizer" in rep or rep.lstrip().startswith("WARNING"):
            # The two accesses make a race, not where its mutexes were
            # first used or which thread created which.
            keep = [sec for sec in re.split(r"\n\s*\n", rep)
                    if re.match(r"^\s*(WARNING|SUMMARY|(Previous )?(atomic )?"
                                r"(write|read)|Write|Read|Atomic)", sec.strip(),
                                re.I)]
            rep = "\n\n".join(keep)
        # The frames alone, not the order in which mutexes are listed.
        return "\n".join(sorted(set(re.findall(r"#\d+ .*", rep)))
                         + re.findall(r"^(?:WARNING|SUMMARY|ERROR).*", rep,
                                      re.M))

    # Indirect leaks under leaks that are not ours: counted, not printed.
    indirect = [r for r in theirs if r[1].startswith("leak, indirect")]
    theirs_shown = [r for r in theirs if not r[1].startswith("leak, indirect")]

    for title, lst in (("IN OUR CODE", ours), ("not in our code", theirs_shown)):
        groups = {}
        for where, kind, rep in lst:
            groups.setdefault((kind, signature(rep)), []).append((where, rep))
        for i, ((kind, _), items) in enumerate(groups.items(), 1):
            print("=" * 72)
            print("%s: report %d/%d [%s], %d time(s); first from %s" % (
                title, i, len(groups), kind, len(items), items[0][0]))
            print("=" * 72)
            text = items[0][1].strip("\n").splitlines()
            if lst is theirs_shown and len(text) > 14:
                # Not ours: the head is enough to recognise it.
                text = text[:14] + ["    ... (whole report in %s)"
                                    % items[0][0].split("\n")[0]]
            print("\n".join(text))
            print()
    if indirect:
        print("(and %d indirect leaks reachable only from the leaks above that"
              " are not ours, not printed; see the files)" % len(indirect))
    print("reports: %d ours, %d not ours" % (len(ours), len(theirs)))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())

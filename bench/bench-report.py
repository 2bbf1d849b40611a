#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Turns the measurements of bench-fleece.sh (a TSV file: workload,
# configuration, round, value) into the results table: medians per
# workload and configuration, the ratios against their targets, and
# every single measurement.  Prints plain text and writes markdown.

import argparse
import statistics
import sys

CONFIGS = [
    ("plain", "plain nbdkit file"),
    ("idle", "stack, no snapshot"),
    ("snap", "stack, snapshot active"),
    ("qsd", "QSD copy-before-write"),
]

WORKLOADS = [
    ("seqwrite", "1 MiB sequential write, whole disk, QD16", "MB/s"),
    ("firsttouch", "4 KiB random write, QD16, first touch of every 64K cluster", "IOPS"),
    ("read", "nbdcopy read to null: (plain/idle: live disk; snap/QSD: untouched snapshot)", "MB/s"),
    ("snapread-copied", "nbdcopy read of the snapshot after every cluster was copied", "MB/s"),
]

# (label, numerator (workload, config), denominator, target)
RATIOS = [
    ("idle stack / plain nbdkit, sequential write", ("seqwrite", "idle"), ("seqwrite", "plain"), 0.95),
    ("idle stack / plain nbdkit, 4K random write", ("firsttouch", "idle"), ("firsttouch", "plain"), 0.95),
    ("idle stack / plain nbdkit, read", ("read", "idle"), ("read", "plain"), 0.95),
    ("snapshot active, first-touch 4K writes, ours / QSD", ("firsttouch", "snap"), ("firsttouch", "qsd"), 1.5),
    ("snapshot active, sequential write, ours / QSD", ("seqwrite", "snap"), ("seqwrite", "qsd"), None),
    ("snapshot read (untouched), ours / QSD", ("read", "snap"), ("read", "qsd"), 1.2),
    ("snapshot read (all copied), ours / QSD", ("snapread-copied", "snap"), ("snapread-copied", "qsd"), 1.2),
    ("snapshot read (untouched), ours / plain nbdkit read", ("read", "snap"), ("read", "plain"), 0.9),
]


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--versions", default="")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--repeat", type=int, required=True)
    ap.add_argument("--qsd-cmd", default="")
    ap.add_argument("--load", default="")
    ap.add_argument("--markdown", required=True)
    a = ap.parse_args()

    data = {}
    with open(a.results) as f:
        for line in f:
            w, c, r, v = line.rstrip("\n").split("\t")
            data.setdefault((w, c), []).append(float(v))
    med = {k: statistics.median(v) for k, v in data.items()}
    configs = [(c, name) for c, name in CONFIGS
               if any(k[1] == c for k in data)]

    def cell(w, c):
        vals = data.get((w, c))
        if not vals:
            return "-"
        m = statistics.median(vals)
        if len(vals) > 1 and m > 0:
            spread = (max(vals) - min(vals)) / m * 100
            return "%s (±%.0f%%)" % (fmt(m), spread / 2)
        return fmt(m)

    head = ["workload", "unit"] + [name for _, name in configs]
    rows = []
    for w, label, unit in WORKLOADS:
        if not any(k[0] == w for k in data):
            continue
        rows.append([label, unit] + [cell(w, c) for c, _ in configs])

    ratio_rows = []
    for label, num, den, target in RATIOS:
        if num not in med or den not in med or med[den] == 0:
            ratio_rows.append([label, "-", "-" if target is None else ">= %.2f" % target, "n/a"])
            continue
        r = med[num] / med[den]
        verdict = "" if target is None else ("met" if r >= target else "MISSED")
        ratio_rows.append([label, "%.3f" % r,
                           "-" if target is None else ">= %.2f" % target,
                           verdict])

    qsd_text = ""
    if a.qsd_cmd:
        args = [x for x in a.qsd_cmd.split("\n") if x]
        lines = [args[0]]
        for x in args[1:]:
            if x.startswith("--"):
                lines.append("  " + x)
            else:
                lines[-1] += " " + x
        qsd_text = " \\\n".join(lines)
    gib = a.size / (1 << 30)
    intro = [
        "Date: %s" % a.date,
        "Machine: %s" % a.machine,
        "Tools: %s" % a.versions,
        "Load average (1/5/15 min) at start -> end: %s" % a.load,
        "Disk: %s raw file (%d bytes), pre-filled, page cache; fleecing target a raw file "
        "on the same file system; cluster 64K; median of %d runs (± half the spread)."
        % ("%g GiB" % gib if gib >= 1 else "%d MiB" % (a.size >> 20), a.size, a.repeat),
    ]

    # Plain text.
    print("\n".join(intro))
    if qsd_text:
        print("QSD:")
        print(qsd_text)
    print()
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(x).ljust(widths[i]) for i, x in enumerate(r)))
    print()
    rhead = ["ratio (medians)", "value", "target", ""]
    widths = [max(len(str(r[i])) for r in [rhead] + ratio_rows) for i in range(4)]
    for r in [rhead] + ratio_rows:
        print("  ".join(str(x).ljust(widths[i]) for i, x in enumerate(r)))

    # Markdown.
    md = ["# Fleecing benchmark", ""]
    md += [line + "  " for line in intro]
    md += ["", "| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * len(configs)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "| ratio (medians) | value | target | |", "|---|---:|---:|---|"]
    md += ["| " + " | ".join(r) + " |" for r in ratio_rows]
    md += ["", "Configurations:", "",
           "* plain nbdkit file: `nbdkit -U SOCK file DISK`",
           "* stack: `nbdkit -U SOCK --filter=snapshot-access --filter=cbw file DISK "
           "control=CTL cbw-target=FLEECE cbw-cluster-size=64K`; with a snapshot, "
           "a fresh `snapshot-begin` before every workload",
           "* fio: `--ioengine=nbd --iodepth=16`, one connection; sequential: "
           "`--rw=write --bs=1M` over the whole disk; first touch: one 4 KiB write in "
           "every 64 KiB cluster in a seeded random order, replayed with `--read_iolog` "
           "(plus `--thinktime=1 --thinktime_blocks=N --thinktime_blocks_type=issue`, "
           "so fio 3.33 reaps the last requests of the log instead of dropping the "
           "connection under them)",
           "* reads: `nbdcopy URI null:` (default connections and requests)"]
    if qsd_text:
        md += ["* QSD (restarted with an empty, sparse target of the disk's size "
               "for every workload; $TMP is the run's directory):", "",
               "```", qsd_text, "```"]
    md += ["", "All measurements:", "",
           "| workload | configuration | values |", "|---|---|---|"]
    for w, _, unit in WORKLOADS:
        for c, name in configs:
            if (w, c) in data:
                md.append("| %s | %s | %s %s |" % (
                    w, name, ", ".join(fmt(v) for v in data[(w, c)]), unit))
    with open(a.markdown, "w") as f:
        f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

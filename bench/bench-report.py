#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Turns the measurements of bench-fleece.sh (a TSV file: workload,
# configuration, round, value) into the results table: medians per
# workload and configuration, the ratios against their targets (issue
# 13), and every single measurement.  Prints plain text, writes
# markdown, and with --chart a gnuplot PNG of every ratio against its
# target (with the date and machine in its title).

import argparse
import os
import shutil
import statistics
import subprocess
import sys

CONFIGS = [
    ("plain", "plain nbdkit file"),
    ("idle", "stack, no snapshot"),
    ("snap", "stack, snapshot active"),
    ("qsd", "QSD copy-before-write"),
]

LAT_CONFIGS = [
    ("nosnap", "stack, no snapshot"),
    ("snapfile", "snapshot, file target"),
    ("slow", "snapshot, 5 ms NBD target"),
    ("slowbuf", "snapshot, 5 ms NBD target, cbw-buffer=256M"),
    ("qsdslow", "QSD copy-before-write, 5 ms NBD target"),
]

WORKLOADS = [
    ("seqwrite", "1 MiB sequential write, whole disk, QD16", "MB/s"),
    ("firsttouch", "4 KiB random write, QD16, first touch of every 64K cluster", "IOPS"),
    ("read", "nbdcopy read to null: (plain/idle: live disk; snap/QSD: untouched snapshot)", "MB/s"),
    ("snapread-copied", "nbdcopy read of the snapshot after every cluster was copied", "MB/s"),
    ("cpu-seqwrite", "server CPU, sequential write", "ms/1000 req"),
    ("cpu-firsttouch", "server CPU, first-touch 4K write", "ms/1000 req"),
    ("cpu-read", "server CPU, nbdcopy read", "ms/GiB"),
    ("cpu-snapread-copied", "server CPU, read of the all-copied snapshot", "ms/GiB"),
]

LAT_WORKLOADS = [
    ("lat-qd1-p50", "4 KiB first-touch write, QD1, p50", "us"),
    ("lat-qd1-p99", "4 KiB first-touch write, QD1, p99", "us"),
    ("lat-qd16-p50", "4 KiB first-touch write, QD16, p50", "us"),
    ("lat-qd16-p99", "4 KiB first-touch write, QD16, p99", "us"),
    ("cpu-lat-qd1", "server CPU, QD1 run", "ms/1000 req"),
    ("cpu-lat-qd16", "server CPU, QD16 run", "ms/1000 req"),
]

# (label, numerator (workload, config), denominator, target, kind):
# kind "min": the ratio must be >= target; "max": <= target.  A
# denominator of None compares the numerator itself with the target.
RATIOS = [
    ("1 MiB seq. write, snapshot: ours / QSD", ("seqwrite", "snap"), ("seqwrite", "qsd"), 1.5, "min"),
    ("1 MiB seq. write, snapshot: ours / plain nbdkit", ("seqwrite", "snap"), ("seqwrite", "plain"), 0.30, "min"),
    ("4K first-touch QD16, snapshot: ours / QSD", ("firsttouch", "snap"), ("firsttouch", "qsd"), 2.0, "min"),
    ("idle stack / plain, seq. write", ("seqwrite", "idle"), ("seqwrite", "plain"), 0.97, "min"),
    ("idle stack / plain, 4K write", ("firsttouch", "idle"), ("firsttouch", "plain"), 0.97, "min"),
    ("idle stack / plain, read", ("read", "idle"), ("read", "plain"), 0.97, "min"),
    ("idle / plain CPU per req., seq. write (plain / idle)", ("cpu-seqwrite", "plain"), ("cpu-seqwrite", "idle"), 0.97, "min"),
    ("idle / plain CPU per req., 4K write (plain / idle)", ("cpu-firsttouch", "plain"), ("cpu-firsttouch", "idle"), 0.97, "min"),
    ("idle / plain CPU per GiB, read (plain / idle)", ("cpu-read", "plain"), ("cpu-read", "idle"), 0.97, "min"),
    ("snapshot read, untouched: ours / QSD", ("read", "snap"), ("read", "qsd"), 1.3, "min"),
    ("snapshot read, all copied: ours / QSD", ("snapread-copied", "snap"), ("snapread-copied", "qsd"), 1.3, "min"),
    ("snapshot read, untouched: ours / plain read", ("read", "snap"), ("read", "plain"), 0.95, "min"),
    ("snapshot read, all copied: ours / plain read", ("snapread-copied", "snap"), ("read", "plain"), 0.95, "min"),
    ("4K p99 QD1, 5 ms target + buffer / no snapshot", ("lat-qd1-p99", "slowbuf"), ("lat-qd1-p99", "nosnap"), 2.0, "max"),
    ("4K p99 QD16, 5 ms target + buffer / no snapshot", ("lat-qd16-p99", "slowbuf"), ("lat-qd16-p99", "nosnap"), 2.0, "max"),
    ("4K p99 QD1, 5 ms target + buffer / QSD same target", ("lat-qd1-p99", "slowbuf"), ("lat-qd1-p99", "qsdslow"), 0.1, "max"),
    ("4K p99 QD16, 5 ms target + buffer / QSD same target", ("lat-qd16-p99", "slowbuf"), ("lat-qd16-p99", "qsdslow"), 0.1, "max"),
    ("snapshot-begin, 16 TiB disk (ms)", ("begin16t", "stack"), None, 50, "max"),
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
    ap.add_argument("--chart", default="")
    ap.add_argument("--lat-writes", type=int, default=0)
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

    lconfigs = [(c, name) for c, name in LAT_CONFIGS
                if any(k[1] == c for k in data)]
    lhead = ["latency", "unit"] + [name for _, name in lconfigs]
    lrows = []
    for w, label, unit in LAT_WORKLOADS:
        if any(k[0] == w for k in data):
            lrows.append([label, unit] + [cell(w, c) for c, _ in lconfigs])

    ratio_rows = []
    chart = []                  # (label, value / target, kind)
    for label, num, den, target, kind in RATIOS:
        want = (">= %g" if kind == "min" else "<= %g") % target
        if num not in med or (den is not None and
                              (den not in med or med[den] == 0)):
            ratio_rows.append([label, "-", want, "n/a"])
            continue
        r = med[num] / med[den] if den is not None else med[num]
        ok = r >= target if kind == "min" else r <= target
        ratio_rows.append([label, "%.3f" % r, want,
                           "met" if ok else "MISSED"])
        chart.append((label, r / target if kind == "min" else target / r
                      if r > 0 else 0))
    extra = []
    if ("begin16t-rss", "stack") in med:
        extra.append("snapshot-begin on a 16 TiB disk: median %.1f ms, "
                     "resident memory +%.0f MiB (need and copied bitmaps: "
                     "1 bit per 64K cluster each = 32 MiB each, plus the "
                     "store's identity-slot map, 32 MiB, allocated but "
                     "untouched until copies)"
                     % (med.get(("begin16t", "stack"), 0),
                        med[("begin16t-rss", "stack")]))

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
    if lrows:
        print()
        widths = [max(len(str(r[i])) for r in [lhead] + lrows) for i in range(len(lhead))]
        for r in [lhead] + lrows:
            print("  ".join(str(x).ljust(widths[i]) for i, x in enumerate(r)))
    print()
    rhead = ["ratio (medians)", "value", "target", ""]
    widths = [max(len(str(r[i])) for r in [rhead] + ratio_rows) for i in range(4)]
    for r in [rhead] + ratio_rows:
        print("  ".join(str(x).ljust(widths[i]) for i, x in enumerate(r)))
    for line in extra:
        print(line)

    # Markdown.
    md = ["# Fleecing benchmark", ""]
    md += [line + "  " for line in intro]
    md += ["", "| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * len(configs)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    if lrows:
        md += ["", "Latency of %d first-touch 4 KiB writes (one per cluster, "
               "completion latency from fio):" % a.lat_writes, "",
               "| " + " | ".join(lhead) + " |",
               "|" + "|".join(["---"] * 2 + ["---:"] * len(lconfigs)) + "|"]
        md += ["| " + " | ".join(r) + " |" for r in lrows]
    md += ["", "| ratio (medians) | value | target | |", "|---|---:|---:|---|"]
    md += ["| " + " | ".join(r) + " |" for r in ratio_rows]
    md += [""] + extra
    if a.chart and chart:
        if write_chart(a.chart, chart, "%s, %s" % (a.date, a.machine)):
            md += ["", "![ratios against their targets](%s)"
                   % os.path.basename(a.chart)]
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
    for w, _, unit in WORKLOADS + LAT_WORKLOADS + [
            ("begin16t", "", "ms"), ("begin16t-rss", "", "MiB")]:
        for c, name in configs + lconfigs + [("stack", "stack")]:
            if (w, c) in data:
                md.append("| %s | %s | %s %s |" % (
                    w, name, ", ".join(fmt(v) for v in data[(w, c)]), unit))
    with open(a.markdown, "w") as f:
        f.write("\n".join(md) + "\n")
    return 0


def write_chart(path, chart, title):
    """A horizontal bar per ratio: how far it is from its target (1 =
    exactly at the target, more is better, for "at least" and "at most"
    targets alike).  Returns False if gnuplot is missing."""
    if shutil.which("gnuplot") is None:
        print("no gnuplot: no chart", file=sys.stderr)
        return False
    dat = path + ".dat"
    with open(dat, "w") as f:
        for i, (label, v) in enumerate(chart):
            f.write('%d "%s" %.4f\n' % (i, label.replace('"', "'"), v))
    script = """
set terminal pngcairo size 1100,%d font ",9"
set output "%s"
set title "nbdkit-fleece bench: measured / target (>= 1 meets it)\\n%s"
set style fill solid 0.6
set yrange [%d:-1]
set xrange [0:*]
set ytics nomirror
set grid x
set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb "red"
set xlabel "ratio / target (for 'at most' targets: target / ratio)"
unset key
plot "%s" using ($3 * 0.5):1:($3 * 0.5):(0.35):yticlabels(2) with boxxyerror lc rgb "steelblue"
""" % (120 + 28 * len(chart), path, title.replace('"', "'"), len(chart),
       dat)
    r = subprocess.run(["gnuplot"], input=script, text=True)
    os.unlink(dat)
    return r.returncode == 0


if __name__ == "__main__":
    sys.exit(main())

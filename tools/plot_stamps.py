#!/usr/bin/env python3
"""Every block of the fused GEMV's timeline lab, read back: which blocks end last and why.

    DDRT_STAMPS_CSV=stamps.csv test_cuda_ops --bench-stamps     # on the GPU (the lab writes the CSV)
    python3 tools/plot_stamps.py stamps.csv [--png stamps.png]  # here: the report, and a drawing

The lab's medians and maxima (test_cuda_ops --bench-stamps) say that some blocks end ~2-3 us after
the median; this says which: per case (shape, k_chunk) the latest base blocks with their SM, start,
dependency wait, x staged, end, x slabs staged and units held, how much of the end's spread the
start, the staging, the slabs and the units explain (correlations over the base blocks), and
whether the late ones share an SM with a compensation block. Times are us from the earliest block start. --png draws one panel per case: a bar per block
(compensation blocks first), grey until the wait passes, orange while x is staged (compensation:
until its selection is read back), blue to the end (matplotlib, the `plots` extra).
"""
import argparse
import csv
import math
import sys
from collections import defaultdict

STAMPS = ("start", "wait", "ready", "gather", "end", "selected", "sel_read")


def _num(v):
    return float(v) if v not in ("", None) else math.nan


def read_stamps(path):
    """{(shape, k_chunk): [block dicts in block order]} from the lab's CSV."""
    cases = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            b = {"block": int(row["block"]), "role": row["role"], "sm": int(row["sm"])}
            b.update({s: _num(row[s]) for s in STAMPS})
            # base blocks: x slabs staged and units held (columns absent in older CSVs: nan)
            b.update({s: _num(row.get(s)) for s in ("slabs", "units")})
            cases[(row["shape"], int(row["k_chunk"]))].append(b)
    for blocks in cases.values():
        blocks.sort(key=lambda b: b["block"])
    return dict(cases)


def _median(v):
    v = sorted(x for x in v if not math.isnan(x))
    return v[len(v) // 2] if v else math.nan


def _corr(a, b):
    """Pearson correlation of two equal-length lists (nan where undefined)."""
    pairs = [(x, y) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 3:
        return math.nan
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def case_report(blocks, late=5):
    """The text report of one case: base medians and maxima, the latest base blocks, correlations."""
    base = [b for b in blocks if b["role"] == "base"]
    comp_sms = {b["sm"] for b in blocks if b["role"] == "comp"}
    lines = []
    if not base:
        return ["  no base blocks"]
    for s in ("start", "wait", "ready", "end"):
        v = [b[s] for b in base]
        lines.append(f"  base {s:<6} median {_median(v):6.2f}  max {max(x for x in v if not math.isnan(x)):6.2f}")
    ends = [b["end"] for b in base]
    lines.append("  end vs start: r = %.2f, end vs staging (ready - wait): r = %.2f, end vs slabs staged: r = %.2f,"
                 " end vs units: r = %.2f" % (
                     _corr([b["start"] for b in base], ends), _corr([b["ready"] - b["wait"] for b in base], ends),
                     _corr([b["slabs"] for b in base], ends), _corr([b["units"] for b in base], ends)))
    lines.append(f"  latest {late} base blocks (block, sm, start, wait, ready, end, slabs, units, shares an SM with"
                 " compensation):")

    def held(v):
        return "-" if math.isnan(v) else str(int(v))

    for b in sorted(base, key=lambda b: -b["end"])[:late]:
        lines.append("    %5d %4d %7.2f %7.2f %7.2f %7.2f %5s %5s  %s" % (
            b["block"], b["sm"], b["start"], b["wait"], b["ready"], b["end"], held(b["slabs"]), held(b["units"]),
            "yes" if b["sm"] in comp_sms else "no"))
    return lines


def report(cases, late=5):
    out = []
    for (shape, k), blocks in sorted(cases.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        n_comp = sum(b["role"] == "comp" for b in blocks)
        out.append(f"{shape} k_chunk {k}: {len(blocks)} blocks ({n_comp} compensation)")
        out.extend(case_report(blocks, late))
    return out


def draw(cases, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = sorted(cases, key=lambda kv: (kv[0], kv[1]))
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 2.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for i, b in enumerate(cases[key]):
            mid = b["sel_read"] if b["role"] == "comp" else b["ready"]
            for t0, t1, color in ((b["start"], b["wait"], "0.7"), (b["wait"], mid, "tab:orange"),
                                  (mid, b["end"], "tab:red" if b["role"] == "comp" else "tab:blue")):
                if not (math.isnan(t0) or math.isnan(t1)):
                    ax.plot([t0, t1], [i, i], color=color, linewidth=0.8)
        ax.set_title(f"{key[0]}  k_chunk {key[1]}", fontsize=8)
        ax.set_ylabel("block", fontsize=7)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel("us from the first block start")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="the CSV that DDRT_STAMPS_CSV made test_cuda_ops --bench-stamps write")
    ap.add_argument("--png", help="also draw every case to this PNG (needs matplotlib)")
    ap.add_argument("--late", type=int, default=5, help="latest base blocks listed per case (default 5)")
    args = ap.parse_args(argv)
    cases = read_stamps(args.csv)
    if not cases:
        sys.exit(f"{args.csv}: no stamped blocks")
    print("\n".join(report(cases, args.late)))
    if args.png:
        try:
            draw(cases, args.png)
        except ImportError:
            sys.exit("--png needs matplotlib (pip install 'decdec_rt[plots]')")
        print(f"drawn: {args.png}")


if __name__ == "__main__":
    main()

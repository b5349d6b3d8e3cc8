#!/usr/bin/env python3
"""One decode step's fused GEMV and attention launches on the GPU's clock: where the step's time goes.

    DDRT_STEP_STAMPS=step.csv python3 -m decdec_rt bench --shape llama3-8b --bits 3 --prefill 16
    python3 tools/step_timeline.py step.csv [--launches 12]

The CUDA backend (env DDRT_STEP_STAMPS) makes the recorded decode step's fused GEMV launches write
every block's %globaltimer stamps (start, dependency wait passed, x staged, end), the decode
attention its blocks' start, wait, split counted in (the "x" columns: for the attention, end minus
"x last" is the merging block's merge) and end, and writes the last replay's to the CSV when the engine
goes away. This reads them back: per launch its kind (q/k/v, attn, o, gate/up, down), how long its
blocks took from the first wait passed to the last end, and the gap before it: from the previous
launch's last block end to this launch's first block past its wait, the launch boundary (with PDL:
the previous grid's completion and memory flush; an unstamped kernel between the two, such as a
separate norm or swiglu, counts in it).
Times are us from the step's first stamp. The lm head GEMV (fp16, kind lm_head) and argmax
stamp too (start, wait, end); the final norm and the step advance do not: the step's length minus
the span printed here is theirs and the launch boundaries'.
"""
import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict

KINDS = (("attn_q", "qkv"), ("attn_output", "o"), ("ffn_gate", "gate_up"), ("ffn_down", "down"), ("attention", "attn"),
         ("'output'", "lm_head"), ("'token_embd'", "lm_head"), ("argmax", "argmax"))


def kind_of(name):
    for key, kind in KINDS:
        if key in name:
            return kind
    return "other"


def _num(v):
    return float(v) if v not in ("", None) else math.nan


def read_launches(path):
    """[launch dicts in launch order]: name, kind, and each stamp's values over its blocks."""
    by = defaultdict(lambda: {"blocks": 0, "start": [], "wait": [], "ready": [], "end": [], "sm_end": []})
    names = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            i = int(row["launch"])
            names[i] = row["name"]
            d = by[i]
            d["blocks"] += 1
            for s in ("start", "wait", "ready", "end"):
                v = _num(row[s])
                if not math.isnan(v):
                    d[s].append(v)
            if row.get("sm") not in ("", None) and row.get("role") != "comp" and not math.isnan(_num(row["end"])):
                d["sm_end"].append((int(row["sm"]), _num(row["end"])))
    out = []
    for i in sorted(by):
        d = by[i]
        out.append({"launch": i, "name": names[i], "kind": kind_of(names[i]), "blocks": d["blocks"],
                    **{s: sorted(d[s]) for s in ("start", "wait", "ready", "end")}, "sm_end": d["sm_end"]})
    return out


def summarize(launches):
    """Per launch: first start, first / median wait, median ready, median / last end, busy (first
    wait to last end) and gap (previous launch's last end to this one's first wait); and per kind
    the sums of busy and gap."""
    rows, prev_end = [], None
    for L in launches:
        med = lambda v: statistics.median(v) if v else math.nan
        first = lambda v: v[0] if v else math.nan
        last = lambda v: v[-1] if v else math.nan
        r = {"launch": L["launch"], "kind": L["kind"], "blocks": L["blocks"], "start": first(L["start"]),
             "wait": first(L["wait"]), "wait_med": med(L["wait"]), "ready_med": med(L["ready"]),
             "ready_last": last(L["ready"]),
             "end_med": med(L["end"]), "end": last(L["end"])}
        r["busy"] = r["end"] - r["wait"]
        r["gap"] = r["wait"] - prev_end if prev_end is not None else math.nan
        prev_end = r["end"]
        rows.append(r)
    kinds = defaultdict(lambda: {"n": 0, "busy": 0.0, "gap": 0.0})
    for r in rows:
        k = kinds[r["kind"]]
        k["n"] += 1
        k["busy"] += r["busy"] if not math.isnan(r["busy"]) else 0.0
        k["gap"] += r["gap"] if not math.isnan(r["gap"]) else 0.0
    span = (rows[-1]["end"] - rows[0]["start"]) if rows else 0.0
    return rows, dict(kinds), span


def tails(launches):
    """Per kind: how the blocks' ends spread, and how much of it is the SM's. For each launch a
    block's lateness is its end minus the launch's median end; per kind: the mean over launches of
    the last end minus the median end (tail) and minus the mean end (what a perfect balance of the
    same work would save, roughly), and the share of the lateness's variance that the SMs' mean
    lateness over all the kind's launches explains (near 1: the same SMs are late every launch, a
    rate the SM is given; near 0: noise). {kind: dict}; the SM share only with more than one SM."""
    out = {}
    by_kind = defaultdict(list)
    for L in launches:
        if len(L["sm_end"]) >= 2:
            by_kind[L["kind"]].append(L)
    for kind, Ls in by_kind.items():
        late, tail, save = [], [], []
        for L in Ls:
            ends = [e for _, e in L["sm_end"]]
            med, mean = statistics.median(ends), statistics.mean(ends)
            tail.append(max(ends) - med)
            save.append(max(ends) - mean)
            late += [(sm, e - med) for sm, e in L["sm_end"]]
        per_sm = defaultdict(list)
        for sm, v in late:
            per_sm[sm].append(v)
        r = {"n": len(Ls), "tail": statistics.mean(tail), "save": statistics.mean(save), "sm_share": math.nan,
             "slow": []}
        if len(per_sm) > 1:
            m = {sm: statistics.mean(v) for sm, v in per_sm.items()}
            mu = statistics.mean(v for _, v in late)
            tot = sum((v - mu) ** 2 for _, v in late)
            expl = sum((m[sm] - mu) ** 2 for sm, _ in late)
            r["sm_share"] = expl / tot if tot > 0 else math.nan
            r["slow"] = sorted(m.items(), key=lambda kv: -kv[1])[:5]
        out[kind] = r
    return out


def comp_phases(path):
    """The fused GEMVs' DecDEC compensation blocks, per kind: each phase's time after the launch's
    first wait passed (median over launches of the compensation blocks' median and last), beside the
    base blocks' median and last end. Phases: wait passed, the last selected chunk's x values of
    thread 0 loaded and bucketed (bucketed; blocks that select), own chunks selected (select), every chunk
    published (ready), the selection read back (taken), gathered and reduced (gather), end (the
    tiles counted in and finished). {kind: {phase: (median, last)}}; empty without such blocks."""
    per = defaultdict(lambda: defaultdict(list))  # launch -> column -> values
    names = {}
    cols = ("wait", "bucketed", "select", "ready", "taken", "gather", "end")
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            i = int(row["launch"])
            names[i] = row["name"]
            w = _num(row["wait"])
            if not math.isnan(w):
                per[i]["first_wait"].append(w)
            if row.get("role") == "comp":
                for c in cols:
                    v = _num(row.get(c))
                    if not math.isnan(v):
                        per[i][c].append(v)
            elif not math.isnan(_num(row["end"])):
                per[i]["base_end"].append(_num(row["end"]))
    by_kind = defaultdict(lambda: defaultdict(list))
    for i, d in per.items():
        if not d["end"] or not d["first_wait"]:
            continue
        t0 = min(d["first_wait"])
        k = by_kind[kind_of(names[i])]
        for c in cols + ("base_end",):
            if d[c]:
                k[c].append((statistics.median(d[c]) - t0, max(d[c]) - t0))
    return {kind: {c: (statistics.median(m for m, _ in v), statistics.median(x for _, x in v)) for c, v in d.items()}
            for kind, d in by_kind.items()}


def report(launches, show=12, comp=None):
    rows, kinds, span = summarize(launches)
    lines = [f"{len(rows)} stamped launches over {span:.1f} us (first start to last end)"]
    lines.append(f"{'launch':>6} {'kind':8} {'blocks':>6} {'start':>8} {'wait':>8} {'wait med':>8} {'x med':>8} "
                 f"{'x last':>8} {'end med':>8} {'end':>8} {'busy':>6} {'gap':>6}")
    pick = rows if show <= 0 or len(rows) <= show else rows[:show // 2] + rows[-(show - show // 2):]
    for i, r in enumerate(pick):
        if show > 0 and len(rows) > show and i == show // 2:
            lines.append(f"{'...':>6}")
        lines.append(f"{r['launch']:>6} {r['kind']:8} {r['blocks']:>6} {r['start']:8.1f} {r['wait']:8.1f} "
                     f"{r['wait_med']:8.1f} {r['ready_med']:8.1f} {r['ready_last']:8.1f} {r['end_med']:8.1f} {r['end']:8.1f} "
                     f"{r['busy']:6.1f} {r['gap']:6.1f}")
    lines.append("per kind (us summed over the step): busy = first wait to last end; gap = before the launch")
    for k, v in sorted(kinds.items()):
        lines.append(f"  {k:8} x{v['n']:<4} busy {v['busy']:8.1f}  gap {v['gap']:8.1f}  "
                     f"per launch {v['busy'] / max(v['n'], 1):6.2f} + {v['gap'] / max(v['n'], 1):6.2f}")
    att = [r for r in rows if r["kind"] == "attn" and not math.isnan(r["ready_last"])]
    if att:  # the attention's two phases: the splits (wait to median counted in) and the merge
        split = statistics.mean(r["ready_med"] - r["wait"] for r in att)
        merge = statistics.mean(r["end"] - r["ready_last"] for r in att)
        lines.append(f"  attn: median split counted in {split:.2f} us after the wait; merge (last end - last "
                     f"counted in) {merge:.2f} us (mean over {len(att)} launches)")
    tl = tails(launches)
    if tl:
        lines.append("block ends (per launch, vs its median end): tail = last - median, balance = last - mean, "
                     "SM share = variance the SMs' mean lateness explains")
        for k, r in sorted(tl.items()):
            slow = ", ".join(f"SM{sm} {v:+.1f}" for sm, v in r["slow"])
            lines.append(f"  {k:8} x{r['n']:<4} tail {r['tail']:7.2f} us  balance {r['save']:7.2f} us  "
                         f"SM share {r['sm_share']:5.2f}" + (f"  latest SMs: {slow}" if slow else ""))
    if comp:
        lines.append("DecDEC compensation blocks (us after the launch's first wait; median over launches of the "
                     "blocks' median / last)")
        phases = ("wait", "bucketed", "select", "ready", "taken", "gather", "end", "base_end")
        lines.append(f"  {'kind':8} " + " ".join(f"{p:>13}" for p in phases))
        for k, d in sorted(comp.items()):
            lines.append(f"  {k:8} " + " ".join(f"{d[p][0]:6.1f}/{d[p][1]:6.1f}" if p in d else f"{'-':>13}"
                                                 for p in phases))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--launches", type=int, default=12, help="launch rows to print (0: all)")
    a = ap.parse_args(argv)
    launches = read_launches(a.csv)
    if not launches:
        sys.exit(f"{a.csv}: no stamped launches")
    print(report(launches, a.launches, comp_phases(a.csv)))


if __name__ == "__main__":
    main()

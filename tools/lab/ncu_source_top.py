"""Reads tools/lab/ncu_source.sh's CSV (ncu --page source --csv): the instructions with
the most warp stall samples, the stall reasons summed over the kernel, and where the shared
memory excess wavefronts are. Usage: python3 tools/lab/ncu_source_top.py sass.csv [--top 40]"""
import argparse
import csv


def num(v):
    try:
        return float(v.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.reader(f))
    head_i = next(i for i, r in enumerate(rows) if r and r[0] in ("Address", "# Address", "Line", "#"))
    head = rows[head_i]
    recs = [dict(zip(head, r)) for r in rows[head_i + 1:] if len(r) == len(head)]
    samp = "Warp Stall Sampling (All Samples)"
    total = sum(num(r.get(samp, 0)) for r in recs) or 1.0
    stalls = [h for h in head if h.startswith("stall_") and "Not Issued" not in h]
    print(f"{len(recs)} rows, {total:.0f} stall samples")
    print("stall reasons:", ", ".join(f"{s[6:]} {100 * sum(num(r[s]) for r in recs) / total:.1f}%"
                                      for s in sorted(stalls, key=lambda s: -sum(num(r[s]) for r in recs))[:10]))
    key = "Source"
    print(f"\ntop {args.top} by stall samples (% of all, top reasons):")
    for r in sorted(recs, key=lambda r: -num(r.get(samp, 0)))[:args.top]:
        top = sorted(stalls, key=lambda s: -num(r[s]))[:3]
        why = " ".join(f"{s[6:]}={num(r[s]):.0f}" for s in top if num(r[s]) > 0)
        print(f"{100 * num(r[samp]) / total:5.1f}% {r.get('Address', '')[-6:]:>6} "
              f"exec={num(r.get('Instructions Executed', 0)):8.0f} {r[key][:70]:70s} {why}")
    ex = "L1 Wavefronts Shared Excessive"
    if ex in head:
        print("\nshared excess wavefronts:")
        for r in sorted(recs, key=lambda r: -num(r[ex]))[:15]:
            if num(r[ex]) > 0:
                print(f"{num(r[ex]):9.0f} of {num(r['L1 Wavefronts Shared']):9.0f} (ideal "
                      f"{num(r['L1 Wavefronts Shared Ideal']):8.0f}) {r[key][:90]}")
    # by execution count: code run once per warp (prologue, epilogue), once per unit, ...
    by_n = {}
    for r in recs:
        n = num(r.get("Instructions Executed", 0))
        if n > 0:
            b = by_n.setdefault(n, [0, 0.0, 0.0])
            b[0] += 1
            b[1] += n
            b[2] += num(r.get(samp, 0))
    dyn = sum(b[1] for b in by_n.values()) or 1.0
    print("\nby times executed (warp instructions per static instruction): static, % of executed, % of stalls")
    for n, (k, d, st) in sorted(by_n.items(), key=lambda kv: -kv[1][1])[:8]:
        print(f"  x{n:<8.0f} {k:6d} {100 * d / dyn:5.1f}% {100 * st / total:5.1f}%")
    # by opcode (SASS)
    ops = {}
    for r in recs:
        op = r[key].split()[0] if r[key].split() else "?"
        if op.startswith("@"):
            op = r[key].split()[1] if len(r[key].split()) > 1 else op
        op = op.split(".")[0]
        o = ops.setdefault(op, [0.0, 0.0])
        o[0] += num(r.get(samp, 0))
        o[1] += num(r.get("Instructions Executed", 0))
    print("\nby opcode: stall samples %, warp instructions executed")
    for op, (s, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"  {op:12s} {100 * s / total:5.1f}% {n:10.0f}")


if __name__ == "__main__":
    main()

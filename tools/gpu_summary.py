#!/usr/bin/env python3
"""The short table at the end of tools/gpu_check.sh: decode and prefill per benchmark run, the
GEMV lab's default-kernel lines and the prefill matmuls, read back from the logs the check wrote.

    python3 tools/gpu_summary.py OUT_DIR   # OUT_DIR holds bench_e2e.log, bench_gemv.log, bench_gemm.log
"""
import re
import sys
from pathlib import Path


def e2e_rows(text):
    """(run, decode tok/s, ms/token, % of peak, prefill tok/s, DecDEC KB) per '== ' block."""
    rows = []
    for block in re.split(r"^== ", text, flags=re.M)[1:]:
        run = block.splitlines()[0].replace("decdec-rt bench ", "").strip()
        dec = re.search(r"decode\s+([\d.]+) tok/s\s+([\d.]+) ms/token", block)
        peak = re.search(r"=\s*([\d.]+)% of", block)
        pre = re.search(r"prefill\s+([\d.]+) tok/s", block)
        dd = re.search(r"DecDEC\s+([\d.]+) KB on the device", block)
        if not dec:
            rows.append((run, "failed", "", "", "", ""))
            continue
        rows.append((run, dec.group(1), dec.group(2), peak.group(1) if peak else "", pre.group(1) if pre else "",
                     dd.group(1) if dd else ""))
    return rows


def peak_gbs(text):
    """The measured HBM read GB/s that the GEMV lab printed (its "% of peak" base)."""
    m = re.search(r"peak HBM read: ([\d.]+) GB/s", text)
    return float(m.group(1)) if m else float("nan")


def gemv_rows(text):
    """(type, shape, graph us, GB/s, % of peak) of the default kernels, and the fused group calls;
    after a '== ... DDRT_LAB_GEMV_COPIES=1' line, the rows marked "one copy (L2)" (L2-resident where they fit)."""
    rows, default, peak, resident = [], False, peak_gbs(text), False
    for line in text.splitlines():
        if line.startswith("== "):
            resident = "DDRT_LAB_GEMV_COPIES=1" in line
            continue
        if "quantized rows/warp: default" in line:
            default = True
            continue
        m = re.match(r"(\S+)\s+(\d+x\d+)\s+[\d.]+\s+([\d.]+)\s+(\d+)\s+([\d.]+)%\s+\d+(.*)$", line)
        if default and m:
            note = m.group(6)
            kind = m.group(1) + (" fused" if "fused" in note else " twin" if "twin" in note else
                                 " lm head" if "lm head" in note else "")
            kind += " 2 rows/warp" if "2 rows" in note or "two rows" in note else ""
            kind += " one copy (L2)" if resident else ""
            rows.append((kind, m.group(2), m.group(3), m.group(4), m.group(5)))
            continue
        g = re.match(r"(uq\d_g\d+) (qkv|gate_up)\s+[\d.]+\s+([\d.]+)\s+(\d+)", line)
        if g:
            rows.append((g.group(1) + " group", g.group(2), g.group(3), g.group(4),
                         f"{100 * int(g.group(4)) / peak:.1f}"))
        elif line.startswith("Groups"):
            default = False
    return rows


def gemm_rows(text):
    """(type, shape, default us, TFLOP/s, other warp count us, TFLOP/s, other int8 kernel kind us,
    TFLOP/s, 3-limb us, TFLOP/s, bf16 twin us, TFLOP/s) of `test_cuda_ops --bench-gemm`; logs from
    before its warp-count column (eighteenth session) or its kernel-kind column (nineteenth) leave
    those columns empty."""
    rows, on = [], False
    for line in text.splitlines():
        if line.startswith("type") and "default us" in line:
            on = True
            continue
        m = re.match(r"(\S+)\s+(\d+x\d+)((?:\s+[\d.]+)+)$", line)
        if not (on and m):
            continue
        v = m.group(3).split()
        if len(v) == 8:  # default, 3 limbs, bf16, simple (each us, TFLOP/s)
            v = v[:2] + ["", ""] + v[2:]
        if len(v) == 10:  # default, other warps, 3 limbs, bf16, simple
            v = v[:4] + ["", ""] + v[4:]
        if len(v) == 12:
            rows.append((m.group(1), m.group(2), *v[:10]))
    return rows


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_logs")
    e2e, gemv, gemm = out / "bench_e2e.log", out / "bench_gemv.log", out / "bench_gemm.log"
    if e2e.exists():
        print(table(["run", "decode tok/s", "ms/token", "% of peak", "prefill tok/s", "DecDEC KB"],
                    e2e_rows(e2e.read_text())))
    if gemv.exists():
        print()
        text = gemv.read_text()
        print(table(["GEMV", "shape", "us (graph)", "GB/s", f"% of {peak_gbs(text):.0f}"], gemv_rows(text)))
    if gemm.exists():
        print()
        print(table(["matmul T=512", "shape", "us", "TFLOP/s", "other warps us", "TFLOP/s", "other kind us",
                     "TFLOP/s", "3 limbs us", "TFLOP/s", "bf16 twin us", "TFLOP/s"],
                    gemm_rows(gemm.read_text())))


if __name__ == "__main__":
    main()

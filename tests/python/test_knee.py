"""tools/decdec_knee.py end to end on the CPU (tiny shape), and the bandwidth probe's no-CUDA error."""
import importlib.util
import json
import math
import pathlib
import statistics
import subprocess
import sys

import pytest

import decdec_rt
from decdec_rt import _core

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "decdec_knee.py"
K_CHUNKS = [0, 4, 16]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_tool():
    spec = importlib.util.spec_from_file_location("decdec_knee", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def knee_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("knee")
    cmd = [sys.executable, str(TOOL), "--device", "cpu", "--shape", "tiny", "--bits", "3", "4",
           "--k-chunks", *map(str, K_CHUNKS), "--context", "64", "--n-decode", "8", "--reps", "2",
           "--calib-tokens", "16", "--recall-tokens", "4", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "knee.json").read_text())


def test_json_is_consistent(knee_run):
    _, res = knee_run
    tool = load_tool()
    assert res["k_chunks"] == K_CHUNKS and res["shape"] == "tiny" and res["device"] == "cpu"
    assert [s["bits"] for s in res["studies"]] == [3, 4]
    for s in res["studies"]:
        assert s["backend"].startswith("cpu")
        assert math.isfinite(s["base_ms_per_token"]) and s["base_ms_per_token"] > 0
        assert [r["k_chunk"] for r in s["rows"]] == K_CHUNKS
        for r in s["rows"]:
            assert len(r["slowdown_runs"]) == res["reps"] == len(r["ms_runs"])
            assert all(math.isfinite(v) for v in r["slowdown_runs"] + r["ms_runs"])
            assert r["slowdown"] == pytest.approx(statistics.median(r["slowdown_runs"]))
            assert r["ms_per_token"] == pytest.approx(statistics.median(r["ms_runs"]))
            assert r["ms_per_token"] > 0
            if r["k_chunk"] == 0:
                assert r["mode"] == "off" and r["pcie_bytes_per_token"] == 0 and r["recall"] is None
            else:
                assert r["mode"] == "approx" and r["pcie_bytes_per_token"] > 0
                assert set(r["recall"]) == {"qkv", "o", "gate_up", "down", "all"}
                assert all(0.0 <= v <= 1.0 for v in r["recall"].values())
        # more channels fetched at a larger k
        fetched = [r["pcie_bytes_per_token"] for r in s["rows"]]
        assert fetched == sorted(fetched) and fetched[-1] > fetched[1]
        assert s["measured_knee"] == tool.measured_knee(s["rows"], res["target"])
        bw = res["bandwidth"]
        if bw is None:
            assert s["predicted_knee"] is None
        else:
            assert s["predicted_knee"] == pytest.approx(
                1024 * s["bits"] / 4 * bw["zero_copy_gbs"] / bw["hbm_read_gbs"])
    # on the CPU the probe is skipped, and the json says so
    assert res["bandwidth"] is None and "skipped" in res["bandwidth_skipped"]


def test_png_and_markdown(knee_run):
    out, res = knee_run
    assert (out / "knee.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "knee.md").read_text()
    assert "tools/decdec_knee.py" in md and res["gpu"] in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2:].split(" ")[0].isdigit()]
    assert [int(r.split("|")[1]) for r in rows[:len(K_CHUNKS)]] == K_CHUNKS


def test_knee_formula_and_measured_knee():
    tool = load_tool()
    # DESIGN.md §5's H100 numbers: 51 GB/s zero-copy, 3078 GB/s HBM -> about 12.7 at 3 bits
    assert tool.predicted_knee(3, 51.0, 3078.0) == pytest.approx(1024 * 0.75 * 51 / 3078)
    assert tool.predicted_knee(4, 51.0, 3078.0) == pytest.approx(4 / 3 * tool.predicted_knee(3, 51.0, 3078.0))
    rows = [{"k_chunk": k, "slowdown": s} for k, s in [(0, 0.04), (2, 0.01), (4, 0.02), (8, 0.03), (16, 0.01)]]
    assert tool.measured_knee(rows, 0.025) == 4   # stops at the first k over the target; k 0 is noise
    assert tool.measured_knee(rows[:1] + [{"k_chunk": 2, "slowdown": 0.5}], 0.025) == 0


@pytest.mark.skipif(_core.cuda_available(), reason="a GPU is present: the probe runs instead of raising")
def test_measure_bandwidth_without_cuda_raises():
    with pytest.raises(decdec_rt.CudaError, match="bandwidth"):
        _core.measure_bandwidth(0)
    with pytest.raises(decdec_rt.CudaError):
        _core.measure_bandwidth(device=1)

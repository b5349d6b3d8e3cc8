"""tools/gpu_summary.py (the table at the end of tools/gpu_check.sh) on logs shaped like the check's."""
import importlib.util
import pathlib
import subprocess
import sys

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "gpu_summary.py"

E2E = """== decdec-rt bench --shape llama3-8b --bits 3
shape llama3-8b  3-bit g128  on cuda:0 (GPU)  DecDEC off  graphs on
  decode       284.7 tok/s  3.512 ms/token at context 512
              1149.7 GB/s = 38.3% of 3000 GB/s  (roofline 743 tok/s; 4.038 GB/token)
  prefill     3342.3 tok/s  (512 tokens)
  memory        4.86 GiB on the device; DecDEC fetches 0.00 MB/token over PCIe; built in 12.9 s
  DecDEC         0.0 KB on the device (0.0000 % of the device bytes)
== decdec-rt bench --shape llama3-8b --bits 3 --decdec approx --k-chunk 8
Traceback (most recent call last):
RuntimeError: something went wrong
"""

GEMV = """cuda:0 (GPU)
peak HBM read: 3000 GB/s (measured by the bandwidth probe)
GEMV T=1: median of 200 event-timed single launches, and per launch in a graph of 32
(copies rotate to defeat L2; bytes = the file's tensor bytes); quantized rows/warp: 1
uq3_g128    4096x14336        30.00      20.00      1000     33.3%       9
cuda:0 (GPU)
(copies rotate to defeat L2; bytes = the file's tensor bytes); quantized rows/warp: default
type       d_out x d_in   single us   graph us      GB/s     %peak  copies
uq3_g128    4096x14336        26.27      16.34      1460     48.7%       9
uq4_g128    4096x14336        37.66      19.02      1640     54.7%       7  (fused tensor-core)
f16        128256x4096       300.00     290.00      3622     80.5%       2  (lm head, 2 rows per warp)

Groups: separate launches vs one fused launch (graph-timed us per group call); DecDEC
type     group     separate us   fused us       GB/s | approx k_chunk: call us (comp %, n_tb)
uq3_g128 gate_up         31.38      25.56       1866 | k2 27.65 (+8.2%, 32)
== DDRT_W_EVICT=0 DDRT_LAB_GEMV_COPIES=1 test_cuda_ops --bench-gemv
(copies rotate to defeat L2; bytes = the file's tensor bytes); quantized rows/warp: default
uq3_g128    4096x14336        12.00       9.00      2654     88.5%       1
"""

GEMM = """cuda:0 (GPU)
matmul T=512: median event-timed us (20 launches; 3 for the simple twin); default = int8 kernel for
uniform types (gemm_i8.cu, two limbs of x), 3 limbs = its DDRT_I8_LIMBS=3 twin, bf16 = the bf16 hi + lo
tensor-core kernel (gemm_tc.cu), warps 8/16 = the int8 kernel at the other warp count (DDRT_I8_WARPS: 16, the default, or 8),
own/tile = the int8 kernel of the other kind than the default (DDRT_I8_OWN: 1 the warp-owned gemm_i8w.cu, 0 the block tile)
type       d_out x d_in   default us  TFLOP/s warps 8/16  TFLOP/s   own/tile  TFLOP/s 3 limbs us  TFLOP/s    bf16 us  TFLOP/s    simple us  TFLOP/s
uq3_g128     4096x4096         141.0    121.9      150.7    114.0       90.5    189.9      183.2     93.8      588.4     29.2       5391.3     3.19
f16        128256x4096        3979.6    135.2     3979.6    135.2     3979.6    135.2     3979.6    135.2     3979.6    135.2      47271.7    11.38
"""

# the table before its kernel-kind column (eighteenth session)
GEMM_18 = """type       d_out x d_in   default us  TFLOP/s warps 8/16  TFLOP/s 3 limbs us  TFLOP/s    bf16 us  TFLOP/s    simple us  TFLOP/s
uq3_g128     4096x4096         141.0    121.9      150.7    114.0      183.2     93.8      588.4     29.2       5391.3     3.19
"""

# the table before its warp-count column (seventeenth session and earlier)
GEMM_OLD = """type       d_out x d_in   default us  TFLOP/s 3 limbs us  TFLOP/s    bf16 us  TFLOP/s    simple us  TFLOP/s
uq3_g128     4096x4096         150.1    114.4      185.3     92.7      276.3     62.2       3792.0     4.53
"""


def load_tool():
    spec = importlib.util.spec_from_file_location("gpu_summary", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_e2e_rows_read_each_run_and_mark_a_failed_one():
    rows = load_tool().e2e_rows(E2E)
    assert rows == [("--shape llama3-8b --bits 3", "284.7", "3.512", "38.3", "3342.3", "0.0"),
                    ("--shape llama3-8b --bits 3 --decdec approx --k-chunk 8", "failed", "", "", "", "")]


def test_gemv_rows_take_the_default_kernels_and_the_groups_only():
    rows = load_tool().gemv_rows(GEMV)
    assert rows == [("uq3_g128", "4096x14336", "16.34", "1460", "48.7"),
                    ("uq4_g128 fused", "4096x14336", "19.02", "1640", "54.7"),
                    ("f16 lm head 2 rows/warp", "128256x4096", "290.00", "3622", "80.5"),
                    ("uq3_g128 group", "gate_up", "25.56", "1866", "62.2"),
                    ("uq3_g128 one copy (L2)", "4096x14336", "9.00", "2654", "88.5")]


def test_gemm_rows_take_the_table_lines_only():
    rows = load_tool().gemm_rows(GEMM)
    assert rows == [("uq3_g128", "4096x4096", "141.0", "121.9", "150.7", "114.0", "90.5", "189.9", "183.2", "93.8",
                     "588.4", "29.2"),
                    ("f16", "128256x4096", "3979.6", "135.2", "3979.6", "135.2", "3979.6", "135.2", "3979.6", "135.2",
                     "3979.6", "135.2")]
    assert load_tool().gemm_rows(GEMM_18) == [("uq3_g128", "4096x4096", "141.0", "121.9", "150.7", "114.0", "", "",
                                               "183.2", "93.8", "588.4", "29.2")]
    assert load_tool().gemm_rows(GEMM_OLD) == [("uq3_g128", "4096x4096", "150.1", "114.4", "", "", "", "", "185.3",
                                                "92.7", "276.3", "62.2")]


def test_command_prints_every_table(tmp_path):
    (tmp_path / "bench_e2e.log").write_text(E2E)
    (tmp_path / "bench_gemv.log").write_text(GEMV)
    (tmp_path / "bench_gemm.log").write_text(GEMM)
    out = subprocess.run([sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "| --shape llama3-8b --bits 3 | 284.7 | 3.512 | 38.3 | 3342.3 | 0.0 |" in out
    assert "| uq3_g128 group | gate_up | 25.56 | 1866 | 62.2 |" in out
    assert "| GEMV | shape | us (graph) | GB/s | % of 3000 |" in out  # the measured peak
    assert "| uq3_g128 | 4096x4096 | 141.0 | 121.9 | 150.7 | 114.0 | 90.5 | 189.9 | 183.2 | 93.8 | 588.4 | 29.2 |" in out

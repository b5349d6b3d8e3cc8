"""tools/lab/step_table.py (the per-kernel table of tools/lab/step_kernels.sh) on an ncu --csv --page raw log."""
import pathlib
import subprocess
import sys

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "lab" / "step_table.py"

CSV = '''==PROF== Connected to process 1 (python3)
"ID","Process ID","Kernel Name","gpu__time_duration.sum"
"","","","ns"
"0","1","void ddrt::gpu::gemm_tc_kernel<21>(ddrt::gpu::DevLinear, float *, ddrt::gpu::XPrep, int)","90,000"
"1","1","void ddrt::gpu::(anonymous namespace)::argmax_kernel(const float *, int, int *, float *, int *, unsigned int *)","7,000"
"2","1","void ddrt::gpu::gemv_tc_kernel<3, 128>(ddrt::gpu::TcArgs)","14,432"
"3","1","void ddrt::gpu::(anonymous namespace)::attn_kernel<4, 4>(float *, const float *)","12,860"
"4","1","void ddrt::gpu::(anonymous namespace)::argmax_kernel(const float *, int, int *, float *, int *, unsigned int *)","7,168"
'''


def run(tmp_path, text):
    p = tmp_path / "ncu.csv"
    p.write_text(text)
    return subprocess.run([sys.executable, str(TOOL), str(p), "shape"], capture_output=True, text=True)


def test_last_step_in_microseconds(tmp_path):
    r = run(tmp_path, CSV)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "== shape: last decode step, 3 kernels, 34.5 us (ncu, one kernel at a time)"
    assert [l.split() for l in lines[1:]] == [["14.43", "us", "gemv_tc_kernel"], ["12.86", "us", "attn_kernel"],
                                             ["7.17", "us", "argmax_kernel"]]


def test_errors_name_the_problem(tmp_path):
    r = run(tmp_path, CSV.replace('"ns"', '"furlong"'))
    assert r.returncode != 0 and "unknown time unit 'furlong'" in r.stderr
    one_step = "\n".join(l for l in CSV.splitlines() if not l.startswith('"4"')) + "\n"
    r = run(tmp_path, one_step)
    assert r.returncode != 0 and "fewer than 2 argmax launches" in r.stderr

"""The decdec-rt command line: generate, ppl, inspect, and error reporting."""
import subprocess
import sys

import pytest

from decdec_rt.cli import main


def test_generate_prints_completion(tiny3, capsys):
    assert main(["generate", "-m", tiny3, "-p", "Hello", "-n", "8", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Hello") and len(out.out) > len("Hello\n")
    assert "DecDEC off" in out.err


def test_generate_with_decdec_flags(tiny3, capsys):
    rc = main(["generate", "-m", tiny3, "-p", "Hello", "-n", "4", "--decdec", "approx",
               "--k-chunk", "qkv=4,o=4,gate_up=8,down=8", "--temp", "0.7", "--top-p", "0.9", "--seed", "3"])
    assert rc == 0
    assert "DecDEC approx" in capsys.readouterr().err


def test_kv_cache_flag(tiny3, tmp_path, capsys):
    assert main(["generate", "-m", tiny3, "-p", "Hello", "-n", "4", "--seed", "1", "--kv-cache", "f32"]) == 0
    assert "f32 KV cache" in capsys.readouterr().err
    assert main(["generate", "-m", tiny3, "-p", "Hello", "-n", "4", "--seed", "1"]) == 0
    assert "f16 KV cache" in capsys.readouterr().err
    text = tmp_path / "eval.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 10)
    assert main(["ppl", "-m", tiny3, "-f", str(text), "--context", "32", "--kv-cache", "f32"]) == 0
    assert "f32 KV cache" in capsys.readouterr().out
    assert main(["bench", "--shape", "tiny", "--device", "cpu", "--context", "8", "-n", "4", "--prefill", "8",
                 "--reps", "1", "--kv-cache", "f32"]) == 0
    assert "KV cache f32" in capsys.readouterr().out
    for cmd in (["generate", "-m", tiny3], ["ppl", "-m", tiny3, "-f", "x"], ["bench"], ["tune", tiny3],
                ["demo"]):
        with pytest.raises(SystemExit):
            main(cmd + ["--kv-cache", "bf16"])
        err = capsys.readouterr().err
        assert "--kv-cache" in err and "invalid choice" in err and "bf16" in err


def test_ppl_and_inspect(tiny3, tmp_path, capsys):
    text = tmp_path / "eval.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    assert main(["ppl", "-m", tiny3, "-f", str(text), "--context", "32"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["inspect", "-m", tiny3, "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "model.n_layers" in out and "blk.0.attn_q.weight" in out and "blk.0.attn_q.residual" in out


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["generate", "-m", str(tmp_path / "missing.ddrt"), "-p", "x"]) == 1
    assert "error" in capsys.readouterr().err


def test_python_dash_m_entry_point(tiny3):
    r = subprocess.run([sys.executable, "-m", "decdec_rt", "inspect", "-m", tiny3],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "general.architecture" in r.stdout

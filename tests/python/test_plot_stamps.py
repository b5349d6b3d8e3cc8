"""tools/plot_stamps.py (every block of the fused GEMV's timeline lab) on a CSV shaped like the lab's."""
import importlib.util
import pathlib

import pytest

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "plot_stamps.py"

HEADER = "shape,k_chunk,block,role,sm,start,wait,ready,gather,end,selected,sel_read,slabs,units\n"


def load_tool():
    spec = importlib.util.spec_from_file_location("plot_stamps", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_csv(path):
    """Case 4096x14336 k 0: 6 base blocks; block 4 starts late and ends last, block 2 stages long.
    Base blocks 2 and 4 stage two x slabs (their units span two columns).
    Case 4096x14336 k 8: 2 compensation blocks (SMs 0 and 1) and 3 base blocks (SMs 2, 1, 3); the
    latest, block 3, shares SM 1 with a compensation block."""
    rows = [
        "4096x14336,0,0,base,0,0.0,2.0,5.0,,9.0,,,1,13",
        "4096x14336,0,1,base,1,0.1,2.1,5.1,,9.1,,,1,14",
        "4096x14336,0,2,base,2,0.2,2.2,7.2,,10.5,,,2,14",
        "4096x14336,0,3,base,3,0.1,2.0,5.0,,9.2,,,1,13",
        "4096x14336,0,4,base,4,1.5,3.6,6.6,,12.0,,,2,13",
        "4096x14336,0,5,base,5,0.3,2.3,5.2,,9.3,,,1,14",
        "4096x14336,8,0,comp,0,0.0,1.5,8.0,18.0,20.0,6.5,9.0,,",
        "4096x14336,8,1,comp,1,0.1,1.6,8.1,18.2,20.1,1.7,9.1,,",
        "4096x14336,8,2,base,2,0.2,2.4,5.3,,9.6,,,1,13",
        "4096x14336,8,3,base,1,0.3,2.5,5.5,,11.9,,,2,14",
        "4096x14336,8,4,base,3,0.2,2.4,5.2,,9.5,,,1,13",
    ]
    path.write_text(HEADER + "\n".join(rows) + "\n")


def test_reads_every_block_with_blank_stamps_as_nan(tmp_path):
    mod = load_tool()
    p = tmp_path / "s.csv"
    write_csv(p)
    cases = mod.read_stamps(p)
    assert sorted(cases) == [("4096x14336", 0), ("4096x14336", 8)]
    assert [b["block"] for b in cases[("4096x14336", 0)]] == [0, 1, 2, 3, 4, 5]
    comp = cases[("4096x14336", 8)][0]
    assert comp["role"] == "comp" and comp["selected"] == 6.5 and comp["gather"] == 18.0
    assert cases[("4096x14336", 0)][0]["gather"] != cases[("4096x14336", 0)][0]["gather"]  # nan


def test_report_names_the_late_blocks_and_the_shared_sms(tmp_path):
    mod = load_tool()
    p = tmp_path / "s.csv"
    write_csv(p)
    out = mod.report(mod.read_stamps(p), late=2)
    text = "\n".join(out)
    assert "4096x14336 k_chunk 0: 6 blocks (0 compensation)" in text
    assert "4096x14336 k_chunk 8: 5 blocks (2 compensation)" in text
    k0 = out[out.index("4096x14336 k_chunk 0: 6 blocks (0 compensation)") + 1:]
    assert k0[3].split() == ["base", "end", "median", "9.30", "max", "12.00"]
    late = k0[k0.index(next(l for l in k0 if l.strip().startswith("latest"))) + 1:][:2]
    assert [l.split()[0] for l in late] == ["4", "2"]  # the latest first: block 4, then block 2
    assert late[0].split()[-1] == "no"
    assert late[0].split()[6:8] == ["2", "13"] and late[1].split()[6:8] == ["2", "14"]  # slabs, units
    slabs_r = next(l for l in k0 if "end vs start" in l).split("end vs slabs staged: r =")[1].split(",")[0]
    assert float(slabs_r) > 0.5  # the two-slab blocks end last
    k8 = out[out.index("4096x14336 k_chunk 8: 5 blocks (2 compensation)") + 1:]
    first_late = k8[k8.index(next(l for l in k8 if l.strip().startswith("latest"))) + 1]
    assert first_late.split()[0] == "3" and first_late.split()[-1] == "yes"
    # correlations: the late-starting block ends last, so end follows start
    corr = next(l for l in k0 if "end vs start" in l)
    assert float(corr.split("r =")[1].split(",")[0]) > 0.5


def test_cli_prints_and_draws(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    mod = load_tool()
    p = tmp_path / "s.csv"
    write_csv(p)
    png = tmp_path / "s.png"
    mod.main([str(p), "--png", str(png)])
    assert png.exists() and png.stat().st_size > 1000
    assert "latest 5 base blocks" in capsys.readouterr().out


def test_an_empty_csv_is_a_clear_error(tmp_path):
    mod = load_tool()
    p = tmp_path / "e.csv"
    p.write_text(HEADER)
    with pytest.raises(SystemExit, match="no stamped blocks"):
        mod.main([str(p)])

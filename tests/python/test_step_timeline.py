"""tools/step_timeline.py (the decode step's fused GEMV launches, DDRT_STEP_STAMPS) on a CSV shaped
like the backend's: each launch's busy span and the gap before it, per kind."""
import importlib.util
import math
import pathlib

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "step_timeline.py"


def load():
    spec = importlib.util.spec_from_file_location("step_timeline", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(tmp_path, rows):
    p = tmp_path / "s.csv"
    lines = ["launch,name,block,role,sm,start,wait,ready,gather,end"]
    for r in rows:
        lines.append(",".join(str(v) for v in r))
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_busy_and_gaps(tmp_path):
    mod = load()
    q = "\"matmul group 'blk.0.attn_q', 'blk.0.attn_k', 'blk.0.attn_v'\""
    o = "\"matmul 'blk.0.attn_output'\""
    g = "\"matmul group 'blk.0.ffn_gate', 'blk.0.ffn_up'\""
    d = "\"matmul 'blk.0.ffn_down'\""
    path = write(tmp_path, [
        (0, q, 0, "base", 3, 0.0, 1.0, 2.0, "", 9.0), (0, q, 1, "base", 4, 0.5, 1.5, 3.0, "", 10.0),
        (1, o, 0, "base", 3, 11.0, 20.0, 21.0, "", 25.0),  # gap 10: the attention sits there
        (2, g, 0, "base", 3, 24.0, 26.0, 27.0, "", 40.0), (2, g, 1, "comp", 5, 24.5, 26.5, "", 30.0, 41.0),
        (3, d, 0, "base", 3, 40.0, 43.0, 44.0, "", 50.0),
    ])
    launches = mod.read_launches(path)
    assert [L["kind"] for L in launches] == ["qkv", "o", "gate_up", "down"]
    assert launches[0]["blocks"] == 2 and launches[2]["ready"] == [27.0]  # a blank stamp is left out
    rows, kinds, span = mod.summarize(launches)
    assert math.isnan(rows[0]["gap"]) and rows[0]["busy"] == 9.0  # first wait 1.0 to last end 10.0
    assert rows[1]["gap"] == 10.0 and rows[1]["busy"] == 5.0
    assert rows[2]["gap"] == 1.0 and rows[2]["busy"] == 15.0
    assert rows[3]["gap"] == 2.0 and rows[3]["busy"] == 7.0
    assert span == 50.0
    assert kinds["o"] == {"n": 1, "busy": 5.0, "gap": 10.0}
    text = mod.report(launches)
    assert "4 stamped launches over 50.0 us" in text and "o        x1" in text


def test_unknown_names_are_other(tmp_path):
    mod = load()
    path = write(tmp_path, [(0, "\"matmul 'lm_head'\"", 0, "base", 0, 0.0, 1.0, 2.0, "", 3.0)])
    assert mod.read_launches(path)[0]["kind"] == "other"


def test_tail_kinds(tmp_path):
    """The step's tail after the last layer: the lm head (the output matrix, or the tied embedding)
    and argmax have kinds of their own; o's name (attn_output) stays o."""
    mod = load()
    rows = [(0, "\"matmul 'output'\"", 0, "base", 0, 0.0, 1.0, "", "", 3.0),
            (1, "\"matmul 'token_embd'\"", 0, "base", 0, 0.0, 1.0, "", "", 3.0),
            (2, "\"argmax\"", 0, "base", 0, 3.0, 4.0, "", "", 5.0),
            (3, "\"matmul 'blk.0.attn_output'\"", 0, "base", 0, 0.0, 1.0, 2.0, "", 3.0)]
    path = write(tmp_path, rows)
    assert [L["kind"] for L in mod.read_launches(path)] == ["lm_head", "lm_head", "argmax", "o"]


def test_block_end_tails(tmp_path):
    """Block ends per launch against the launch's median end: the tail, the balance bound and how
    much of the lateness the SM explains (here all of it: SM 2 ends 4 us late in both launches;
    compensation blocks are left out)."""
    mod = load()
    d = "\"matmul 'blk.0.ffn_down'\""
    rows = []
    for launch, t0 in ((0, 0.0), (1, 100.0)):
        for b, (sm, end) in enumerate(((0, 10.0), (1, 10.0), (2, 14.0))):
            rows.append((launch, d, b, "base", sm, t0, t0 + 1.0, "", "", t0 + end))
        rows.append((launch, d, 3, "comp", 3, t0, t0 + 1.0, "", 5.0, t0 + 30.0))
    tl = mod.tails(mod.read_launches(write(tmp_path, rows)))
    r = tl["down"]
    assert r["n"] == 2 and r["tail"] == 4.0  # last 14 - median 10
    assert abs(r["save"] - (14.0 - 34.0 / 3)) < 1e-9
    assert abs(r["sm_share"] - 1.0) < 1e-9 and r["slow"][0] == (2, 4.0)
    assert "SM share  1.00" in mod.report(mod.read_launches(write(tmp_path, rows)))
    # the lateness moves between SMs from launch to launch: the SMs explain none of it
    rows = [(0, d, 0, "base", 0, 0.0, 1.0, "", "", 14.0), (0, d, 1, "base", 1, 0.0, 1.0, "", "", 10.0),
            (1, d, 0, "base", 0, 0.0, 1.0, "", "", 10.0), (1, d, 1, "base", 1, 0.0, 1.0, "", "", 14.0)]
    assert mod.tails(mod.read_launches(write(tmp_path, rows)))["down"]["sm_share"] == 0.0


def test_comp_phases(tmp_path):
    """The compensation blocks' phases per kind, after the launch's first wait (any block's), as the
    median over launches of the blocks' median and last, beside the base blocks' ends; a CSV
    without the select / taken columns (older backends) still reads, and a kind without
    compensation blocks is absent."""
    mod = load()
    d = "\"matmul 'blk.0.ffn_down'\""
    o = "\"matmul 'blk.0.attn_output'\""
    p = tmp_path / "c.csv"
    lines = ["launch,name,block,role,sm,start,wait,ready,gather,end,select,taken,bucketed"]
    for launch, t0 in ((0, 0.0), (1, 100.0), (2, 200.0)):
        extra = 1.0 if launch == 2 else 0.0  # the third launch's comp blocks are 1 us later
        lines.append(f"{launch},{d},0,base,0,{t0},{t0 + 1},{t0 + 3},,{t0 + 11}")
        lines.append(f"{launch},{d},1,base,1,{t0},{t0 + 2},{t0 + 3},,{t0 + 13}")
        for b, late in ((2, 0.0), (3, 2.0)):
            w = t0 + 1.5 + extra
            lines.append(f"{launch},{d},{b},comp,{b},{t0},{w},{w + 4 + late},{w + 7 + late},{w + 9 + late},"
                         f"{w + 3 + late},{w + 5 + late}," + ("" if b == 2 else f"{w + 1}"))
    lines.append(f"3,{o},0,base,0,300,301,302,,305,,")
    p.write_text("\n".join(lines) + "\n")
    c = mod.comp_phases(str(p))
    assert set(c) == {"down"}
    r = c["down"]
    # launches 0 and 1: comp waits at +0.5, blocks' median select +0.5+3+1 = 4.5, last 5.5;
    # launch 2 is 1 us later; the median over the three launches is the first two's
    assert r["wait"] == (0.5, 0.5) and r["select"] == (4.5, 5.5) and r["ready"] == (5.5, 6.5)
    assert r["taken"] == (6.5, 7.5) and r["gather"] == (8.5, 9.5) and r["end"] == (10.5, 11.5)
    assert r["bucketed"] == (1.5, 1.5)  # one block stamped it (a block that selects), 1 us after its wait
    assert r["base_end"] == (11.0, 12.0)  # base ends 11 and 13 after the first wait at 1: median 11, last 12
    text = mod.report(mod.read_launches(str(p)), comp=c)
    assert "DecDEC compensation blocks" in text and "  down  " in text
    assert "DecDEC" not in mod.report(mod.read_launches(str(p)))

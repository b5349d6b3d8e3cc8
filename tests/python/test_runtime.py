"""The Runtime on the CPU backend: logits against the independent numpy forward, DecDEC modes,
prefill == decode, generation, perplexity, and clear errors on bad input."""
import math
import os

import numpy as np
import pytest

import decdec_rt
from decdec_rt.reference import ReferenceModel

RNG = np.random.default_rng(1234)


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def random_ids(rt, n, rng=RNG):
    return rng.integers(0, rt.n_vocab, size=n).tolist()


@pytest.mark.parametrize("kv_cache", ["f16", "f32"])
@pytest.mark.parametrize("fixture", ["tiny3", "tiny4_spm", "tiny16", "tiny3_lut"])
def test_logits_match_numpy_reference(fixture, kv_cache, request):
    path = request.getfixturevalue(fixture)
    rt = decdec_rt.Runtime(path, kv_cache=kv_cache)
    ids = random_ids(rt, 40)
    got = rt.forward(ids)
    assert got.shape == (40, rt.n_vocab) and got.dtype == np.float32
    ref = ReferenceModel(path).forward(ids, kv_cache=kv_cache)
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("mode", ["exact", "approx", "static", "random"])
@pytest.mark.parametrize("k_chunk", [8, 64, {"qkv": 16, "o": 0, "gate_up": 1024, "down": 32}])
def test_decdec_modes_match_reference(tiny3, mode, k_chunk):
    # f32 KV: the selections are discrete, and float16 rounding flips (one ulp where the engine's
    # float32 and the reference's float64 keys straddle a rounding boundary) can move an approx
    # selection across its threshold
    rt = decdec_rt.Runtime(tiny3, kv_cache="f32")
    rt.set_decdec(mode, k_chunk, seed=7)
    ids = random_ids(rt, 24)
    got = rt.forward(ids)
    ref = ReferenceModel(tiny3).forward(ids, decdec={"mode": mode, "k_chunk": k_chunk, "seed": 7}, kv_cache="f32")
    assert rel_err(got, ref) <= 1e-4
    off = ReferenceModel(tiny3).forward(ids, kv_cache="f32")
    assert rel_err(got, off) > 1e-4, "compensation changed nothing"


def test_decdec_full_k_recovers_fp_model(tiny3, tiny16):
    """exact at k = d_in adds the whole residual: the 3-bit model becomes the FP model up to the
    residual's own 4-bit quantization, far closer than the 3-bit model alone."""
    ids = random_ids(decdec_rt.Runtime(tiny16), 32)
    fp = decdec_rt.Runtime(tiny16).forward(ids)
    rt = decdec_rt.Runtime(tiny3)
    base_err = rel_err(rt.forward(ids), fp)
    rt.set_decdec("exact", 1024)
    full_err = rel_err(rt.forward(ids), fp)
    assert full_err < 0.25 * base_err, (full_err, base_err)


# f16 KV: prefill's and decode's float32 keys differ by roundoff, now and then by one float16 ulp
# once rounded (measured up to 7e-5 here); with DecDEC on, such a flip can move an approx
# selection across its threshold, so the f16 case runs without DecDEC.
@pytest.mark.parametrize("kv_cache, mode, tol", [("f32", "approx", 1e-5), ("f16", "off", 2e-4)])
def test_prefill_equals_decode(tiny3, kv_cache, mode, tol):
    """Teacher-forced prefill of T tokens gives the logits of T single-token steps."""
    rt = decdec_rt.Runtime(tiny3, kv_cache=kv_cache)
    if mode != "off":
        rt.set_decdec(mode, 64)
    ids = np.array(random_ids(rt, 70), dtype=np.int32)  # > one 64-row prefill chunk
    prefill = rt.forward(ids)
    rt._engine.reset()
    steps = np.stack([rt._engine.forward(ids[t:t + 1], False) for t in range(len(ids))])
    assert rel_err(steps, prefill) <= tol


def test_perplexity_default_window_fits_the_model(tiny3):
    """The default window is 512 tokens or the model's context window when shorter (tiny: 256)."""
    rt = decdec_rt.Runtime(tiny3)
    assert rt.max_seq_len < 512
    ids = random_ids(rt, 300)
    assert rt.perplexity(ids) == rt.perplexity(ids, context=rt.max_seq_len)
    with pytest.raises(decdec_rt.ContextOverflowError):
        rt.perplexity(ids, context=rt.max_seq_len + 1)


def test_perplexity_definition(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    ids = random_ids(rt, 50)
    ctx = 16
    total, n = 0.0, 0
    for s in range(0, len(ids), ctx):
        win = ids[s:s + ctx]
        if len(win) < 2:
            continue
        lg = rt.forward(win).astype(np.float64)
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        total += float(np.sum(lse[:-1] - lg[np.arange(len(win) - 1), win[1:]]))
        n += len(win) - 1
    assert rt.perplexity(ids, context=ctx) == pytest.approx(math.exp(total / n), rel=1e-6)
    text_ppl = rt.perplexity("The quick brown fox jumps over the lazy dog. " * 4, context=ctx)
    assert math.isfinite(text_ppl) and text_ppl > 1


def test_generate_greedy_and_seeded(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    a = rt.generate("Hello world", max_new_tokens=12)
    b = rt.generate("Hello world", max_new_tokens=12)
    assert isinstance(a, str) and a == b
    s1 = rt.generate("Hello world", max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=5)
    s2 = rt.generate("Hello world", max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=5)
    assert s1 == s2
    outs = {rt.generate("Hello world", max_new_tokens=12, temperature=1.5, seed=s) for s in range(6)}
    assert len(outs) > 1, "different seeds never changed the sample"
    pieces = list(rt.generate("Hello world", max_new_tokens=12, stream=True))
    assert "".join(pieces) == a


def test_generate_greedy_matches_argmax_of_forward(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    prompt = rt.tokenize("Once upon a time")
    ids = list(prompt)
    for _ in range(6):
        ids.append(int(np.argmax(rt.forward(ids)[-1])))
    rt.generate(prompt, max_new_tokens=6)
    assert rt._engine.tokens[:len(ids) - 1] == ids[:-1]


def test_stop_strings(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    full = rt.generate("Hello", max_new_tokens=20)
    if len(full) < 4:
        pytest.skip("greedy output too short to cut")
    stop = full[2:4]
    cut = rt.generate("Hello", max_new_tokens=20, stop=stop)
    assert cut == full[:full.find(stop)]
    assert rt.last_stop_reason == "stop"
    assert "".join(rt.generate("Hello", max_new_tokens=20, stop=[stop], stream=True)) == cut


def test_tokenize_roundtrip(tiny3, tiny4_spm):
    for path in (tiny3, tiny4_spm):
        rt = decdec_rt.Runtime(path)
        text = "The capital of France is Paris."
        ids = rt.tokenize(text)
        assert all(isinstance(i, int) for i in ids)
        assert text in rt.detokenize(ids)


def test_config_and_metadata(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    c = rt.config
    for key in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "n_vocab", "max_seq_len"):
        assert isinstance(c[key], int) and c[key] > 0
    assert c["n_heads"] % c["n_kv_heads"] == 0 and c["n_heads"] > c["n_kv_heads"]  # GQA
    assert rt.metadata["general.architecture"] == "llama"
    assert rt.metadata["model.dim"] == c["dim"]


# ---- errors ----------------------------------------------------------------------------------

def test_empty_inputs_raise(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    with pytest.raises(ValueError, match="empty"):
        rt.generate("")
    with pytest.raises(ValueError, match="empty"):
        rt.forward([])
    with pytest.raises(ValueError, match="empty"):
        rt.perplexity("")


def test_unknown_token_ids_raise(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    with pytest.raises(decdec_rt.InvalidArgumentError, match=str(rt.n_vocab + 5)):
        rt.forward([1, 2, rt.n_vocab + 5])
    with pytest.raises(ValueError):
        rt.forward([-1])
    with pytest.raises(ValueError):
        rt.detokenize([rt.n_vocab + 1])
    # the native layer checks too, not only Python
    with pytest.raises(decdec_rt.InvalidArgumentError, match="outside the vocabulary"):
        rt._engine.forward(np.array([0, rt.n_vocab], dtype=np.int32), True)


def test_context_overflow_raises(tiny3):
    rt = decdec_rt.Runtime(tiny3, max_seq_len=32)
    with pytest.raises(decdec_rt.ContextOverflowError, match="context"):
        rt.forward(random_ids(rt, 33))
    rt._engine.reset()
    rt._engine.forward(np.zeros(30, np.int32), False)
    with pytest.raises(decdec_rt.ContextOverflowError):
        rt._engine.forward(np.zeros(3, np.int32), False)
    with pytest.raises(decdec_rt.ContextOverflowError):
        rt.generate(random_ids(rt, 40), max_new_tokens=2)
    out = rt.generate(random_ids(rt, 28), max_new_tokens=50)  # stops at the window's end
    assert rt.last_stop_reason in ("context", "eos")
    assert isinstance(out, str)


def test_bad_arguments_raise(tiny3):
    rt = decdec_rt.Runtime(tiny3)
    with pytest.raises(ValueError, match="mode"):
        rt.set_decdec("fast", 8)
    with pytest.raises(ValueError, match="k_chunk"):
        rt.set_decdec("approx", 2000)
    with pytest.raises(ValueError, match="k_chunk"):
        rt.set_decdec("approx", {"qkv": 4, "mlp": 2})
    with pytest.raises(ValueError, match="temperature"):
        rt.generate("hi", temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        rt.generate("hi", top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        rt.generate("hi", max_new_tokens=-3)
    with pytest.raises(ValueError, match="context"):
        rt.perplexity("hello", context=1)
    with pytest.raises(ValueError, match="unknown device"):
        decdec_rt.Runtime(tiny3, device="tpu")
    with pytest.raises(ValueError, match="residual"):
        decdec_rt.Runtime(tiny3, residual="disk")


def test_decdec_needs_residuals(tiny16):
    rt = decdec_rt.Runtime(tiny16)
    with pytest.raises(decdec_rt.InvalidArgumentError, match="residual"):
        rt.set_decdec("exact", 8)
    rt.set_decdec("off", 8)  # off is always allowed


@pytest.mark.skipif(decdec_rt.cuda_available(), reason="a GPU is visible")
def test_cuda_unavailable_is_a_clear_error(tiny3):
    with pytest.raises(decdec_rt.CudaError, match="cuda"):
        decdec_rt.Runtime(tiny3, device="cuda")


def test_missing_and_corrupt_files(tiny3, tmp_path):
    with pytest.raises(FileNotFoundError):
        decdec_rt.Runtime(tmp_path / "nope.ddrt")
    data = bytearray(open(tiny3, "rb").read())
    bad = tmp_path / "bad.ddrt"
    bad.write_bytes(b"GGUF" + bytes(data[4:]))
    with pytest.raises(decdec_rt.FormatError, match="magic"):
        decdec_rt.Runtime(bad)
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(decdec_rt.FormatError):
        decdec_rt.Runtime(bad)
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(decdec_rt.FormatError, match="checksum"):
        decdec_rt.Runtime(bad)


def test_decode_greedy_equals_argmax_of_logits(tiny3):
    """The backend-side argmax path (what decode graphs replay) picks the argmax of the logits."""
    rt = decdec_rt.Runtime(tiny3)
    rt.set_decdec("approx", 64)
    eng = rt._engine
    prompt = np.array(random_ids(rt, 9), np.int32)
    eng.reset()
    eng.forward(prompt[:-1], False)
    fast = eng.decode_greedy(int(prompt[-1]), 6)
    eng.reset()
    eng.forward(prompt[:-1], False)
    slow, tok = [], int(prompt[-1])
    for _ in range(6):
        tok = int(np.argmax(eng.forward(np.array([tok], np.int32), False)))
        slow.append(tok)
    assert fast == slow


def test_bench_on_a_synthetic_shape():
    from decdec_rt.bench import format_result
    r = decdec_rt.bench("tiny", bits=4, device="cpu", context=8, n_decode=4, prefill=8, reps=1)
    assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0
    assert r["bytes_per_token"] > r["weight_bytes_per_token"] > 0
    assert r["kv_cache"] == "f16" and "KV cache f16" in format_result(r)
    with pytest.raises(ValueError, match="unknown shape"):
        decdec_rt.bench("gpt5", device="cpu")


def test_bench_kv_cache_bytes():
    """f32 doubles the KV bytes a token reads; the weights' bytes stay."""
    from decdec_rt.bench import bytes_per_token, format_result
    kw = dict(bits=4, device="cpu", context=8, n_decode=4, prefill=8, reps=1)
    r16, r32 = decdec_rt.bench("tiny", **kw), decdec_rt.bench("tiny", kv_cache="f32", **kw)
    assert (r16["kv_cache"], r32["kv_cache"]) == ("f16", "f32") and "KV cache f32" in format_result(r32)
    assert r32["kv_bytes_per_token"] == 2 * r16["kv_bytes_per_token"] > 0
    assert r32["bytes_per_token"] - r16["bytes_per_token"] == r16["kv_bytes_per_token"]
    c = {"n_layers": 32, "n_kv_heads": 8, "head_dim": 128, "dim": 4096, "hidden_dim": 14336, "n_heads": 32,
         "n_vocab": 128256}  # Llama-3-8B: 2 x 32 x 8 x 128 elements a position
    assert bytes_per_token(c, 3, 128, 512)["kv"] == 512 * 65536 * 2
    assert bytes_per_token(c, 3, 128, 512, "f32")["kv"] == 512 * 65536 * 4
    with pytest.raises(decdec_rt.InvalidArgumentError, match="'bf16'"):
        decdec_rt.bench("tiny", kv_cache="bf16", **kw)


def test_kv_cache_f16_close_to_f32(tiny3):
    """The default f16 KV cache rounds keys and values: logits move by about that rounding,
    greedy decoding keeps its tokens."""
    rt16, rt32 = decdec_rt.Runtime(tiny3), decdec_rt.Runtime(tiny3, kv_cache="f32")
    assert (rt16.kv_cache, rt32.kv_cache) == ("f16", "f32")
    assert (rt16._engine.kv_cache, rt32._engine.kv_cache) == ("f16", "f32")
    ids = random_ids(rt16, 48)
    a, b = rt16.forward(ids), rt32.forward(ids)
    nmse = float(np.sum((a.astype(np.float64) - b) ** 2) / np.sum(b.astype(np.float64) ** 2))
    assert 0 < nmse < 1e-5, nmse  # ~3e-7 measured
    prompt = ids[:12]
    assert rt16.generate(prompt, max_new_tokens=24) == rt32.generate(prompt, max_new_tokens=24)
    assert rt16._engine.tokens == rt32._engine.tokens and len(rt16._engine.tokens) > len(prompt)
    for rt in (rt16, rt32):
        rt._engine.reset()
        rt._engine.forward(np.array(prompt[:-1], np.int32), False)
    assert rt16._engine.decode_greedy(prompt[-1], 24) == rt32._engine.decode_greedy(prompt[-1], 24)


def test_kv_cache_invalid(tiny3):
    for bad in ("bf16", "F16", "fp16", None):
        with pytest.raises(decdec_rt.InvalidArgumentError, match=f'kv_cache must be "f16" or "f32", got {bad!r}'):
            decdec_rt.Runtime(tiny3, kv_cache=bad)
    # the native module checks too, naming the value and the choices
    with pytest.raises(decdec_rt.InvalidArgumentError, match='kv_cache must be "f16" or "f32", got \'int8\''):
        decdec_rt._core.Engine(tiny3, kv_cache="int8")
    with pytest.raises(decdec_rt.InvalidArgumentError, match="got 'int8'"):
        decdec_rt._core.Engine.synthetic("tiny", kv_cache="int8")


def test_llama31_rope_scaling_matches_reference(tiny3, tmp_path):
    """The engine's Llama-3.1 RoPE frequency scaling equals the numpy reference's."""
    from decdec_rt.ddrt import DdrtWriter, read_ddrt
    src = read_ddrt(tiny3)
    w = DdrtWriter(alignment=src.alignment)
    for k, v in src.metadata.items():
        if k != "general.alignment":  # the writer sets it
            w.add(k, v)
    w.add("model.rope_scaling.type", "llama3")
    w.add("model.rope_scaling.factor", 8.0)
    w.add("model.rope_scaling.low_freq_factor", 1.0)
    w.add("model.rope_scaling.high_freq_factor", 4.0)
    w.add("model.rope_scaling.original_max_seq_len", 16)  # small, so the tiny head_dim is affected
    for t in src.tensors:
        w.add_tensor(t["name"], t["type"], t["shape"], src.data(t["name"]))
    path = tmp_path / "scaled.ddrt"
    w.write(path)
    rt = decdec_rt.Runtime(path)
    assert rt.config["rope_scaling"]["type"] == "llama3"
    ids = random_ids(rt, 60)
    got = rt.forward(ids)
    assert rel_err(got, ReferenceModel(str(path)).forward(ids)) <= 1e-4
    assert rel_err(got, decdec_rt.Runtime(tiny3).forward(ids)) > 1e-3, "scaling changed nothing"

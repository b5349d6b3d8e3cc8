"""The numpy reference forward against a second, independent evaluation; DecDEC in the reference;
the tiny model maker (contents, calibration, determinism)."""
import math

import numpy as np
import pytest

from decdec_rt import quant, tiny
from decdec_rt.ddrt import read_ddrt
from decdec_rt.reference import Config, ReferenceModel, rope_inv_freq
from decdec_rt.tokenizer import Tokenizer
from decdec_rt.types import TType


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref_models")
    paths = {}
    for name, kw in {"f16": dict(bits=16), "q3": dict(bits=3), "q4_spm": dict(bits=4, tokenizer="spm"),
                     "lut3": dict(bits=3, method="nonuniform")}.items():
        paths[name] = str(d / f"{name}.ddrt")
        tiny.make_tiny_model(paths[name], seed=5, **{"tokenizer": "bpe", **kw})
    return paths


# ---- a second evaluation: token by token with an explicit KV cache -----------------------------
def load_f16_weights(path):
    """All tensors of an all-float file through the Python reader (not _core)."""
    f = read_ddrt(path)
    w = {}
    for t in f.tensors:
        dt = {TType.F32: np.float32, TType.F16: np.float16}[TType(t["type"])]
        w[t["name"]] = np.frombuffer(f.data(t["name"]), dt).astype(np.float64).reshape(t["shape"])
    return f.metadata, w


def incremental_logits(meta, w, ids):
    """Decode ids one at a time; each step attends over a growing K/V cache (explicit loops)."""
    dim, L = meta["model.dim"], meta["model.n_layers"]
    nh, nkv, hd = meta["model.n_heads"], meta["model.n_kv_heads"], meta["model.head_dim"]
    eps, theta = meta["model.norm_eps"], meta["model.rope_theta"]
    half = hd // 2
    inv = [np.float32(theta ** (-(2.0 * i) / hd)) for i in range(half)]
    kcache = [[] for _ in range(L)]  # per layer: list over positions of [nkv, hd]
    vcache = [[] for _ in range(L)]

    def norm(x, g):
        return x / math.sqrt(float(np.dot(x, x)) / len(x) + eps) * g

    def rope(v, pos):  # v [n, hd]: pairs (i, i + half)
        out = v.copy()
        for i in range(half):
            a = float(np.float32(np.float32(pos) * inv[i]))
            c, s = math.cos(a), math.sin(a)
            out[:, i] = v[:, i] * c - v[:, i + half] * s
            out[:, i + half] = v[:, i + half] * c + v[:, i] * s
        return out

    logits = []
    head = w.get("output.weight", w["token_embd.weight"])
    for pos, tok in enumerate(ids):
        x = w["token_embd.weight"][tok].copy()
        for l in range(L):
            p = f"blk.{l}."
            h = norm(x, w[p + "attn_norm.weight"])
            q = rope((w[p + "attn_q.weight"] @ h).reshape(nh, hd), pos)
            kcache[l].append(rope((w[p + "attn_k.weight"] @ h).reshape(nkv, hd), pos))
            vcache[l].append((w[p + "attn_v.weight"] @ h).reshape(nkv, hd))
            att = np.zeros((nh, hd))
            for hh in range(nh):
                kv = hh // (nh // nkv)
                sc = np.array([q[hh] @ k[kv] for k in kcache[l]]) / math.sqrt(hd)
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                att[hh] = sum(pr[s] * vcache[l][s][kv] for s in range(len(pr)))
            x = x + w[p + "attn_output.weight"] @ att.reshape(-1)
            h = norm(x, w[p + "ffn_norm.weight"])
            g, u = w[p + "ffn_gate.weight"] @ h, w[p + "ffn_up.weight"] @ h
            x = x + w[p + "ffn_down.weight"] @ (g / (1 + np.exp(-g)) * u)
        logits.append(head @ norm(x, w["output_norm.weight"]))
    return np.array(logits)


def test_forward_matches_incremental_kv_cache(models):
    meta, w = load_f16_weights(models["f16"])
    ref = ReferenceModel(models["f16"])
    ids = np.random.default_rng(0).integers(0, ref.cfg.n_vocab, size=37)
    got = ref.forward(ids, kv_cache="f32")  # the incremental loop keeps keys and values in float64
    assert got.shape == (37, ref.cfg.n_vocab) and got.dtype == np.float64
    want = incremental_logits(meta, w, ids)
    assert rel_err(got, want) <= 1e-10
    # causality: a prefix gives the same logits
    assert rel_err(ref.forward(ids[:9], kv_cache="f32"), want[:9]) <= 1e-10


def test_quantized_models_near_fp(models):
    ids = np.random.default_rng(1).integers(0, 300, size=24)
    fp = ReferenceModel(models["f16"]).forward(ids)
    for name in ("q3", "lut3"):
        q = ReferenceModel(models[name]).forward(ids)
        assert 1e-3 < rel_err(q, fp) < 0.9, name  # different, but far from unrelated (~1.41)


def test_decdec_exact_full_k_equals_w_plus_r(models):
    ref = ReferenceModel(models["q3"])
    ids = np.random.default_rng(2).integers(0, ref.cfg.n_vocab, size=20)
    comp = ref.forward(ids, decdec={"mode": "exact", "k_chunk": 1024})
    arrays = {**ref.w, **{k + ".weight": ref.w[k + ".weight"] + r for k, r in ref.residuals.items()}}
    merged = ReferenceModel.from_arrays(ref.meta, arrays).forward(ids)
    assert rel_err(comp, merged) <= 1e-10
    base = ref.forward(ids)
    assert rel_err(comp, base) > 1e-3
    # and the compensated model is much closer to the FP model it was quantized from
    fp = ReferenceModel(models["f16"]).forward(ids)
    assert rel_err(comp, fp) < 0.3 * rel_err(base, fp)


def test_residual_is_quantization_error(models):
    fp, q = ReferenceModel(models["f16"]), ReferenceModel(models["q3"])
    assert len(q.residuals) == 7 * q.cfg.n_layers
    for name, R in q.residuals.items():
        err = fp.w[name + ".weight"] - q.w[name + ".weight"]  # W - deq(Q(W))
        assert rel_err(R, err) < 0.2, name


@pytest.mark.parametrize("mode", ["exact", "approx", "static", "random"])
def test_decdec_partial_k(models, mode):
    ref = ReferenceModel(models["q3"])
    ids = np.random.default_rng(3).integers(0, ref.cfg.n_vocab, size=12)
    base, full = ref.forward(ids), ref.forward(ids, decdec={"mode": "exact", "k_chunk": 1024})
    part = ref.forward(ids, decdec={"mode": mode, "k_chunk": {"qkv": 128, "o": 0, "gate_up": 256,
                                                              "down": 64}, "seed": 3})
    assert rel_err(part, base) > 1e-4 and rel_err(part, full) > 1e-4
    assert np.array_equal(ref.forward(ids, decdec={"mode": "off", "k_chunk": 64}), base)
    assert np.array_equal(ref.forward(ids, decdec={"mode": mode, "k_chunk": 0}), base)


def test_decdec_uses_select_channels_per_position(models, monkeypatch):
    ref = ReferenceModel(models["q3"])
    calls = []
    real = quant.select_channels

    def spy(mode, k_chunk, x, **kw):
        calls.append((mode, k_chunk, kw["linear_id"], kw["pos"], kw["seed"], x.dtype, x.shape))
        return real(mode, k_chunk, x, **kw)
    monkeypatch.setattr(quant, "select_channels", spy)
    ref.forward([1, 2, 3], decdec={"mode": "random", "k_chunk": {"down": 32}, "seed": 9})
    L = ref.cfg.n_layers
    assert sorted((c[2], c[3]) for c in calls) == [(7 * l + 6, t) for l in range(L) for t in range(3)]
    assert all(c[0] == "random" and c[1] == 32 and c[4] == 9 and c[5] == np.float32
               and c[6] == (ref.cfg.hidden_dim,) for c in calls)


def test_capture_and_stored_calibration(models):
    ref = ReferenceModel(models["q3"], dtype=np.float32)
    seen = []
    ref.forward([1, 2, 3, 4], capture=lambda lid, name, x: seen.append((lid, name, x.shape, x.dtype)))
    L, c = ref.cfg.n_layers, ref.cfg
    assert [s[0] for s in seen] == [7 * l + s for l in range(L) for s in (0, 1, 2, 3, 4, 5, 6)]
    assert seen[3][1] == "blk.0.attn_output" and seen[3][2] == (4, c.n_heads * c.head_dim)
    assert seen[6][2] == (4, c.hidden_dim) and all(s[3] == np.float32 for s in seen)
    # the file's thresholds/ranking are those of the maker's calibration sequences
    tok = Tokenizer.from_metadata(ref.meta)
    seqs = tiny._calibration_sequences(tok, c.n_vocab, *tiny.SHAPES["tiny"]["calib"], seed=5)
    assert ref.meta["decdec.calib_tokens"] == sum(map(len, seqs))
    xs = ref.collect_inputs(seqs)
    for name in ("blk.0.attn_q", "blk.1.ffn_down"):
        np.testing.assert_allclose(ref.thresholds[name], quant.calibrate_thresholds(xs[name]), rtol=1e-5)
        assert np.array_equal(np.sort(ref.ranking[name]), np.arange(len(ref.ranking[name])))


def test_maker_metadata_and_tensors(models):
    for name, path in models.items():
        f = read_ddrt(path)
        m = f.metadata
        for key in ("general.architecture", "general.name", "model.dim", "model.hidden_dim",
                    "model.n_layers", "model.n_heads", "model.n_kv_heads", "model.head_dim",
                    "model.n_vocab", "model.max_seq_len", "model.norm_eps", "model.rope_theta",
                    "model.tied_embeddings", "tokenizer.model", "tokenizer.bos_id",
                    "tokenizer.eos_id", "tokenizer.pad_id", "tokenizer.add_bos",
                    "tokenizer.chat_template", "quant.method", "quant.bits", "quant.group_size",
                    "decdec.residual"):
            assert key in m, (name, key)
        names = {t["name"]: t for t in f.tensors}
        quantized = name != "f16"
        assert m["decdec.residual"] == quantized
        assert ("blk.1.ffn_down.residual" in names) == quantized
        assert ("blk.0.attn_q.thresholds" in names) == quantized
        if quantized:
            t = names["blk.1.ffn_down.residual"]
            assert t["type"] == TType.RES4 and tuple(t["shape"]) == (m["model.hidden_dim"], m["model.dim"])
            assert m["decdec.calib_tokens"] > 0
        wtype = names["blk.0.ffn_up.weight"]["type"]
        want = {"f16": TType.F16, "q3": TType.UQ3_G64, "q4_spm": TType.UQ4_G64, "lut3": TType.LUT3}[name]
        assert wtype == want
        assert m["quant.bits"] == 16.0 if name == "f16" else 3.0 < m["quant.bits"] < 5.0
        assert m["model.n_vocab"] == names["token_embd.weight"]["shape"][0]


def test_maker_deterministic_and_seeded(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a.ddrt", "b.ddrt", "c.ddrt"))
    tiny.make_tiny_model(a, seed=11)
    tiny.make_tiny_model(b, seed=11)
    tiny.make_tiny_model(c, seed=12)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()


def test_margin_scales_logit_spread(tmp_path):
    ids = [1, 5, 9, 40]
    out = []
    for margin in (1.0, 4.0):
        path = str(tmp_path / f"m{margin}.ddrt")
        tiny.make_tiny_model(path, bits=16, seed=4, margin=margin)
        out.append(ReferenceModel(path).forward(ids))
    np.testing.assert_allclose(out[1], 4.0 * out[0], rtol=1e-3, atol=1e-3)


def test_maker_bad_options(tmp_path):
    for kw, what in ((dict(bits=5), "bits"), (dict(method="gptq"), "method"),
                     (dict(shape="huge"), "shape"), (dict(tokenizer="wordpiece"), "tokenizer"),
                     (dict(shape="smollm2-135m", tokenizer="spm"), "bpe")):
        with pytest.raises(ValueError, match=what):
            tiny.make_tiny_model(str(tmp_path / "x.ddrt"), **kw)


def test_rope_llama3_scaling():
    base = dict(dim=64, hidden_dim=64, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=128,
                n_vocab=10, max_seq_len=8, norm_eps=1e-5, rope_theta=500000.0, tied_embeddings=True)
    plain = rope_inv_freq(Config(**base, rope_scaling=None)).astype(np.float64)
    s = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192.0)
    scaled = rope_inv_freq(Config(**base, rope_scaling=s)).astype(np.float64)
    wavelen = 2 * np.pi / plain
    hi = wavelen < 8192 / 4   # high frequencies: unchanged
    lo = wavelen > 8192 / 1   # low frequencies: divided by factor
    mid = ~hi & ~lo
    assert hi.any() and lo.any() and mid.any()
    np.testing.assert_allclose(scaled[hi], plain[hi], rtol=1e-7)
    np.testing.assert_allclose(scaled[lo], plain[lo] / 8, rtol=1e-7)
    ratio = scaled[mid] / plain[mid]  # between 1/8 and 1, falling as the index (wavelength) grows
    assert np.all((ratio > 1 / 8) & (ratio < 1)) and np.all(np.diff(ratio) < 0)
    # value check at one medium frequency, from the definition
    j = np.flatnonzero(mid)[0]
    sm = (8192 / wavelen[j] - 1) / (4 - 1)
    assert scaled[j] == pytest.approx((1 - sm) * plain[j] / 8 + sm * plain[j], rel=1e-6)


def test_forward_errors(models):
    ref = ReferenceModel(models["q3"])
    with pytest.raises(ValueError, match="token id"):
        ref.forward([1, ref.cfg.n_vocab])
    with pytest.raises(ValueError, match="tokens"):
        ref.forward([])
    with pytest.raises(ValueError, match="mode"):
        ref.forward([1], decdec={"mode": "best", "k_chunk": 8})
    with pytest.raises(ValueError, match="kinds"):
        ref.forward([1], decdec={"mode": "exact", "k_chunk": {"attn": 8}})
    with pytest.raises(ValueError, match="residual"):
        ReferenceModel(models["f16"]).forward([1], decdec={"mode": "exact", "k_chunk": 8})

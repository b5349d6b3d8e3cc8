"""Converter: synthetic Hugging Face directory and GGUF file (made here with safetensors / gguf /
tokenizers) -> .ddrt, checked against numpy forwards of the same weights; quantizer pieces."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("gguf")

from decdec_rt import Runtime, quant  # noqa: E402
from decdec_rt.convert import UnsupportedModelError, convert, load_source  # noqa: E402
from decdec_rt.convert import quantize as Q  # noqa: E402
from decdec_rt.reference import ReferenceModel  # noqa: E402

CFG = dict(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16)
HF_SLOTS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}
TEXT = "The river ran slowly past the old mill, and 12 children watched the wheel turn."


def _tokenizer_meta():
    from decdec_rt.tiny import train_bpe
    return train_bpe(vocab_size=300)


def _fp_weights(n_vocab, seed=0):
    """Our names -> f32, values exactly representable in f16 (so f16 storage is lossless)."""
    rng = np.random.default_rng(seed)
    c = CFG
    q, kv = c["n_heads"] * c["head_dim"], c["n_kv_heads"] * c["head_dim"]
    shapes = {"attn_q": (q, c["dim"]), "attn_k": (kv, c["dim"]), "attn_v": (kv, c["dim"]),
              "attn_output": (c["dim"], q), "ffn_gate": (c["hidden_dim"], c["dim"]),
              "ffn_up": (c["hidden_dim"], c["dim"]), "ffn_down": (c["dim"], c["hidden_dim"])}
    w = {"token_embd.weight": rng.standard_normal((n_vocab, c["dim"])),
         "output_norm.weight": 1 + 0.1 * rng.standard_normal(c["dim"])}
    for i in range(c["n_layers"]):
        w[f"blk.{i}.attn_norm.weight"] = 1 + 0.1 * rng.standard_normal(c["dim"])
        w[f"blk.{i}.ffn_norm.weight"] = 1 + 0.1 * rng.standard_normal(c["dim"])
        for slot, (o, n) in shapes.items():
            w[f"blk.{i}.{slot}.weight"] = rng.standard_normal((o, n)) / np.sqrt(n)
    return {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}


def _meta(n_vocab):
    return {"general.architecture": "llama", **{f"model.{k}": v for k, v in CFG.items()},
            "model.n_vocab": n_vocab, "model.max_seq_len": 128, "model.norm_eps": 1e-5,
            "model.rope_theta": 10000.0, "model.tied_embeddings": True}


def _llamacpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py's Q/K row permutation, written out independently."""
    out = np.empty_like(w)
    hd = w.shape[0] // n_head
    for h in range(n_head):
        for j in range(hd // 2):
            for p in range(2):
                out[h * hd + 2 * j + p] = w[h * hd + p * hd // 2 + j]
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(hf directory, gguf path, tokenizer meta, fp weights) of one random model."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    d = tmp_path_factory.mktemp("hf")
    tm = _tokenizer_meta()
    n_vocab = len(tm["tokenizer.tokens"])
    w = _fp_weights(n_vocab)
    # Hugging Face directory
    hf = {"model.embed_tokens.weight": w["token_embd.weight"], "model.norm.weight": w["output_norm.weight"]}
    for i in range(CFG["n_layers"]):
        hf[f"model.layers.{i}.input_layernorm.weight"] = w[f"blk.{i}.attn_norm.weight"]
        hf[f"model.layers.{i}.post_attention_layernorm.weight"] = w[f"blk.{i}.ffn_norm.weight"]
        for slot, hname in HF_SLOTS.items():
            hf[f"model.layers.{i}.{hname}.weight"] = w[f"blk.{i}.{slot}.weight"]
    names = sorted(hf)
    save_file({k: hf[k].astype(np.float16) for k in names[: len(names) // 2]}, str(d / "model-1.safetensors"))
    save_file({k: hf[k] for k in names[len(names) // 2:]}, str(d / "model-2.safetensors"))
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": CFG["dim"], "intermediate_size": CFG["hidden_dim"],
        "num_hidden_layers": CFG["n_layers"], "num_attention_heads": CFG["n_heads"],
        "num_key_value_heads": CFG["n_kv_heads"], "vocab_size": n_vocab, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": tm["tokenizer.bos_id"], "eos_token_id": tm["tokenizer.eos_id"]}))
    vocab = {t: i for i, t in enumerate(tm["tokenizer.tokens"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in tm["tokenizer.merges"]]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    # GGUF file, Q/K rows permuted as llama.cpp does
    import gguf
    gpath = str(tmp_path_factory.mktemp("gguf") / "model.gguf")
    g = gguf.GGUFWriter(gpath, "llama")
    g.add_name("synthetic")
    g.add_block_count(CFG["n_layers"])
    g.add_context_length(128)
    g.add_embedding_length(CFG["dim"])
    g.add_feed_forward_length(CFG["hidden_dim"])
    g.add_head_count(CFG["n_heads"])
    g.add_head_count_kv(CFG["n_kv_heads"])
    g.add_rope_freq_base(10000.0)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("default")
    g.add_token_list(tm["tokenizer.tokens"])
    g.add_token_merges(tm["tokenizer.merges"])
    g.add_bos_token_id(tm["tokenizer.bos_id"])
    g.add_eos_token_id(tm["tokenizer.eos_id"])
    for name, arr in w.items():
        if name.endswith("attn_q.weight"):
            arr = _llamacpp_permute(arr, CFG["n_heads"])
        elif name.endswith("attn_k.weight"):
            arr = _llamacpp_permute(arr, CFG["n_kv_heads"])
        g.add_tensor(name, arr.astype(np.float16) if arr.ndim == 2 else arr)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    return str(d), gpath, tm, w


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_f16_conversion_matches_numpy_forward(synthetic, tmp_path, kind):
    hf_dir, gguf_path, tm, w = synthetic
    out = str(tmp_path / "m.ddrt")
    convert(hf_dir if kind == "hf" else gguf_path, out, bits=16, progress=False)
    rt = Runtime(out)
    ids = rt.tokenize(TEXT)
    ref = ReferenceModel.from_arrays(_meta(len(tm["tokenizer.tokens"])), w, dtype=np.float64)
    assert _rel_err(rt.forward(ids), ref.forward(ids)) <= 1e-4
    assert rt.detokenize(ids) == TEXT


def test_hf_tokenizer_ids_match_tokenizers_library(synthetic, tmp_path):
    from tokenizers import Tokenizer
    hf_dir, _, _, _ = synthetic
    out = str(tmp_path / "m.ddrt")
    convert(hf_dir, out, bits=16, progress=False)
    want = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json")).encode(TEXT).ids
    assert Runtime(out).tokenize(TEXT) == want


def test_gguf_qk_rows_are_unpermuted(synthetic):
    _, gguf_path, _, w = synthetic
    src = load_source(gguf_path)
    for i in range(CFG["n_layers"]):
        for slot in ("attn_q", "attn_k", "attn_v"):
            np.testing.assert_array_equal(src.weights[f"blk.{i}.{slot}.weight"], w[f"blk.{i}.{slot}.weight"])


@pytest.mark.parametrize("method", ["rtn", "awq", "nonuniform"])
def test_quantized_conversion_is_consistent(synthetic, tmp_path, method):
    """3-bit + residual + calibration: the engine matches the numpy forward of the file, the
    residual brings the weights closer to FP, and full-k DecDEC brings logits closer to FP."""
    hf_dir, _, tm, w = synthetic
    out = str(tmp_path / "m.ddrt")
    info = convert(hf_dir, out, bits=3, method=method, group_size=32, progress=False)
    assert info["code_bits"] == 3 and info["calib_tokens"] > 0
    rt = Runtime(out)
    ids = rt.tokenize(TEXT)
    ref = ReferenceModel(out)
    assert _rel_err(rt.forward(ids), ref.forward(ids)) <= 1e-4
    for lin in ("blk.0.attn_q", "blk.1.ffn_down"):
        assert lin in ref.thresholds and lin in ref.ranking and lin in ref.residuals
    fp = ReferenceModel.from_arrays(_meta(len(tm["tokenizer.tokens"])), w).forward(ids)
    off = rt.forward(ids)
    rt.set_decdec("exact", 1024)
    full = rt.forward(ids)
    assert _rel_err(full, fp) < 0.5 * _rel_err(off, fp)


def test_engine_calibration_equals_reference_capture(synthetic, tmp_path):
    """The engine's capture hook hands over the same linear inputs as the numpy reference (f32
    KV caches: float16 rounding would turn the float32 differences of rope into ulp flips that
    move a quantile threshold by more than the tolerance)."""
    from decdec_rt.convert.calibrate import collect_stats
    hf, _, tm, _ = synthetic
    path = str(tmp_path / "f16.ddrt")
    convert(str(hf), path, bits=16, progress=False)
    rng = np.random.default_rng(3)
    windows = [rng.integers(0, len(tm["tokenizer.tokens"]), n).tolist() for n in (40, 17)]
    stats = collect_stats(path, windows, sample_tokens=0, kv_cache="f32")
    xs = {}
    ref = ReferenceModel(path, dtype=np.float32)
    for win in windows:
        ref.forward(win, capture=lambda _lid, name, x: xs.setdefault(name, []).append(x), logits=False,
                    kv_cache="f32")
    assert set(stats) == set(xs)
    for name, parts in xs.items():
        X = np.concatenate(parts)
        np.testing.assert_allclose(stats[name].thresholds, quant.calibrate_thresholds(X), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats[name].mean_abs, np.abs(X).mean(0), rtol=1e-4, atol=1e-7)


def test_awq_folding_keeps_the_fp_function(synthetic, tmp_path):
    from decdec_rt.convert.calibrate import collect_stats
    from decdec_rt.reference import Config
    hf, _, tm, w = synthetic
    meta = _meta(len(tm["tokenizer.tokens"]))
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, len(tm["tokenizer.tokens"]), 48).tolist()]
    path = str(tmp_path / "f16.ddrt")
    convert(str(hf), path, bits=16, progress=False)
    stats = collect_stats(path, windows, sample_tokens=32)
    folded = dict(w)
    alphas = {}
    for i in range(CFG["n_layers"]):
        alphas.update(Q.awq_fold(folded, i, stats, lambda n: Q.weight_type("awq", 3, 32), Config.from_metadata(meta)))
    assert set(alphas) == set(Q.linear_names(CFG["n_layers"]))
    # f32 KV: float16 rounding of keys and values would turn the fold's float64 roundoff into ulp flips
    a = ReferenceModel.from_arrays(meta, w).forward(windows[0], kv_cache="f32")
    b = ReferenceModel.from_arrays(meta, folded).forward(windows[0], kv_cache="f32")
    assert _rel_err(b, a) < 1e-5


def test_awq_scale_never_worse_than_rtn():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((64, 128)).astype(np.float32)
    X = rng.standard_normal((256, 128)).astype(np.float32) * np.exp(rng.standard_normal(128)).astype(np.float32)
    t = Q.weight_type("awq", 3, 32)
    s, alpha = Q.awq_scale([W], [t], X, np.abs(X).mean(axis=0))

    def err(scale):
        _, deq = quant.quantize(W * scale, t)
        return float(np.sum(((X / scale) @ deq.T - X @ W.T) ** 2))
    assert err(s) <= err(np.ones(128, np.float32))
    assert alpha > 0      # heavy-tailed channels: scaling helps


def test_bit_maps(tmp_path):
    p = tmp_path / "map.json"
    p.write_text(json.dumps({"default": 3, "blk.1": 4, "ffn_down": 4, "blk.1.attn_q": 3}))
    m = Q.read_bit_map(str(p), 2, 3)
    assert m["blk.0.attn_q"] == 3 and m["blk.0.ffn_down"] == 4
    assert m["blk.1.attn_k"] == 4 and m["blk.1.attn_q"] == 3
    p.write_text(json.dumps({"blk.7": 4}))
    with pytest.raises(ValueError, match="unknown key"):
        Q.read_bit_map(str(p), 2, 3)


def test_avg_bits_and_bit_map_recorded(synthetic, tmp_path):
    hf_dir, _, _, _ = synthetic
    out = str(tmp_path / "m.ddrt")
    info = convert(hf_dir, out, bits=3, avg_bits=3.5, group_size=32, residual=False, progress=False)
    assert 3.3 <= info["code_bits"] <= 3.7
    md = Runtime(out).metadata
    bits = np.asarray(md["quant.linear_bits"])
    assert set(bits.tolist()) == {3, 4} and len(bits) == 7 * CFG["n_layers"]
    assert "blk.0.attn_q.residual" not in {t["name"] for t in Runtime(out)._file.tensors}


def test_cli_convert_and_errors(synthetic, tmp_path, capsys):
    from decdec_rt.cli import main
    hf_dir, _, _, _ = synthetic
    out = tmp_path / "m.ddrt"
    assert main(["convert", hf_dir, "-o", str(out), "--bits", "4", "--group-size", "32", "-q"]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    assert main(["convert", str(bad), "-o", str(tmp_path / "x.ddrt"), "-q"]) == 1
    assert "gpt_neox" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad", "m.ddrt"]   # no partial or temporary files


def test_missing_tensor_is_named(synthetic, tmp_path):
    from safetensors.numpy import load_file, save_file
    hf_dir, _, _, _ = synthetic
    d = tmp_path / "hf"
    d.mkdir()
    for f in os.listdir(hf_dir):
        data = open(os.path.join(hf_dir, f), "rb").read()
        (d / f).write_bytes(data)
    t = load_file(str(d / "model-2.safetensors"))
    victim = sorted(t)[0]
    del t[victim]
    save_file(t, str(d / "model-2.safetensors"))
    with pytest.raises(UnsupportedModelError, match="missing"):
        load_source(str(d))

"""Read a Hugging Face Llama-style checkpoint directory into a Source: config.json,
*.safetensors (read with `safetensors`), tokenizer.json or tokenizer.model."""
from __future__ import annotations

import glob
import json
import os
import struct

import numpy as np

from .source import Source, UnsupportedModelError

_ARCHS = {"llama", "mistral", "smollm", "smollm2"}
# HF tensor name (after "model.layers.{i}.") -> ours (after "blk.{i}.")
_LAYER_NAMES = {"self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
                "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
                "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
                "post_attention_layernorm.weight": "ffn_norm.weight"}
_TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _config(cfg: dict, path: str) -> dict:
    mt = cfg.get("model_type")
    if mt not in _ARCHS:
        raise UnsupportedModelError(f"{path}: model_type {mt!r} is not supported "
                                    f"(Llama-style only: {', '.join(sorted(_ARCHS))})")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if key not in cfg:
            raise UnsupportedModelError(f"{path}/config.json: key '{key}' is missing")
    n_heads = int(cfg["num_attention_heads"])
    meta = {"general.architecture": "llama",
            "general.name": os.path.basename(os.path.normpath(path)),
            "model.dim": int(cfg["hidden_size"]), "model.hidden_dim": int(cfg["intermediate_size"]),
            "model.n_layers": int(cfg["num_hidden_layers"]), "model.n_heads": n_heads,
            "model.n_kv_heads": int(cfg.get("num_key_value_heads") or n_heads),
            "model.head_dim": int(cfg.get("head_dim") or cfg["hidden_size"] // n_heads),
            "model.n_vocab": int(cfg["vocab_size"]),
            "model.max_seq_len": int(cfg.get("max_position_embeddings", 2048)),
            "model.norm_eps": float(cfg.get("rms_norm_eps", 1e-5)),
            "model.rope_theta": float(cfg.get("rope_theta", 10000.0)),
            "model.tied_embeddings": bool(cfg.get("tie_word_embeddings", False))}
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "llama3":
            raise UnsupportedModelError(f"{path}: rope_scaling type {kind!r} is not supported (only llama3)")
        meta.update({"model.rope_scaling.type": "llama3",
                     "model.rope_scaling.factor": float(rs["factor"]),
                     "model.rope_scaling.low_freq_factor": float(rs["low_freq_factor"]),
                     "model.rope_scaling.high_freq_factor": float(rs["high_freq_factor"]),
                     "model.rope_scaling.original_max_seq_len": int(rs["original_max_position_embeddings"])})
    return meta


def _special_id(tok_json: dict | None, tok_cfg: dict, cfg: dict, which: str) -> int:
    """bos/eos/pad id: config.json's *_token_id, else tokenizer_config.json's token text looked
    up in tokenizer.json's added tokens; -1 when none."""
    v = cfg.get(f"{which}_token_id")
    if isinstance(v, list):
        v = v[0] if v else None
    if isinstance(v, int):
        return v
    text = tok_cfg.get(f"{which}_token")
    if isinstance(text, dict):
        text = text.get("content")
    if text and tok_json:
        for t in tok_json.get("added_tokens", []):
            if t.get("content") == text:
                return int(t["id"])
        vocab = tok_json.get("model", {}).get("vocab", {})
        if isinstance(vocab, dict) and text in vocab:
            return int(vocab[text])
    return -1


def _adds_bos(tok_json: dict | None, tok_cfg: dict, bos_id: int) -> bool:
    """tokenizer_config.json's add_bos_token; else whether tokenizer.json's post-processor
    inserts the BOS token (decdec_rt adds it itself); sentencepiece models default to yes."""
    if bos_id < 0:
        return False
    if "add_bos_token" in tok_cfg:
        return bool(tok_cfg["add_bos_token"])
    if tok_json is None:
        return True
    post = json.dumps(tok_json.get("post_processor") or {})
    bos = next((t["content"] for t in tok_json.get("added_tokens", []) if t.get("id") == bos_id), None)
    return bos is not None and json.dumps(bos) in post


def _tokenizer(path: str, cfg: dict) -> dict:
    tok_cfg_path = os.path.join(path, "tokenizer_config.json")
    tok_cfg = _read_json(tok_cfg_path) if os.path.exists(tok_cfg_path) else {}
    json_path, spm_path = os.path.join(path, "tokenizer.json"), os.path.join(path, "tokenizer.model")
    tok_json = _read_json(json_path) if os.path.exists(json_path) else None
    if tok_json is not None:
        meta = {"tokenizer.model": "bpe", "tokenizer.hf_json": json.dumps(tok_json),
                "tokenizer.special_tokens": [t["content"] for t in tok_json.get("added_tokens", [])
                                             if t.get("special")]}
    elif os.path.exists(spm_path):
        with open(spm_path, "rb") as f:
            meta = {"tokenizer.model": "spm", "tokenizer.spm_proto": f.read()}
    else:
        raise UnsupportedModelError(f"{path}: no tokenizer.json or tokenizer.model")
    for ours, which in (("bos_id", "bos"), ("eos_id", "eos"), ("pad_id", "pad")):
        meta[f"tokenizer.{ours}"] = _special_id(tok_json, tok_cfg, cfg, which)
    meta["tokenizer.add_bos"] = _adds_bos(tok_json, tok_cfg, meta["tokenizer.bos_id"])
    if isinstance(tok_cfg.get("chat_template"), str):
        meta["tokenizer.chat_template"] = tok_cfg["chat_template"]
    return meta


def our_name(hf_name: str) -> str | None:
    """The .ddrt name of a HF tensor; None for tensors that are ignored (rotary caches)."""
    if hf_name.endswith(_IGNORED_SUFFIXES):
        return None
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    parts = hf_name.split(".", 3)   # model, layers, i, rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_NAMES:
        return f"blk.{int(parts[2])}.{_LAYER_NAMES[parts[3]]}"
    raise UnsupportedModelError(f"unexpected tensor '{hf_name}' (not a Llama tensor)")


def _bf16_tensors(path: str) -> dict:
    """{name: (shape, byte offset)} of the BF16 tensors of a safetensors file (which the numpy
    framework of `safetensors` cannot return), from the file's JSON header."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: (v["shape"], 8 + n + v["data_offsets"][0]) for k, v in header.items()
            if k != "__metadata__" and v["dtype"] == "BF16"}


def read_safetensors(path: str):
    """Yields (hf name, f32 array) of one .safetensors file."""
    from safetensors import safe_open
    bf16 = _bf16_tensors(path)
    with safe_open(path, framework="numpy") as f:
        for name in f.keys():
            if name in bf16:
                shape, off = bf16[name]
                raw = np.fromfile(path, np.uint16, count=int(np.prod(shape)), offset=off)
                yield name, (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
            else:
                yield name, np.asarray(f.get_tensor(name), np.float32)


def load_hf(path: str, progress: bool = False) -> Source:
    from tqdm import tqdm
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise UnsupportedModelError(f"{path}: no config.json (not a Hugging Face model directory)")
    cfg = _read_json(cfg_path)
    model_meta = _config(cfg, path)          # unsupported architectures fail first
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise UnsupportedModelError(f"{path}: no *.safetensors files (PyTorch .bin checkpoints are "
                                    "not supported: convert them to safetensors first)")
    src = Source({**model_meta, **_tokenizer(path, cfg)}, origin=path)
    for file in tqdm(files, desc="read safetensors", unit="file", disable=not progress):
        for hf_name, w in read_safetensors(file):
            name = our_name(hf_name)
            if name is not None:
                src.weights[name] = w
    if src.meta["model.tied_embeddings"] and "output.weight" in src.weights:
        del src.weights["output.weight"]
    return src

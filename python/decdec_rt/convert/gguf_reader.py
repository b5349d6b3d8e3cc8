"""Read a llama.cpp GGUF file (Llama architecture) into a Source: metadata, tokenizer and
dequantized weights, through the `gguf` package.

llama.cpp's converter permutes the rows of attn_q / attn_k so that RoPE can rotate adjacent
pairs; decdec_rt (like Hugging Face) rotates halves, so the permutation is undone here.
"""
from __future__ import annotations

import numpy as np

from ..types import LINEAR_SLOTS
from .source import Source, UnsupportedModelError

# tokenizer.ggml.pre -> our tokenizer.pre
_PRE = {"smollm": "smollm", "gpt-2": "gpt2", "gpt2": "gpt2", "default": "gpt2",
        "llama-bpe": "llama3", "llama3": "llama3"}
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4
_NAMES = ({"token_embd.weight", "output_norm.weight", "output.weight"}
          | {f"{slot}.weight" for slot in LINEAR_SLOTS} | {"attn_norm.weight", "ffn_norm.weight"})


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF (rotate-half) row order -> llama.cpp (adjacent pairs) row order, as llama.cpp's
    converter does: per head, row h*hd + 2j + p <- row h*hd + p*hd/2 + j."""
    d_out = w.shape[0]
    return w.reshape(n_heads, 2, d_out // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of permute_qk: llama.cpp row order -> HF rotate-half order."""
    d_out = w.shape[0]
    return w.reshape(n_heads, d_out // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key, default=None, required=False):
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise UnsupportedModelError(f"GGUF: metadata key '{key}' is missing")
        return default
    return f.contents()


def _config(reader, path: str) -> dict:
    arch = _field(reader, "general.architecture", required=True)
    if arch != "llama":
        raise UnsupportedModelError(f"{path}: architecture {arch!r} is not supported (only 'llama')")
    a = "llama."
    dim = int(_field(reader, a + "embedding_length", required=True))
    n_heads = int(_field(reader, a + "attention.head_count", required=True))
    head_dim = int(_field(reader, a + "attention.key_length", dim // n_heads))
    if int(_field(reader, a + "rope.dimension_count", head_dim)) != head_dim:
        raise UnsupportedModelError(f"{path}: partial RoPE (rope.dimension_count != head_dim) is not supported")
    if _field(reader, a + "rope.scaling.type") not in (None, "none"):
        raise UnsupportedModelError(f"{path}: RoPE scaling {_field(reader, a + 'rope.scaling.type')!r} "
                                    "is not supported from GGUF (convert the Hugging Face checkpoint)")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise UnsupportedModelError(f"{path}: 'rope_freqs.weight' (Llama 3.1 RoPE scaling) is not "
                                    "supported from GGUF (convert the Hugging Face checkpoint)")
    tokens = _field(reader, "tokenizer.ggml.tokens", required=True)
    return {"general.architecture": "llama",
            "general.name": str(_field(reader, "general.name", "gguf model")),
            "model.dim": dim,
            "model.hidden_dim": int(_field(reader, a + "feed_forward_length", required=True)),
            "model.n_layers": int(_field(reader, a + "block_count", required=True)),
            "model.n_heads": n_heads,
            "model.n_kv_heads": int(_field(reader, a + "attention.head_count_kv", n_heads)),
            "model.head_dim": head_dim,
            "model.n_vocab": len(tokens),
            "model.max_seq_len": int(_field(reader, a + "context_length", 2048)),
            "model.norm_eps": float(_field(reader, a + "attention.layer_norm_rms_epsilon", 1e-5)),
            "model.rope_theta": float(_field(reader, a + "rope.freq_base", 10000.0)),
            "model.tied_embeddings": "output.weight" not in names}


def _tokenizer(reader, path: str) -> dict:
    model = _field(reader, "tokenizer.ggml.model", required=True)
    if model != "gpt2":
        raise UnsupportedModelError(f"{path}: GGUF tokenizer model {model!r} is not supported "
                                    "(only byte-level BPE, 'gpt2'; convert the Hugging Face "
                                    "checkpoint for sentencepiece models)")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if pre not in _PRE:
        raise UnsupportedModelError(f"{path}: pre-tokenizer {pre!r} is not supported "
                                    f"(supported: {', '.join(sorted(_PRE))})")
    tokens = list(_field(reader, "tokenizer.ggml.tokens", required=True))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    meta = {"tokenizer.model": "bpe", "tokenizer.pre": _PRE[pre], "tokenizer.tokens": tokens,
            "tokenizer.merges": list(_field(reader, "tokenizer.ggml.merges", required=True)),
            "tokenizer.add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
            "tokenizer.special_tokens": [t for t, ty in zip(tokens, types)
                                         if ty in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)]}
    for ours, theirs in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"),
                         ("pad_id", "padding_token_id")):
        meta[f"tokenizer.{ours}"] = int(_field(reader, f"tokenizer.ggml.{theirs}", -1))
    template = _field(reader, "tokenizer.chat_template")
    if template:
        meta["tokenizer.chat_template"] = str(template)
    return meta


def _dequantize(t) -> np.ndarray:
    """f32 array in numpy (row-major) shape: GGUF's ne = [d_in, d_out] becomes [d_out, d_in]."""
    import gguf
    try:
        w = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise UnsupportedModelError(f"GGUF tensor '{t.name}': type {t.tensor_type.name} cannot be "
                                    f"dequantized by the gguf package ({e})") from e
    shape = tuple(int(s) for s in reversed(t.shape))
    return np.ascontiguousarray(np.asarray(w, np.float32).reshape(shape))


def load_gguf(path: str, progress: bool = False) -> Source:
    try:
        import gguf
    except ImportError as e:
        raise ImportError("reading GGUF needs the 'gguf' package: pip install gguf") from e
    from tqdm import tqdm
    reader = gguf.GGUFReader(path)
    meta = {**_config(reader, path), **_tokenizer(reader, path)}
    src = Source(meta, origin=path)
    for t in tqdm(reader.tensors, desc="read gguf", unit="tensor", disable=not progress):
        short = t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name
        if short not in _NAMES:
            raise UnsupportedModelError(f"{path}: unexpected tensor '{t.name}' (not a Llama tensor)")
        w = _dequantize(t)
        if t.name.endswith("attn_q.weight"):
            w = unpermute_qk(w, meta["model.n_heads"])
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_qk(w, meta["model.n_kv_heads"])
        src.weights[t.name] = w
    return src

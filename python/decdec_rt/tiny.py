"""A tiny random Llama-style model in .ddrt form, for tests and benchmarks (no downloads).

make_tiny_model(path, ...) builds the tokenizer (trained at build time on the short English
text below), random weights scaled like a real model, quantized linears with DecDEC residuals,
and calibration data (thresholds, static ranking) from the model's own activations, then writes
everything with DdrtWriter. Deterministic for a given seed. tools/make_tiny_model.py is the CLI.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

# Original English prose for training the tiny tokenizers and for calibration sequences.
CORPUS = """\
The river ran slowly past the old mill, and the children watched the water turn the wheel.
In the morning the baker opened his shop at 6 o'clock and sold 120 loaves before noon.
A small boat carried 3 passengers across the lake; the fare was 4 coins each way.
She wrote a letter to her brother, who lived in a city far to the north, near the mountains.
The library kept its oldest books in a cool room with thick walls and a single window.
Every spring the farmers planted wheat, barley and beans, and hoped for gentle rain in May.
When the bell rang twice, the students closed their notebooks and walked into the garden.
The train left the station at 9:45 and reached the coast three hours later, right on time.
He counted the stars one by one until he lost track somewhere after 200 and fell asleep.
A good map shows roads, rivers, hills and towns, and tells the traveller how far to walk.
The market was busy on Saturday: fish, apples, cheese, bread, honey and warm tea for sale.
Our neighbour repairs clocks; his table is covered with tiny springs, gears and screws.
The teacher asked a simple question: what is 7 times 8? The answer, of course, is 56.
Light travels very fast, yet the light of distant stars is older than the oldest trees.
They built the bridge in 1889, and it still carries carts, bicycles and people every day.
The cat sat on the warm stone step and watched the birds gather seeds from the grass.
In winter the days are short, the nights are long, and the windows glow with yellow lamps.
The museum has a room of old machines: a loom, a printing press and a steam engine.
She planted 15 trees along the path, and after ten years they gave shade to everyone.
Music drifted from an open window, a slow song played on a piano with one missing key.
The recipe needs 2 cups of flour, 1 cup of milk, 3 eggs and a pinch of salt.
A thunderstorm rolled over the valley, and the rain fell so hard that the roads flooded.
The captain checked the weather, the tides and the wind before the ship left the harbour.
People have told stories around fires for thousands of years, long before anyone wrote.
The garden gate creaked open, and a dog with a muddy nose trotted in to say hello.
Numbers such as 3.14, 2.71 and 1.41 appear again and again in mathematics and science.
The old road climbs the hill in long loops, so the horses can pull the heavy wagons.
On the last day of summer the village held a fair with games, music and a long dinner.
A careful reader notices small things: a date, a name, a word that appears only once.
The wind turned the pages of the open book, and nobody in the quiet room said a word.
Water boils at 100 degrees and freezes at 0, at least at the level of the sea.
The young engineer drew a plan for a new pump that would lift water to the high fields.
Rain or shine, the postman walked the same route, and he knew every house by its door.
The forest was dark and green, full of ferns, moss, mushrooms and the songs of birds.
Some questions are easy to ask and hard to answer; others are the other way around.
The clock in the tower struck twelve, and the square filled with people going to lunch.
Her grandmother kept a box of buttons of every colour, and the children loved to sort them.
A lighthouse stands at the end of the pier, and its lamp turns all night long.
The shop sold paper, ink, pens, string and glue, and it smelled of wood and dust.
The path along the cliff is narrow, so walkers go one at a time and hold the rail.
"""


def corpus_lines() -> list[str]:
    return [line for line in CORPUS.splitlines() if line.strip()]


# ---- tokenizers ---------------------------------------------------------------------------------
BOS, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_bpe(vocab_size: int = 400, n_total: int | None = None) -> dict:
    """Byte-level BPE trained on CORPUS. Ids: 0 BOS, 1 <|im_start|>, 2 EOS (<|im_end|>),
    then the 256 byte tokens and the merges. n_total pads the vocabulary with unreachable
    '<extra_N>' tokens (to give a model a larger vocabulary than the trained one).
    Returns the tokenizer.* metadata entries."""
    from tokenizers import Tokenizer as HfTokenizer, decoders, models, pre_tokenizers, trainers
    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS, IM_START, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    if n_total is not None:
        if n_total < len(tokens):
            raise ValueError(f"vocabulary of {n_total} is smaller than the trained {len(tokens)}")
        tokens += [f"<extra_{i}>" for i in range(n_total - len(tokens))]
    return {"tokenizer.model": "bpe", "tokenizer.pre": "gpt2", "tokenizer.tokens": tokens,
            "tokenizer.merges": merges, "tokenizer.bos_id": vocab[BOS], "tokenizer.eos_id": vocab[EOS],
            "tokenizer.pad_id": -1, "tokenizer.add_bos": True,
            "tokenizer.special_tokens": [IM_START, EOS], "tokenizer.chat_template": CHAT_TEMPLATE}


def train_spm(vocab_size: int = 384) -> dict:
    """sentencepiece BPE with byte fallback and single-digit splitting, trained on CORPUS.
    Ids: 0 <unk>, 1 BOS <s>, 2 EOS </s>, 3 <|im_start|>, 4 <|im_end|>, then bytes and pieces."""
    import sentencepiece as spm
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=out, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        user_defined_symbols=[IM_START, "<|im_end|>"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, num_threads=1, minloglevel=2)
    proto = out.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    return {"tokenizer.model": "spm", "tokenizer.spm_proto": proto, "tokenizer.tokens": tokens,
            "tokenizer.bos_id": 1, "tokenizer.eos_id": 2, "tokenizer.pad_id": -1,
            "tokenizer.add_bos": True, "tokenizer.special_tokens": [IM_START, "<|im_end|>"],
            "tokenizer.chat_template": CHAT_TEMPLATE}


# ---- the model ----------------------------------------------------------------------------------
SHAPES = {
    # d_in of ffn_down = 160: a multiple of 32 but not of 64/128 (group tails at g64/g128)
    "tiny": dict(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                 n_vocab=None, max_seq_len=256, rope_theta=10000.0, tied_embeddings=False,
                 group_size=64, calib=(4, 64)),
    # head_dim 64 and groups of 128 at a size the CPU emulator runs: the decode attention's shape
    # whose merge o's fused GEMV can take over (DDRT_ATTN_DEFER=1: its decode graph's 64 splits are
    # more than the default takes)
    "tiny64": dict(dim=256, hidden_dim=512, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64,
                   n_vocab=None, max_seq_len=256, rope_theta=10000.0, tied_embeddings=False,
                   group_size=128, calib=(4, 64)),
    "smollm2-135m": dict(dim=576, hidden_dim=1536, n_layers=30, n_heads=9, n_kv_heads=3,
                         head_dim=64, n_vocab=49152, max_seq_len=2048, rope_theta=100000.0,
                         tied_embeddings=True, group_size=128, calib=(2, 32)),
}
NORM_EPS = 1e-5


def _config_metadata(cfg: dict, n_vocab: int, name: str) -> dict:
    return {"general.architecture": "llama", "general.name": name,
            **{f"model.{k}": int(cfg[k]) for k in ("dim", "hidden_dim", "n_layers", "n_heads",
                                                   "n_kv_heads", "head_dim", "max_seq_len")},
            "model.n_vocab": int(n_vocab), "model.norm_eps": NORM_EPS,
            "model.rope_theta": float(cfg["rope_theta"]),
            "model.tied_embeddings": bool(cfg["tied_embeddings"])}


def _norm_weight(rng, dim: int, outliers: bool) -> np.ndarray:
    """~1 with noise; block norms get a few large channels so activations are heavy-tailed
    (as in real LLMs), which is what DecDEC's top-|x| selection is about."""
    w = 1.0 + 0.1 * rng.standard_normal(dim, dtype=np.float32)
    if outliers:
        idx = rng.choice(dim, size=max(1, dim // 32), replace=False)
        w[idx] *= rng.uniform(3.0, 6.0, size=len(idx)).astype(np.float32)
    return w


def _fp16_round(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def random_weights(cfg: dict, n_vocab: int, seed: int, margin: float, progress: bool) -> dict:
    """FP weights {tensor name: f32 array}, already rounded to f16 (so the f16 model and the
    quantized ones start from the same numbers). Independent of the quantization settings."""
    from tqdm import tqdm
    from .reference import Config, linear_name
    from .types import LINEAR_SLOTS
    rng = np.random.default_rng(seed)
    dim = cfg["dim"]
    shape_of = Config(**{k: cfg[k] for k in ("dim", "hidden_dim", "n_layers", "n_heads",
                                             "n_kv_heads", "head_dim", "max_seq_len")},
                      n_vocab=n_vocab, norm_eps=NORM_EPS, rope_theta=cfg["rope_theta"],
                      tied_embeddings=cfg["tied_embeddings"], rope_scaling=None).linear_shape
    w = {"token_embd.weight": rng.standard_normal((n_vocab, dim), dtype=np.float32) / np.sqrt(dim)}
    for i in tqdm(range(cfg["n_layers"]), desc="weights", disable=not progress):
        w[f"blk.{i}.attn_norm.weight"] = _norm_weight(rng, dim, outliers=True)
        w[f"blk.{i}.ffn_norm.weight"] = _norm_weight(rng, dim, outliers=True)
        for slot in LINEAR_SLOTS:
            d_out, d_in = shape_of(slot)
            w[linear_name(i, slot) + ".weight"] = \
                rng.standard_normal((d_out, d_in), dtype=np.float32) / np.sqrt(d_in)
    w["output_norm.weight"] = _norm_weight(rng, dim, outliers=False) * np.float32(margin)
    if not cfg["tied_embeddings"]:
        w["output.weight"] = 2.0 * rng.standard_normal((n_vocab, dim), dtype=np.float32) / np.sqrt(dim)
    return {k: _fp16_round(v) if v.ndim == 2 else v.astype(np.float32) for k, v in w.items()}


def _calibration_sequences(tok, n_vocab: int, n_seq: int, length: int, seed: int) -> list:
    """Half text windows of CORPUS, half uniformly random token ids."""
    rng = np.random.default_rng(seed + 7919)
    text_ids = tok.encode(CORPUS, add_bos=False)
    seqs = []
    for s in range(n_seq):
        if s % 2 == 0 and len(text_ids) > length:
            start = (s // 2) * (len(text_ids) - length) // max(1, n_seq // 2)
            seqs.append([tok.bos_id] + text_ids[start:start + length - 1])
        else:
            seqs.append(rng.integers(0, n_vocab, size=length).tolist())
    return seqs


@dataclass
class _Linear:
    """One stored linear: its packed data, what it dequantizes to, and its residual."""
    ttype: int
    data: np.ndarray                  # u8, layout.h bytes (or the f16 matrix for F16)
    deq: np.ndarray                   # f32 [d_out, d_in]
    res_codes: np.ndarray | None = None   # i8 [d_out, d_in], -7..7
    res_scale: np.ndarray | None = None   # f16 [d_out]


def _quantize_linear(W: np.ndarray, ttype: int, with_residual: bool) -> _Linear:
    from . import quant
    from .types import TType
    if ttype == TType.F16:
        return _Linear(ttype, W.astype(np.float16), W)
    buf, W_deq = quant.quantize(W, ttype)
    lin = _Linear(ttype, np.asarray(buf, np.uint8), np.asarray(W_deq, np.float32))
    if with_residual:
        lin.res_codes, lin.res_scale = quant.quantize_residual(W - lin.deq)
    return lin


def _write_linear(writer, name: str, lin: _Linear, calib_x: np.ndarray | None):
    """name = "blk.{i}.{slot}"; calib_x = the linear's calibration inputs [n_tok, d_in]."""
    from . import quant
    from .types import TType
    d_out, d_in = lin.deq.shape
    if lin.ttype == TType.F16:
        writer.add_array(name + ".weight", lin.data)
    else:
        writer.add_tensor(name + ".weight", int(lin.ttype), [d_out, d_in], lin.data)
    if lin.res_codes is None:
        return
    writer.add_tensor(name + ".residual", int(TType.RES4), [d_in, d_out],
                      quant.pack_residual(lin.res_codes))
    writer.add_array(name + ".residual_scale", np.asarray(lin.res_scale, np.float16))
    writer.add_array(name + ".thresholds", np.asarray(quant.calibrate_thresholds(calib_x), np.float32))
    writer.add_array(name + ".ranking", np.asarray(quant.static_ranking(calib_x), np.int32))


def _check_options(tokenizer, bits, method, shape):
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: expected one of {sorted(SHAPES)}")
    if bits not in (16, 4, 3):
        raise ValueError(f"bits {bits}: expected 16, 4 or 3")
    if method not in ("rtn", "nonuniform"):
        raise ValueError(f"method {method!r}: expected rtn or nonuniform")
    if tokenizer not in ("bpe", "spm"):
        raise ValueError(f"tokenizer {tokenizer!r}: expected bpe or spm")
    if SHAPES[shape]["n_vocab"] is not None and tokenizer != "bpe":
        raise ValueError(f"shape {shape}: its {SHAPES[shape]['n_vocab']}-entry vocabulary needs "
                         "tokenizer bpe")


def make_tiny_model(path: str, tokenizer: str = "bpe", bits: int = 3, group_size: int | None = None,
                    method: str = "rtn", shape: str = "tiny", seed: int = 0, residual: bool = True,
                    margin: float = 1.0, progress: bool | None = None) -> dict:
    """Writes a random Llama-style model to `path`; returns its metadata.

    bits 16: f16 linears (quant.method none, no residual). bits 3/4: each linear quantized with
    `method` (rtn: uniform asymmetric, group `group_size`; nonuniform: per-row LUT), residual
    R = W - deq(Q(W)) stored as 4-bit codes (unless residual=False), thresholds and static
    ranking calibrated on the quantized model's own linear inputs. The FP weights depend only
    on (shape, tokenizer, seed, margin), so models differing only in bits share them."""
    from tqdm import tqdm
    from .ddrt import DdrtWriter
    from .reference import ReferenceModel
    from .tokenizer import Tokenizer
    from .types import TType, lut_type, tensor_bytes, uniform_type

    _check_options(tokenizer, bits, method, shape)
    cfg = SHAPES[shape]
    progress = (shape != "tiny") if progress is None else progress
    group = int(group_size or cfg["group_size"])
    quantized = bits != 16
    ttype = (uniform_type(bits, group) if method == "rtn" else lut_type(bits)) if quantized else TType.F16
    with_res = quantized and residual

    tok_meta = train_bpe(n_total=cfg["n_vocab"]) if tokenizer == "bpe" else train_spm()
    tok = Tokenizer.from_metadata(tok_meta)
    fp = random_weights(cfg, tok.n_vocab, seed, margin, progress)  # name -> f32

    label = f"{method}{bits}" + (f"-g{group}" if method == "rtn" else "") if quantized else "f16"
    meta = {**_config_metadata(cfg, tok.n_vocab, f"decdec-random-{shape}-{label}"), **tok_meta,
            "quant.method": method if quantized else "none",
            "quant.group_size": group if quantized and method == "rtn" else 0,
            "decdec.residual": with_res}
    linears = {name[: -len(".weight")]: _quantize_linear(W, ttype, with_res)
               for name, W in tqdm(fp.items(), desc="quantize", disable=not progress)
               if name.startswith("blk.") and W.ndim == 2}
    stored = sum(8 * tensor_bytes(lin.ttype, lin.deq.shape) for lin in linears.values())
    meta["quant.bits"] = stored / sum(lin.deq.size for lin in linears.values())

    calib = {}
    if with_res:
        arrays = {**{k: v for k, v in fp.items() if not k.startswith("blk.") or v.ndim == 1},
                  **{k + ".weight": lin.deq for k, lin in linears.items()}}
        ref = ReferenceModel.from_arrays(meta, arrays, dtype=np.float32)
        n_seq, length = cfg["calib"]
        seqs = _calibration_sequences(tok, tok.n_vocab, n_seq, length, seed)
        calib = ref.collect_inputs(tqdm(seqs, desc="calibrate", disable=not progress))
        meta["decdec.calib_tokens"] = sum(len(s) for s in seqs)

    writer = DdrtWriter(alignment=256)
    for k, v in meta.items():
        writer.add(k, v)
    for name, W in fp.items():
        lin_name = name[: -len(".weight")]
        if lin_name in linears:
            _write_linear(writer, lin_name, linears[lin_name], calib.get(lin_name))
        elif W.ndim == 1:
            writer.add_array(name, W.astype(np.float32))
        else:
            writer.add_array(name, W.astype(np.float16))
    writer.write(path)
    return meta

"""The user-facing Runtime: load a .ddrt model, tokenize, score, generate, set DecDEC."""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import _core
from .errors import ContextOverflowError, InvalidArgumentError
from .tokenizer import StreamDecoder, Tokenizer
from .types import KINDS, KV_CACHES

MODES = ("off", "exact", "approx", "static", "random")


def cuda_available() -> bool:
    """True when decdec_rt was built with CUDA and a GPU is visible."""
    return bool(_core.cuda_available())


def _ids_array(ids, n_vocab: int, what: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidArgumentError(f"{what} is empty: give at least one token")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(f"{what} must be integers, got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_vocab))
    if bad.size:
        i = int(bad[0])
        raise InvalidArgumentError(f"token id {int(arr[i])} at index {i} is outside the vocabulary [0, {n_vocab})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _k_chunk_list(k_chunk, what: str = "k_chunk", top: int = 1024) -> list[int]:
    """One int per linear kind (qkv, o, gate_up, down) from an int or a dict over the kinds."""
    if isinstance(k_chunk, dict):
        unknown = set(k_chunk) - set(KINDS)
        if unknown:
            raise InvalidArgumentError(f"{what} keys must be among {KINDS}, got {sorted(unknown)}")
        vals = [k_chunk.get(k, 0) for k in KINDS]
    else:
        vals = [k_chunk] * len(KINDS)
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidArgumentError(f"{what} must be an int or a dict of ints, got {v!r}")
        if not 0 <= int(v) <= top:
            raise InvalidArgumentError(f"{what} must be in 0..{top}, got {int(v)}")
        out.append(int(v))
    return out


def _emit_len(held: str, stops: list[str]) -> int:
    """How much of `held` can be emitted: all but the shortest tail that could still grow into
    a stop string."""
    longest = max((len(s) for s in stops), default=0)
    for i in range(max(0, len(held) - longest + 1), len(held)):
        if any(s.startswith(held[i:]) for s in stops):
            return i
    return len(held)


class Runtime:
    """A loaded model and one context.

    >>> rt = decdec_rt.Runtime("model.ddrt", device="cpu")
    >>> rt.generate("The capital of France is", max_new_tokens=16)
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", *, max_seq_len: int = 0,
                 residual: str = "host", verify_checksums: bool = True, n_threads: int = 0,
                 decdec: str = "auto", kv_cache: str = "f16"):
        """decdec: "auto" applies the DecDEC tuning stored in the file for this backend (rt.tune),
        if there is one; "off" ignores it. Either way rt.set_decdec() changes it later.
        kv_cache: "f16" stores keys and values rounded to float16 (half the memory and half the
        bytes a decode step reads per position); "f32" keeps them as computed."""
        if decdec not in ("auto", "off"):
            raise InvalidArgumentError(f'decdec must be "auto" or "off", got {decdec!r}')
        if kv_cache not in KV_CACHES:
            raise InvalidArgumentError(f'kv_cache must be "f16" or "f32", got {kv_cache!r}')
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file not found: {path}")
        if not isinstance(device, str):
            raise InvalidArgumentError(f"device must be a string like 'cpu' or 'cuda', got {device!r}")
        self.path = path
        self.device = device
        self.kv_cache = kv_cache
        self._engine = _core.Engine(path, device=device, max_seq_len=max_seq_len, residual=residual,
                                    verify_checksums=verify_checksums, n_threads=n_threads, kv_cache=kv_cache)
        self._file = _core.ModelFile(path, verify_checksums=False)
        self.metadata: dict = self._file.metadata
        self.config: dict = self._engine.config
        self.tokenizer = Tokenizer.from_metadata(self.metadata)
        self.last_stop_reason: str | None = None
        self.tuning: dict | None = None  # the tuning applied (stored or from rt.tune), if any
        if decdec == "auto":
            self._apply_stored_tuning()

    # ---- tokens ----
    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        if not isinstance(text, str):
            raise InvalidArgumentError(f"tokenize takes a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_bos=add_bos)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    @property
    def n_vocab(self) -> int:
        return self.config["n_vocab"]

    @property
    def max_seq_len(self) -> int:
        return self._engine.max_seq_len

    @property
    def backend(self) -> str:
        return self._engine.backend_name

    # ---- scoring ----
    def forward(self, ids: Sequence[int]) -> np.ndarray:
        """float32 logits [T, n_vocab] of `ids` in a fresh context."""
        arr = _ids_array(ids, self.n_vocab)
        self._check_fits(len(arr))
        self._engine.reset()
        return self._engine.forward(arr, True)

    def perplexity(self, text_or_ids: str | Sequence[int], context: int | None = None) -> float:
        """Perplexity over non-overlapping windows of `context` tokens (default: 512, or the
        context window when it is shorter). In each window every token after the first is
        predicted from its prefix; ppl = exp(total NLL / tokens scored). A list of ids is scored
        as given; text is tokenized as the model expects."""
        if context is None:
            context = min(512, self.max_seq_len)
        if isinstance(text_or_ids, str):
            if not text_or_ids:
                raise InvalidArgumentError("perplexity of an empty text")
            ids = self.tokenize(text_or_ids)
        else:
            ids = list(text_or_ids)
        arr = _ids_array(ids, self.n_vocab, "text_or_ids")
        if isinstance(context, bool) or not isinstance(context, int) or context < 2:
            raise InvalidArgumentError(f"context must be an int >= 2, got {context!r}")
        self._check_fits(context)
        total, scored = 0.0, 0
        for start in range(0, len(arr), context):
            win = arr[start:start + context]
            if len(win) < 2:
                continue
            total += self._engine.nll(win)
            scored += len(win) - 1
        if scored == 0:
            raise InvalidArgumentError("perplexity needs at least 2 tokens")
        return math.exp(total / scored)

    # ---- DecDEC ----
    def set_decdec(self, mode: str, k_chunk: int | dict = 8, seed: int = 0, n_tb: int | dict = 0) -> None:
        """mode: "off" | "exact" | "approx" | "static" | "random"; k_chunk: channels per 1024 input
        channels, one int for every linear or a dict over qkv, o, gate_up, down. n_tb: blocks given
        to the compensation on the GPU (0: default; speed only, same numbers), same forms."""
        if mode not in MODES:
            raise InvalidArgumentError(f"DecDEC mode must be one of {MODES}, got {mode!r}")
        self._engine.set_decdec(mode, _k_chunk_list(k_chunk), int(seed), _k_chunk_list(n_tb, "n_tb", 1024))

    def tune(self, target_slowdown: float = 0.025, save: bool = True, mode: str = "approx",
             progress: bool = True, **options) -> dict:
        """Measures DecDEC on this backend and sets the k_chunk / n_tb per linear kind giving the
        most compensation within `target_slowdown` (0.025: decode at most 2.5 % slower than with
        DecDEC off); see docs/tuning.md. save=True stores the result in the model file under this
        GPU's name (decdec.tune.<name>), applied by every later Runtime on the same GPU. The
        context is reset. options: passed to decdec_rt.tune.tune. Returns the tuner's dict."""
        from . import tune as tuner
        result = tuner.tune(self._engine, target_slowdown, mode, progress=progress, **options)
        self.tuning = result
        if save:
            from .ddrt import update_metadata
            key = tuner.tune_key(self.backend)
            how = update_metadata(self.path, {key: json.dumps(result, separators=(",", ":"))}, progress=progress)
            result["saved"] = {"path": self.path, "key": key, "how": how}
            self._file = _core.ModelFile(self.path, verify_checksums=False)
            self.metadata = self._file.metadata
        return result

    def _apply_stored_tuning(self) -> None:
        """Sets DecDEC from the file's decdec.tune.<this backend> entry, if any. An entry that
        does not apply (bad JSON, a model without residuals) is skipped with a warning."""
        from .tune import tune_key
        raw = self.metadata.get(tune_key(self.backend))
        if raw is None:
            return
        try:
            t = json.loads(raw)
            if t["mode"] != "off":
                self.set_decdec(t["mode"], t["k_chunk"], 0, t.get("n_tb", 0))
            self.tuning = t
        except (ValueError, KeyError, TypeError) as e:
            warnings.warn(f"{self.path}: stored DecDEC tuning {tune_key(self.backend)} not applied: {e}")

    @property
    def decdec(self) -> dict:
        return {"mode": self._engine.decdec_mode,
                "k_chunk": dict(zip(KINDS, self._engine.decdec_k_chunk)),
                "n_tb": dict(zip(KINDS, self._engine.decdec_n_tb)),
                "pcie_bytes_per_token": self._engine.decdec_bytes_per_token,
                "device_bytes": self._engine.decdec_device_bytes}

    # ---- generation ----
    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop: str | Iterable[str] | None = None,
                 stream: bool = False):
        """Completes `prompt`. Returns the new text, or an iterator of text pieces when
        stream=True. Stops at max_new_tokens, the end-of-sequence token, a `stop` string (not
        included in the output) or the end of the context window (rt.last_stop_reason says which)."""
        ids = self._prompt_ids(prompt)
        self._check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        self._check_fits(len(ids))
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if any(not isinstance(s, str) or not s for s in stops):
            raise InvalidArgumentError("stop must be a non-empty string or a list of non-empty strings")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        it = self._generate(ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty, int(seed), stops)
        return it if stream else "".join(it)

    def _generate(self, ids, max_new_tokens, temperature, top_k, top_p, rep, seed, stops) -> Iterator[str]:
        sampler = _core.Sampler(seed & 0xFFFFFFFFFFFFFFFF)
        dec = StreamDecoder(self.tokenizer, continuation=True)
        self._engine.reset()
        self.last_stop_reason = "length"
        held = ""  # text not yet emitted because it may begin a stop string
        feed = ids
        for _ in range(max_new_tokens):
            tok = self._engine.next_token(feed, sampler, temperature, top_k, top_p, rep)
            if tok == self.tokenizer.eos_id:
                self.last_stop_reason = "eos"
                break
            held += dec.put(tok)
            cut = min((held.find(s) for s in stops if s in held), default=-1)
            if cut >= 0:
                if cut:
                    yield held[:cut]
                self.last_stop_reason = "stop"
                return
            safe = _emit_len(held, stops)
            if safe > 0:
                yield held[:safe]
                held = held[safe:]
            if self._engine.pos + 1 > self.max_seq_len:
                self.last_stop_reason = "context"
                break
            feed = np.array([tok], dtype=np.int32)
        held += dec.flush()
        if held:
            yield held

    def _prompt_ids(self, prompt) -> np.ndarray:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidArgumentError("prompt is empty: give some text (or token ids)")
            return _ids_array(self.tokenize(prompt), self.n_vocab, "prompt")
        return _ids_array(list(prompt), self.n_vocab, "prompt")

    def _check_fits(self, n: int) -> None:
        if n > self.max_seq_len:
            raise ContextOverflowError(f"context overflow: {n} tokens exceed the context window of "
                                       f"{self.max_seq_len} tokens")

    @staticmethod
    def _check_sampling(max_new_tokens, temperature, top_k, top_p, rep) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise InvalidArgumentError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise InvalidArgumentError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(f"top_k must be an int >= 0, got {top_k!r}")
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p!r}")
        if not (isinstance(rep, (int, float)) and math.isfinite(rep) and rep > 0):
            raise InvalidArgumentError(f"repetition_penalty must be a number > 0, got {rep!r}")

    def __repr__(self) -> str:
        c = self.config
        return (f"Runtime({self.path!r}, device={self.device!r}: {c['n_layers']} layers, dim {c['dim']}, "
                f"vocab {c['n_vocab']}, {self.kv_cache} KV cache, backend {self.backend})")

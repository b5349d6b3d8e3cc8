"""The DecDEC tuner: per linear kind (qkv, o, gate_up, down), the k_chunk and n_tb that give the
most compensation while decoding stays within a target slowdown, measured on the engine's own
backend (docs/tuning.md).

    from decdec_rt.tune import tune
    r = tune(engine, target_slowdown=0.025)   # -> {"k_chunk": {...}, "n_tb": {...}, ...}

Steps:
1. Sweep. Per kind, with the other kinds off: n_tb over `n_tb_values` at the smallest and at a
   middle k_chunk (on the H100 the best n_tb differs: few rows hide best beside more base blocks),
   then k_chunk over `k_values` (ascending), each with the best `n_tb_keep` n_tb values of the
   nearer of the two sweeps; a kind's sweep stops once its cost exceeds twice the whole budget.
   cost = step time - base step time (DecDEC off; the base is measured before and after every
   kind and the kind's costs taken against their mean, so drift is not cost).
2. Choice. Costs are fitted monotone in k (least squares: a larger k never counts as cheaper than
   a smaller one, and one noisy reading is pooled with its neighbours) and the exhaustive search over the measured k of the four kinds picks the set with the most
   residual bytes fetched per token (the compensated share of the weights) whose summed cost fits
   target_slowdown * base.
3. Verify. All chosen kinds on at once, `verify_pairs` interleaved base/config measurements;
   slowdown = median(config) / median(base) - 1. While it exceeds the target, step down: the best
   set with less compensation within the budget scaled by target / measured slowdown. A setting
   never verified within the target is not returned (everything off instead).

Times are of greedy decode steps from a near-empty context (the DecDEC cost does not depend on
the context, the base step time grows with it: the slowdown at long contexts is smaller).
"""
from __future__ import annotations

import itertools
import re
import statistics
import time
from typing import Callable, Sequence

from .bench import _linear_shapes
from .errors import InvalidArgumentError
from .quant import total_k
from .types import KINDS, SLOT_KIND, res_row_bytes

K_VALUES = (1, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32)
N_TB_VALUES = (8, 16, 32, 64, 128)  # blocks given to the compensation (the GPU default is 32)
KEY_PREFIX = "decdec.tune."
FORMAT_VERSION = 1
TUNABLE_MODES = ("exact", "approx", "static", "random")

# measure(k_chunk, n_tb) -> milliseconds per decode step; both are 4-tuples in KINDS order and
# k_chunk all zero means DecDEC off (the base).
Measure = Callable[[tuple, tuple], float]
OFF = (0,) * len(KINDS)


def tune_key(backend_name: str) -> str:
    """The metadata key of a tuning for this backend: `decdec.tune.` + the GPU's model name
    (without the device index: "cuda:1 (NVIDIA H100 80GB HBM3)" -> "nvidia_h100_80gb_hbm3"), or of
    the whole backend name otherwise ("cpu (8 threads)" -> "cpu_8_threads"), in [a-z0-9_]."""
    m = re.fullmatch(r"cuda:\d+ \((.*)\)", backend_name.strip())
    name = m.group(1) if m else backend_name
    return KEY_PREFIX + (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unknown")


def residual_bytes(config: dict, kind: str, k_chunk: int) -> int:
    """Residual bytes one decode token fetches for the linears of `kind` at k_chunk."""
    shapes = _linear_shapes(config)
    per_layer = sum(total_k(k_chunk, d_in) * res_row_bytes(d_out)
                    for slot, (d_out, d_in) in shapes.items() if SLOT_KIND[slot] == kind)
    return config["n_layers"] * per_layer


def _one_kind(kind: str, value: int) -> tuple:
    return tuple(value if k == kind else 0 for k in KINDS)


class DecodeTimer:
    """The default measure: milliseconds per greedy decode step on the engine's backend.

    Each call sets DecDEC, resets the context, decodes `warmup` steps (this records the decode
    graph on CUDA), then times `blocks` runs of `n_tokens` steps and returns the median."""

    def __init__(self, engine, mode: str, n_tokens: int = 16, blocks: int = 3, warmup: int = 4, seed: int = 0):
        self.engine, self.mode, self.seed = engine, mode, seed
        self.warmup = warmup
        room = engine.max_seq_len - 1 - warmup
        self.blocks = max(1, min(blocks, room // max(1, n_tokens)))
        self.n_tokens = max(1, min(n_tokens, room // self.blocks))
        if room < 1:
            raise InvalidArgumentError(f"tuning needs a context of at least {warmup + 2} tokens, "
                                       f"the engine has {engine.max_seq_len}")

    def __call__(self, k_chunk, n_tb) -> float:
        e = self.engine
        e.set_decdec(self.mode if any(k_chunk) else "off", list(k_chunk), self.seed, list(n_tb))
        e.reset()
        e.decode_greedy(1, self.warmup)
        e.synchronize()
        times = []
        for _ in range(self.blocks):
            t0 = time.perf_counter()
            e.decode_greedy(1, self.n_tokens)
            e.synchronize()
            times.append((time.perf_counter() - t0) / self.n_tokens)
        return 1000.0 * statistics.median(times)


def choose(costs: dict, values: dict, budget: float, below: float = float("inf")) -> dict:
    """The k_chunk per kind with the largest summed value whose summed cost is at most `budget`
    and whose value is below `below`; k_chunk 0 (cost 0, value 0) is always an option. costs and
    values: {kind: {k_chunk: number}}. Ties: the lower cost, then the smaller k_chunks."""
    options = [[(0, 0.0, 0)] + sorted((k, c, values[kind][k]) for k, c in costs.get(kind, {}).items())
               for kind in KINDS]
    best, best_key = OFF, None
    for combo in itertools.product(*options):
        cost = sum(o[1] for o in combo)
        value = sum(o[2] for o in combo)
        if cost > budget or value >= below:
            continue
        key = (-value, cost, tuple(o[0] for o in combo))
        if best_key is None or key < best_key:
            best, best_key = tuple(o[0] for o in combo), key
    return dict(zip(KINDS, best))


def isotonic(values: Sequence[float]) -> list[float]:
    """The non-decreasing sequence nearest to `values` in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks[-2], blocks[-1]
            blocks[-2:] = [[(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2]]
    return [m for m, n in blocks for _ in range(int(n))]


def monotone_costs(table: dict, base_ms) -> dict:
    """{kind: {k: cost_ms}} from the sweep table {kind: {k: (ms, n_tb)}}: ms - base (base_ms: one
    number, or {kind: base} measured around that kind's sweep), fitted non-decreasing in k by
    least squares and at least 0. More compensation does not cost less; the fit pools a noisy
    measurement with its neighbours instead of letting one high reading lift every larger k."""
    out = {}
    for kind, row in table.items():
        base = base_ms[kind] if isinstance(base_ms, dict) else base_ms
        ks = sorted(row)
        fit = isotonic([row[k][0] - base for k in ks])
        out[kind] = {k: max(0.0, c) for k, c in zip(ks, fit)}
    return out


class _Budget:
    """Counts measurements on a progress bar and keeps the time guard."""

    def __init__(self, measure: Measure, total: int, time_budget: float, progress: bool):
        from tqdm import tqdm
        self.measure, self.time_budget, self.t0 = measure, time_budget, time.perf_counter()
        self.bar = tqdm(total=total, desc="tune", unit="run", disable=not progress, leave=False)
        self.count = 0

    def __call__(self, k_chunk: tuple, n_tb: tuple, note: str) -> float:
        self.bar.set_postfix_str(note, refresh=False)
        ms = float(self.measure(tuple(k_chunk), tuple(n_tb)))
        self.count += 1
        self.bar.update(1)
        return ms

    def add(self, n: int) -> None:
        self.bar.total += n
        self.bar.refresh()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over(self, share: float = 1.0) -> bool:
        return self.elapsed() > share * self.time_budget


def _sweep(run: _Budget, k_values, n_tb_values, n_tb_keep: int, target: float, bases: list,
           kind_bases: dict) -> dict:
    """{kind: {k: (best ms, its n_tb)}}; measures the base before and after each kind (appended to
    `bases`; their mean in kind_bases[kind]: the kind's costs are taken against it, so a slow drift
    of the GPU's speed during the sweep does not count as cost)."""
    table = {}
    k_mid = k_values[len(k_values) // 2]
    for kind in KINDS:
        if run.over(0.75):
            break
        bases.append(run(OFF, OFF, f"{kind} base"))
        limit = statistics.median(bases) * (1 + 2 * target)  # beyond twice the budget: stop
        keeps, row = {}, {}
        for k_s in dict.fromkeys((k_values[0], k_mid)):  # the n_tb sweeps
            by_ntb = {n: run(_one_kind(kind, k_s), _one_kind(kind, n), f"{kind} k={k_s} n_tb={n}")
                      for n in n_tb_values}
            keeps[k_s] = sorted(by_ntb, key=by_ntb.get)[:n_tb_keep]
            row[k_s] = min((by_ntb[n], n) for n in keeps[k_s])
        for k in k_values:
            if k not in row:
                keep = keeps[k_values[0] if k < k_mid else k_mid]
                row[k] = min((run(_one_kind(kind, k), _one_kind(kind, n), f"{kind} k={k} n_tb={n}"), n)
                             for n in keep)
            if row[k][0] > limit or run.over(0.75):
                break
        run.add(-(len(k_values) - len(row)) * n_tb_keep)
        row = dict(sorted(row.items()))
        table[kind] = row
        bases.append(run(OFF, OFF, f"{kind} base after"))
        kind_bases[kind] = (bases[-2] + bases[-1]) / 2
    return table


def _verify(run: _Budget, k_chunk: tuple, n_tb: tuple, pairs: int) -> tuple[float, float]:
    """(median base ms, median config ms) of `pairs` interleaved measurements."""
    base, conf = [], []
    for i in range(pairs):
        base.append(run(OFF, OFF, f"verify base {i + 1}/{pairs}"))
        conf.append(run(k_chunk, n_tb, f"verify {i + 1}/{pairs}"))
    return statistics.median(base), statistics.median(conf)


def tune(engine, target_slowdown: float = 0.025, mode: str = "approx", *, measure: Measure | None = None,
         k_values: Sequence[int] = K_VALUES, n_tb_values: Sequence[int] = N_TB_VALUES, n_tb_keep: int = 2,
         verify_pairs: int = 5, max_verify: int = 6, time_budget: float = 50.0, progress: bool = True,
         seed: int = 0) -> dict:
    """Tunes DecDEC on `engine` (a decdec_rt._core.Engine, or anything with its config,
    backend_name and set_decdec) for `target_slowdown` (0.025 = decode at most 2.5 % slower than
    with DecDEC off). measure: see Measure (default: DecodeTimer on the engine). Leaves the
    engine set to the result and its context reset. Returns a dict (see docs/tuning.md)."""
    if mode not in TUNABLE_MODES:
        raise InvalidArgumentError(f"tune: mode must be one of {TUNABLE_MODES}, got {mode!r}")
    if isinstance(target_slowdown, bool) or not isinstance(target_slowdown, (int, float)) \
            or not 0 < target_slowdown <= 1:
        raise InvalidArgumentError(f"tune: target_slowdown must be in (0, 1] (0.025 = 2.5 %), got {target_slowdown!r}")
    k_values = sorted({int(k) for k in k_values})
    n_tb_values = list(dict.fromkeys(int(n) for n in n_tb_values))
    if not k_values or k_values[0] < 1 or k_values[-1] > 1024 or not n_tb_values \
            or min(n_tb_values) < 0 or max(n_tb_values) > 1024 or n_tb_keep < 1 or verify_pairs < 1:
        raise InvalidArgumentError("tune: k_values in 1..1024, n_tb_values in 0..1024 (both non-empty), "
                                   "n_tb_keep >= 1 and verify_pairs >= 1")
    # the engine's own error (no residuals, no thresholds) before any measuring
    engine.set_decdec(mode, [1] * len(KINDS), seed, [0] * len(KINDS))
    engine.set_decdec("off", [0] * len(KINDS), seed, [0] * len(KINDS))
    measure = measure or DecodeTimer(engine, mode, seed=seed)
    keep = min(n_tb_keep, len(n_tb_values))
    n_sweeps = len({k_values[0], k_values[len(k_values) // 2]})
    run = _Budget(measure, 1 + len(KINDS) * (2 + n_sweeps * len(n_tb_values) + (len(k_values) - n_sweeps) * keep)
                  + 2 * verify_pairs,
                  time_budget, progress)
    try:
        run(OFF, OFF, "warm-up")  # the first decode after loading runs slower (measured ~1 %): not a base
        bases: list[float] = []
        kind_bases: dict = {}
        table = _sweep(run, k_values, n_tb_values, keep, target_slowdown, bases, kind_bases)
        base_ms = statistics.median(bases)
        costs = monotone_costs(table, kind_bases)
        values = {kind: {k: residual_bytes(engine.config, kind, k) for k in row} for kind, row in costs.items()}
        budget = target_slowdown * base_ms
        pick = choose(costs, values, budget)
        history = []
        result_k, result = OFF, (base_ms, base_ms)
        for attempt in range(max_verify):
            k_chunk = tuple(pick[kind] for kind in KINDS)
            if k_chunk == OFF or (attempt and run.over()):
                break
            n_tb = tuple(table[kind][pick[kind]][1] if pick[kind] else 0 for kind in KINDS)
            if attempt:
                run.add(2 * verify_pairs)
            b, c = _verify(run, k_chunk, n_tb, verify_pairs)
            slow = c / b - 1
            predicted = sum(costs[kind][pick[kind]] for kind in KINDS if pick[kind])
            history.append({"k_chunk": dict(zip(KINDS, k_chunk)), "n_tb": dict(zip(KINDS, n_tb)),
                            "predicted_slowdown": predicted / base_ms, "measured_slowdown": slow})
            if slow <= target_slowdown:
                result_k, result = k_chunk, (b, c)
                break
            value = sum(values[kind][pick[kind]] for kind in KINDS if pick[kind])
            budget = min(budget, predicted * target_slowdown / slow)
            pick = choose(costs, values, budget, below=value)
    finally:
        run.bar.close()
    n_tb = tuple(table[kind][k][1] if k else 0 for kind, k in zip(KINDS, result_k))
    engine.set_decdec(mode if any(result_k) else "off", list(result_k), seed, list(n_tb))
    engine.reset()
    return {
        "version": FORMAT_VERSION,
        "backend": engine.backend_name,
        "mode": mode if any(result_k) else "off",
        "target": float(target_slowdown),
        "k_chunk": dict(zip(KINDS, result_k)),
        "n_tb": dict(zip(KINDS, n_tb)),
        "base_ms": result[0],
        "tuned_ms": result[1],
        "measured_slowdown": result[1] / result[0] - 1,
        "residual_bytes_per_token": sum(residual_bytes(engine.config, kind, k) for kind, k in zip(KINDS, result_k)),
        # per kind: [k_chunk, n_tb, ms per step, cost as a share of the sweep base]
        "costs": {kind: [[k, n, ms, max(0.0, ms / kind_bases[kind] - 1)] for k, (ms, n) in sorted(row.items())]
                  for kind, row in table.items()},
        "kind_base_ms": kind_bases,
        "sweep_base_ms": base_ms,
        "verify": history,
        "measurements": run.count,
        "seconds": run.elapsed(),
    }

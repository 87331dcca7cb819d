"""Timing shared by the SDPA peer and in-process bar scripts: median of CUDA-graph replays, as our benchmarks time."""
import math
import time

import torch


def timed(fn, reps=11, inner=20, warm=0.0):
    """Median milliseconds per call of fn over `reps` replays of a graph holding `inner` calls,
    after `warm` seconds of replays (steady clocks: see cuda_prefill_bench --warm)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warm:
        graph.replay()
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    times.sort()
    return times[len(times) // 2]


def in_turn(cases, rounds, time_one):
    """Times each (name, fn) of `cases` once per round with time_one(fn) (milliseconds), the order
    rotated by one case every round and reversed every other round, so that no case always
    follows another; prints each round. Returns {name: [ms of each round]}."""
    ms = {name: [] for name, _ in cases}
    for r in range(rounds):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        if r % 2:
            order = order[::-1]
        for name, fn in order:
            ms[name].append(time_one(fn))
        print(f"round {r}: " + " | ".join(f"{name} {ms[name][r]:.4f} ms" for name, _ in cases), flush=True)
    return ms


def scale_factor_for_sparsity(target, a_lo, a_hi, sparsity_at):
    """The benchmarks' bisection (bench/sparsity_search.hpp): 14 steps on log a over [a_lo, a_hi]
    for the scale factor whose tile sparsity (non-decreasing in a) is `target`; the upper end."""
    lo, hi = math.log(a_lo), math.log(a_hi)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        if sparsity_at(math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)

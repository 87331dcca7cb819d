"""Timing shared by the SDPA peer scripts: median of CUDA-graph replays, as our benchmarks time."""
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

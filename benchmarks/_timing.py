"""Interleaved twin timing: the only fair comparison on a noisy, shared machine."""

import statistics
import time


def interleaved_median(fns, repeats=15, iters=5, warmup=3):
    """Median seconds per call of each function in `fns` (a dict name -> zero-arg callable).

    Each repeat times every function once (`iters` calls), alternating the order between repeats,
    so slow phases of the machine hit all twins alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            for _ in range(iters):
                fns[name]()
            samples[name].append((time.perf_counter() - start) / iters)
    return {name: statistics.median(s) for name, s in samples.items()}

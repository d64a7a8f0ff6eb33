"""Interleaved twin timing: the only fair comparison on a noisy, shared machine."""

import statistics
import time

import numpy as np
import tensorflow as tf


def _wait(out):
    """Blocks until `out` is computed: TF ops on a GPU return before they finish."""
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)


def interleaved_samples(fns, repeats=15, iters=1, warmup=3, block=1):
    """Seconds per call of each function in `fns` (a dict name -> zero-arg callable), per sample.

    Each repeat times every function `block` times in a row (each sample `iters` calls,
    averaged), alternating the order between repeats, so slow phases of the machine hit all
    twins alike. block > 1 is what a server sees (one runtime's calls back to back), still
    twinned in one process: calls interleaved one by one also time the other runtimes' cache
    and thread-pool churn (a TF call right after OpenCV's or LiteRT's re-warms its own).
    """
    for fn in fns.values():
        for _ in range(warmup):
            _wait(fn())
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            for _ in range(block):
                start = time.perf_counter()
                for _ in range(iters):
                    _wait(fns[name]())
                samples[name].append((time.perf_counter() - start) / iters)
    return samples


def interleaved_median(fns, repeats=15, iters=5, warmup=3):
    """Median seconds per call of each function (see `interleaved_samples`)."""
    samples = interleaved_samples(fns, repeats, iters, warmup)
    return {name: statistics.median(s) for name, s in samples.items()}


def percentiles_ms(seconds, qs=(50, 90)):
    """{"p50_ms": ..., "p90_ms": ...} of a list of seconds."""
    return {f"p{q}_ms": round(float(np.percentile(seconds, q)) * 1e3, 2) for q in qs}

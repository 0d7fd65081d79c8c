"""The mel-CNN's CPU kernels besides its convolutions, compiled by numba: one pass each over
the strip of packed clips, parallel over equal chunks of it. A clip may straddle two chunks,
so each chunk sums into its own partial rows, which the caller adds up (a few KB). The
backward passes sum into a local row per chunk and store it once: summing straight into the
shared rows kept the compiler from vectorising the pass (1.4-1.7x slower).

Imported on a model's first forward, not with the package: numba's import costs ~0.2 s that
`emo --help` should not pay. `cache=True` keeps the compiled code on disk (numba's cache, next
to this file or in the user's cache folder), so only the first run on a machine compiles.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import prange

NEITHER, FIRST, SECOND = 0, 1, 2  # which frame of a pool pair won: where its gradient goes


@numba.njit(parallel=True, cache=True, nogil=True)
def pool_sums(pairs, owner, partial, won, keep):
    """pairs [P, 2, C] (non-negative), owner [P] -> partial[k, owner] += max of each pair over
    chunk k's positions, and won[p, c] = which frame of the pair holds that max (ties: the
    first), when `keep`."""
    positions, _, channels = pairs.shape
    chunks = partial.shape[0]
    nobody = partial.shape[1] - 1
    for k in prange(chunks):
        for p in range(k * positions // chunks, (k + 1) * positions // chunks):
            clip = owner[p]
            for c in range(channels):
                first, second = pairs[p, 0, c], pairs[p, 1, c]
                if second > first:
                    best, code = second, SECOND
                elif first > 0:
                    best, code = first, FIRST
                else:
                    best, code = first, NEITHER
                if clip != nobody:
                    partial[k, clip, c] += best
                if keep:
                    won[p, c] = code


@numba.njit(parallel=True, cache=True, nogil=True)
def route(per_clip, owner, won, grad, bias_partial):
    """grad[p, k, c] = per_clip[owner[p], c] where frame k of the pair won, else 0;
    bias_partial[chunk, c] = the chunk's sum of grad (the bias gradient, summed by the caller)."""
    positions, channels = won.shape
    chunks = bias_partial.shape[0]
    for k in prange(chunks):
        total = np.zeros(channels, dtype=bias_partial.dtype)  # the chunk's own: no store through to a shared row
        for p in range(k * positions // chunks, (k + 1) * positions // chunks):
            clip = owner[p]
            for c in range(channels):
                g, code = per_clip[clip, c], won[p, c]
                grad[p, 0, c] = g if code == FIRST else 0.0
                grad[p, 1, c] = g if code == SECOND else 0.0
                total[c] += g if code != NEITHER else 0.0
        bias_partial[k] = total


@numba.njit(parallel=True, cache=True, nogil=True)
def relu_backward(grad, hidden, bias_partial):
    """grad [N, C] *= (hidden > 0), in place; bias_partial[chunk, c] = the chunk's sum of the result."""
    positions, channels = grad.shape
    chunks = bias_partial.shape[0]
    for k in prange(chunks):
        total = np.zeros(channels, dtype=bias_partial.dtype)
        for p in range(k * positions // chunks, (k + 1) * positions // chunks):
            for c in range(channels):
                g = grad[p, c] if hidden[p, c] > 0 else 0.0
                grad[p, c] = g
                total[c] += g
        bias_partial[k] = total


# .threads: what use_threads last set on this thread (asking numba on every call cost ~0.1 ms a step)
_set = threading.local()


def use_threads(threads: int) -> None:
    """Run the parallel loops on `threads` threads (at most numba's pool), set only on change:
    numba keeps the count per calling thread, and so does this."""
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    if getattr(_set, "threads", None) != threads:
        numba.set_num_threads(threads)
        _set.threads = threads

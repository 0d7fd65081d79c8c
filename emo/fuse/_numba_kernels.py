"""The mel-CNN's CPU kernels besides its convolutions, compiled by numba: one pass each over
the packed rows, parallel over rows (a clip never spans two rows, so no two threads write to
one clip's sums).

Imported on a model's first forward, not with the package: numba's import costs ~0.2 s that
`emo --help` should not pay. `cache=True` keeps the compiled code on disk (numba's cache, next
to this file or in the user's cache folder), so only the first run on a machine compiles.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

NEITHER, FIRST, SECOND = 0, 1, 2  # which frame of a pool pair won: where its gradient goes


@numba.njit(cache=True, nogil=True)
def first_fit_decreasing(need, width):
    """Rows of `width` frames for clips of `need` frames: longest first, each into the first
    row with room. Returns (row, offset) per clip and the number of rows."""
    count = need.shape[0]
    row = np.zeros(count, dtype=np.int64)
    offset = np.zeros(count, dtype=np.int64)
    free = np.zeros(count, dtype=np.int64)  # room left per row; at most one row per clip
    rows = 0
    for clip in np.argsort(-need, kind="mergesort"):  # stable: equal lengths keep their order
        target = rows
        for candidate in range(rows):
            if free[candidate] >= need[clip]:
                target = candidate
                break
        if target == rows:
            free[rows] = width
            rows += 1
        row[clip] = target
        offset[clip] = width - free[target]
        free[target] -= need[clip]
    return row, offset, rows


@numba.njit(parallel=True, cache=True, nogil=True)
def pool_sums(pairs, owner, sums, won, keep):
    """pairs [R, H, 2, C] (non-negative), owner [R*H] -> sums[owner] += max of each pair, and
    won[r, h, c] = which frame of the pair holds that max (ties: the first), when `keep`."""
    rows, half, _, channels = pairs.shape
    nobody = sums.shape[0] - 1
    for r in prange(rows):
        for h in range(half):
            clip = owner[r * half + h]
            for c in range(channels):
                first, second = pairs[r, h, 0, c], pairs[r, h, 1, c]
                if second > first:
                    best, code = second, SECOND
                elif first > 0:
                    best, code = first, FIRST
                else:
                    best, code = first, NEITHER
                if clip != nobody:
                    sums[clip, c] += best
                if keep:
                    won[r, h, c] = code


@numba.njit(parallel=True, cache=True, nogil=True)
def route(per_clip, owner, won, grad, bias_rows):
    """grad[r, h, k, c] = per_clip[owner[r*H + h], c] where frame k of the pair won, else 0;
    bias_rows[r, c] = row r's sum of grad (the bias gradient, summed over rows by the caller)."""
    rows, half, channels = won.shape
    for r in prange(rows):
        for h in range(half):
            clip = owner[r * half + h]
            for c in range(channels):
                g, code = per_clip[clip, c], won[r, h, c]
                grad[r, h, 0, c] = g if code == FIRST else 0.0
                grad[r, h, 1, c] = g if code == SECOND else 0.0
                bias_rows[r, c] += g if code != NEITHER else 0.0


@numba.njit(parallel=True, cache=True, nogil=True)
def relu_backward(grad, hidden, bias_rows):
    """grad [R, W, C] *= (hidden > 0), in place; bias_rows[r, c] = row r's sum of the result."""
    rows, width, channels = grad.shape
    for r in prange(rows):
        for w in range(width):
            for c in range(channels):
                g = grad[r, w, c] if hidden[r, w, c] > 0 else 0.0
                grad[r, w, c] = g
                bias_rows[r, c] += g


def use_threads(threads: int) -> None:
    """Run the parallel loops on `threads` threads (at most numba's pool), set only on change."""
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)

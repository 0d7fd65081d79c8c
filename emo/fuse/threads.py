"""Intra-op threads for a fit on CPU: one for the many small kernels, all for the large ones.

A head's step is hundreds of kernels of a few microseconds (linear layers over 32-64 rows,
a GRU turn, batch norm, the optimiser) and a few of milliseconds (the mel CNN's
convolutions). `emo` sets OMP_WAIT_POLICY=PASSIVE (see emo/__init__.py: spinning threads
starve the other processes on a shared CPU), so every multi-threaded kernel first wakes
its sleeping threads: a [7, 128] x [128, 384] matmul measured 75 us on 2 threads against
7 us on one, and a whole utterance-only epoch without mel ran twice as fast on one thread.

So inside `small_kernels()` torch runs on one thread, and code that launches large kernels
(`emo.fuse.mel_cnn`) wraps them in `large_kernels()`, which restores the thread count the
fit was given for their duration. Both are no-ops for a GPU model, and nest safely.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_state = threading.local()  # .wide: the thread count large kernels get inside small_kernels()


@contextlib.contextmanager
def small_kernels(device: torch.device | str = "cpu"):
    """One intra-op thread for the enclosed CPU work, except `large_kernels()` blocks."""
    wide = torch.get_num_threads()
    if torch.device(device).type != "cpu" or getattr(_state, "wide", None) is not None or wide == 1:
        yield
        return
    _state.wide = wide
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(wide)
        _state.wide = None


@contextlib.contextmanager
def large_kernels():
    """All the fit's threads for the enclosed kernels, when inside `small_kernels()`."""
    wide = getattr(_state, "wide", None)
    if wide is None or torch.get_num_threads() == wide:
        yield
        return
    narrow = torch.get_num_threads()
    torch.set_num_threads(wide)
    try:
        yield
    finally:
        torch.set_num_threads(narrow)


@contextlib.contextmanager
def one_thread():
    """One thread for the enclosed kernels wherever they run (e.g. a GRU's turns at predict
    time, outside a fit's `small_kernels()`), then torch's thread count as it was."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

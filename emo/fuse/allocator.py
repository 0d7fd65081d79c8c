"""Keep a CPU fit's freed activation memory in the process between steps.

A training step allocates and frees the same few tens of MB of activations every step.
glibc's malloc serves a block above its mmap threshold with a fresh `mmap` and unmaps it on
`free` (the threshold adapts, but freeing smaller blocks resets it), and it hands a free heap
top beyond its trim threshold back to the kernel. Either way the next step touches fresh
pages: ~600 page faults a step, each a kernel trap plus a zeroed page, about 1 ms of a
13 ms mel-CNN step (bench/mel_cnn_options.py measured it). Fixed thresholds (mmap only above
32 MiB, trim only beyond 256 MiB) keep those pages mapped from one step to the next.

The price: the process may keep up to 256 MiB of freed memory it would otherwise return.
Outside glibc (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers
MMAP_ABOVE = 32 << 20  # glibc's ceiling for this setting on 64-bit
TRIM_BEYOND = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; False where they cannot be set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BEYOND))

"""The decoding worker processes, and the window of clips they prepare ahead of the encoders.

Decoding, frame resizing and mel spectrograms are CPU work that needs no torch, so they
run in `workers` spawned processes while the main process runs the batched encoder
passes; `Prefetcher` keeps a bounded window of clips in flight and hands them back in
row order, whatever order the workers finish in, so results never depend on timing.

How the workers behave when the run ends badly:
- Ctrl-C. A terminal sends SIGINT to the whole foreground process group, workers
  included. Workers ignore it - they are even started with SIGINT ignored, so one that is
  still importing cannot print a KeyboardInterrupt traceback - and the main process, which
  gets the KeyboardInterrupt, shuts them down.
- The main process killed outright (SIGKILL, the OOM killer). Nothing of it runs, so each
  worker asks the kernel to kill it when its parent dies (Linux `PR_SET_PDEATHSIG`), checks
  that the parent did not die before that request, and keeps a watchdog thread that exits
  when the parent is gone (other systems). No orphan keeps decoding after its run died.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Iterable, Iterator

import numpy as np

from emo.extract.media.mel import MelParams, mel_views
from emo.extract.pipeline.prepare import ClipJob, PreparedClip, prepare_clip

PARENT_CHECK_S = 1.0  # how often a worker's watchdog looks for its parent
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def worker_init(parent_pid: int) -> None:
    """Runs first in every worker: ignore Ctrl-C, die with the parent, one BLAS thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the kernel could be told
        os._exit(0)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="emo-parent-watch", daemon=True).start()
    try:
        # The parallelism is across processes; more BLAS/OpenMP threads only oversubscribe.
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # optional: only oversubscription is at stake
        pass


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def warm_up(params: MelParams | None = None) -> float:
    """Pay the one-off costs (PyAV import, librosa's numba compile/cache load) up front, while
    the main process is still loading encoders, instead of on the first clip."""
    started = time.perf_counter()
    import av  # noqa: F401

    from emo.extract.media.decode import decode_clip  # noqa: F401

    mel_views(np.zeros(4000, dtype=np.float32) + 1e-3, params or MelParams(), 0, 0, "warm-up")
    return time.perf_counter() - started


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process for a moment, so processes spawned meanwhile start
    with it ignored (an ignored signal stays ignored across exec; a handler does not)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class WorkerPool:
    """`count` spawned decoding processes, started and warming up at once.

    Spawned, not forked: the main process holds torch's thread pools and possibly a GPU
    context, which a fork would copy in a broken state.
    """

    def __init__(self, count: int, mel: MelParams | None) -> None:
        with _sigint_ignored():
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=count,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_init,
                initargs=(os.getpid(),),
            )
            # One warm-up per worker: each submit starts one process, all of them here.
            self._warming = [self.executor.submit(warm_up, mel) for _ in range(count)]

    def wait_until_warm(self) -> None:
        concurrent.futures.wait(self._warming)

    def submit(self, job: ClipJob) -> concurrent.futures.Future:
        return self.executor.submit(prepare_clip, job)

    def shutdown(self) -> None:
        """Stop the workers: queued jobs are dropped, running ones finish (a clip at most)."""
        self.executor.shutdown(wait=True, cancel_futures=True)


class _InProcess:
    """A finished 'future' for preparing clips in the main process (workers=0).

    With the one BLAS thread a worker has: the mel filterbank is a BLAS product whose
    float rounding depends on how many threads share it, and a cache must hold the same
    numbers whether its clips were prepared in workers or not.
    """

    _blas = None  # a threadpoolctl controller, made once (making one costs ~1 ms)

    def __init__(self, job: ClipJob):
        self._job = job

    def result(self) -> PreparedClip:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # then workers are not limited either (see worker_init)
            return prepare_clip(self._job)
        if _InProcess._blas is None:
            _InProcess._blas = ThreadpoolController()
        with _InProcess._blas.limit(limits=1, user_api="blas"):
            return prepare_clip(self._job)

    def cancel(self) -> bool:
        return True


class Prefetcher:
    """Hands out prepared clips in job order while keeping `window` jobs in flight."""

    def __init__(self, jobs: Iterable[ClipJob], pool: WorkerPool | None, window: int):
        self._jobs = iter(jobs)
        self._pool = pool
        self._window = max(1, window)
        self._pending: collections.deque = collections.deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._window:
            job = next(self._jobs, None)
            if job is None:
                return
            self._pending.append(_InProcess(job) if self._pool is None else self._pool.submit(job))

    @property
    def uses_workers(self) -> bool:
        return self._pool is not None

    def next(self) -> PreparedClip:
        future = self._pending.popleft()
        self._fill()
        return future.result()

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()

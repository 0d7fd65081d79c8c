"""How long OpenMP's threads spin before they sleep, in a process that trains heads.

emo's passive wait (emo/__init__.py) puts OpenMP's threads to sleep the moment a kernel ends,
so the cores stay free for `emo extract`'s decoding workers. A fit has no such workers, and
its mel-CNN step runs ~20 multi-threaded kernels back to back (emo.fuse.threads gives them
all the fit's threads): each kernel first woke threads that had just gone to sleep, ~50-100
us on a virtual machine. A short spin bridges those gaps. Measured on a 2-core EPYC VM:

- `bench/fit.py --passive-too`: a 3-epoch MELD-sized fit's epoch took 1.04x [1.04-1.08] the
  time with the passive wait alone (3 interleaved rounds, same best dev score);
- `bench/fit.py --mel-only`: the mel-CNN step at 0.64-0.65x of the matmul rate with the spin,
  0.54-0.60x without;
- but `GOMP_SPINCOUNT=30000 bench/extract.py` ran the pipeline at 1.12-1.19 clips/s against
  1.43-1.55 without it: there the spinning threads take the cores the decoding workers need.

So the spin is set only by the code paths that train (`emo fit`, `emo ablate`, bench/fit.py),
before torch loads, and never by extraction or prediction. 30,000 spins cost the spare thread
about 1 ms of CPU after a multi-threaded kernel (measured here); the heads' small kernels run
on one thread (emo.fuse.threads), so no thread spins after them. GNU OpenMP (torch's on Linux)
reads GOMP_SPINCOUNT once, as it loads; other OpenMP runtimes ignore it. A value the user set
is kept.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "30000"


def spin_between_kernels() -> bool:
    """Let OpenMP's threads spin briefly before sleeping, for the rest of this process.

    Call it before anything imports torch; returns False (and changes nothing) where torch is
    already loaded, as in a notebook that imported it first."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
    return True

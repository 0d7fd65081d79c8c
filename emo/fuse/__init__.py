"""Heads trained from the feature cache: model, training, evaluation, metrics, reports.

`fuse` reads features only through `emo.cache.load_split` and never imports `emo.extract`.
Entry points: `emo.fuse.train.run_fit(FitConfig) -> FitResult` and
`emo.fuse.evaluate.run_eval(run_dir, split) -> dict`; `emo.fuse.model` holds the modules.

The training loop runs hundreds of small ops per second. With OpenMP's default busy-wait,
each op's worker threads spin for the others, which on a shared or oversubscribed CPU
(a laptop, a CI runner, a 2-core VM) made epochs 5-10x slower in our measurements; a
passive wait policy costs nothing on an idle machine. It only takes effect if set before
torch loads OpenMP, and a value the user set is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

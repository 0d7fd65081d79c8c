"""Heads trained from the feature cache: model, training, evaluation, metrics, reports.

`fuse` reads features only through `emo.cache.load_split` and never imports `emo.extract`.
Entry points: `emo.fuse.train.run_fit(FitConfig) -> FitResult` and
`emo.fuse.evaluate.run_eval(run_dir, split) -> dict`; `emo.fuse.model` holds the modules.
"""

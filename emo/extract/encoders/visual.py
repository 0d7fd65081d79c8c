"""Frozen image encoders for sampled video frames, behind one small factory keyed by name.

- Any open_clip architecture (`ViT-B-32`, ...) with a pretrained tag (`openai`) or a
  checkpoint file, through `open_clip.create_model_and_transforms`; features are the
  projected image embeddings (`encode_image`, not L2-normalised, 512-d for ViT-B-32).
- `efficientnet-lite0`: the pip-shipped EfficientNet-Lite0 ImageNet weights (the offline
  preset); features are the 1280-d globally pooled last feature map.

Each encoder carries its own preprocessing as a `FramePrep`, read from the model itself
(open_clip's `preprocess_cfg`), split in two: the resize/crop runs with PIL inside the
decoding worker processes, on each clip's few sampled frames, so only small uint8 images
cross process boundaries; the normalisation runs batched on the device in the main
process. Together they are exactly the model's own eval transform (tested against it).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emo.errors import UsageError
from emo.extract.config import OFFLINE_VISUAL_MODEL
from emo.extract.encoders.base import precision
from emo.extract.encoders.weights import (
    endpoint_reachable,
    file_sha256,
    hub_endpoint,
    looks_like_path,
    offline_sentence,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FramePrep:
    """An image model's eval preprocessing, as plain data that worker processes can receive."""

    size: tuple[int, int] = (224, 224)  # (height, width) fed to the model
    resize_mode: str = "shortest"  # shortest: resize short side then centre-crop; squash: resize to size
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def describe(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "resize_mode": self.resize_mode,
            "interpolation": self.interpolation,
            "mean": [round(float(m), 6) for m in self.mean],
            "std": [round(float(s), 6) for s in self.std],
        }

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a frame is resized to before the centre crop, as torchvision computes it."""
        out_h, out_w = self.size
        if self.resize_mode == "squash":
            return out_w, out_h
        if out_h == out_w:
            # torchvision Resize(int): the short side becomes the size, the long side is truncated.
            if width <= height:
                return out_w, int(out_w * height / width)
            return int(out_h * width / height), out_h
        # Non-square input size: scale so the image just covers it, then crop.
        scale = max(out_h / height, out_w / width)
        return max(out_w, round(width * scale)), max(out_h, round(height * scale))

    def center_crop(self, frames: np.ndarray) -> np.ndarray:
        """uint8[T, H, W, 3] -> uint8[T, h, w, 3], cut from the middle as torchvision's CenterCrop."""
        out_h, out_w = self.size
        height, width = frames.shape[1:3]
        top = int(round((height - out_h) / 2.0))
        left = int(round((width - out_w) / 2.0))
        return np.ascontiguousarray(frames[:, top : top + out_h, left : left + out_w, :3])

    def geometric(self, frames: np.ndarray) -> np.ndarray:
        """uint8[T, H, W, 3] full frames -> uint8[T, h, w, 3] resized and cropped (PIL, as torchvision does)."""
        from PIL import Image

        resample = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
        if len(frames) == 0:
            return np.zeros((0, *self.size, 3), dtype=np.uint8)
        new_w, new_h = self.resized_size(frames.shape[2], frames.shape[1])
        resized = np.empty((len(frames), new_h, new_w, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
            if image.size != (new_w, new_h):
                image = image.resize((new_w, new_h), resample=resample)
            resized[i] = np.asarray(image.convert("RGB"))
        return self.center_crop(resized)


@dataclass
class ImageEncoder:
    """A frozen image model: uint8 frames (already through `prep.geometric`) -> float32 features."""

    name: str
    features: Callable[[Any], Any]  # normalised float tensor [N, 3, h, w] -> [N, D]
    prep: FramePrep
    device: Any
    dtype: Any
    dim: int
    identity: dict[str, Any] = field(default_factory=dict)
    # Largest forward pass on a CPU. Depthwise-convolution nets (EfficientNet) run several
    # times faster per frame in micro-batches whose activations stay in the CPU cache than in
    # one big batch (frozen graph, 2-core box: 8 ms/frame at 2-4 frames vs 15-40 ms/frame at
    # 16-32, and 1-2 frames are best on one thread); matmul-bound ViTs gain from large
    # batches, so they leave this unset.
    cpu_batch: int | None = None
    channels_last: bool = False

    def pass_size(self, batch_size: int) -> int:
        """Frames per forward pass for a requested batch size (the CPU micro-batch caps it)."""
        import torch

        if self.cpu_batch and torch.device(self.device).type == "cpu":
            return max(1, min(batch_size, self.cpu_batch))
        return max(1, batch_size)

    def encode(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        import torch

        batch_size = self.pass_size(batch_size)
        frames = np.asarray(frames)
        out = np.zeros((len(frames), self.dim), dtype=np.float32)
        if len(frames) == 0:
            return out
        mean = torch.tensor(self.prep.mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.prep.std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size])).to(self.device)
                x = chunk.permute(0, 3, 1, 2).float().div_(255.0)
                x = ((x - mean) / std).to(self.dtype)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out[start : start + len(chunk)] = self.features(x).float().cpu().numpy()
        return out


# --- open_clip --------------------------------------------------------------------------


def _open_clip_prep(cfg: dict[str, Any]) -> FramePrep:
    """A model's frame preprocessing from open_clip's `preprocess_cfg` (the model's own, or the
    one `open_clip_identity` rebuilds from the configs without a model)."""
    size = cfg.get("size", 224)
    if isinstance(size, int):
        size = (size, size)
    mode = cfg.get("resize_mode", "shortest") or "shortest"
    if mode not in ("shortest", "squash"):
        raise UsageError(
            f"open_clip resize mode '{mode}' is not supported for frames; use a model with 'shortest' or 'squash'."
        )
    interpolation = cfg.get("interpolation", "bicubic") or "bicubic"
    if interpolation not in ("bicubic", "bilinear"):
        interpolation = "bicubic"
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = cfg.get("mean") or OPENAI_DATASET_MEAN
    std = cfg.get("std") or OPENAI_DATASET_STD
    return FramePrep(
        size=(int(size[0]), int(size[1])),
        resize_mode=mode,
        interpolation=interpolation,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def tag_weights_file(name: str, tag: str) -> Path | None:
    """The already-downloaded file for an open_clip pretrained tag, if this machine has it."""
    import os

    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return Path(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache

            repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
            candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for candidate in candidates:
                found = try_to_load_from_cache(repo, candidate)
                if isinstance(found, str):
                    return Path(found)
        except Exception:  # noqa: BLE001 - an unusual cache layout only means "not cached"
            pass
    url = cfg.get("url", "")
    if url:
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if cached.is_file():
            return cached
    return None


def register_open_clip_config(path: str) -> str:
    """Make an architecture JSON (open_clip's model_configs format) loadable by its file stem,
    so a custom or fine-tuned shape needs no code: --visual-model my-vit.json."""
    import json

    import open_clip

    config_path = Path(path).expanduser()
    if not config_path.is_file():
        raise UsageError(f"Visual model config {config_path} does not exist.")
    try:
        spec = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"Visual model config {config_path} is not valid JSON ({error}).") from None
    if not all(key in spec for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise UsageError(f"Visual model config {config_path} needs the keys embed_dim, vision_cfg and text_cfg.")
    open_clip.add_model_config(config_path)
    return config_path.stem


def load_open_clip(name: str, pretrained: str, device: Any) -> ImageEncoder:
    import open_clip
    import torch

    if name.endswith(".json"):
        name = register_open_clip_config(name)
    known = set(open_clip.list_models())
    if name not in known and not name.startswith(("hf-hub:", "local-dir:")):
        raise UsageError(
            f"Unknown visual model '{name}'; use an open_clip architecture (e.g. ViT-B-32, see open_clip.list_models()) "
            f"or an encoder `emo encoders` lists, such as {OFFLINE_VISUAL_MODEL} (a plugin's module goes in EMO_PLUGINS)."
        )
    weights: Path | None = None
    from_file = False
    if pretrained and (Path(pretrained).expanduser().is_file() or looks_like_path(pretrained)):
        weights = Path(pretrained).expanduser()
        if not weights.is_file():
            raise UsageError(f"Visual checkpoint file {weights} does not exist.")
        pretrained_arg = str(weights)
        from_file = True
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise UsageError(
                f"'{pretrained}' is neither a pretrained tag of {name} ({', '.join(tags) or 'none known'}) "
                "nor an existing checkpoint file."
            )
        weights = tag_weights_file(name, pretrained)
        if weights is None:
            cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
            host = hub_endpoint() if cfg.get("hf_hub") else cfg.get("url", hub_endpoint())
            if not endpoint_reachable(host):
                from emo.errors import NetworkError

                raise NetworkError(offline_sentence("visual model", f"{name}/{pretrained}", "--visual-pretrained"))
        pretrained_arg = pretrained
    else:
        raise UsageError(f"Visual model '{name}' needs --visual-pretrained (a tag or a checkpoint file).")

    torch_device = torch.device(device)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model, _, _ = open_clip.create_model_and_transforms(
                name, pretrained=pretrained_arg, device=torch_device, precision=precision(torch_device)
            )
    except RuntimeError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"Visual model {name} could not load '{pretrained}': {message}.") from None
    model.eval().requires_grad_(False)
    if weights is None:
        weights = tag_weights_file(name, pretrained)
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    prep = _open_clip_prep({"size": getattr(model.visual, "image_size", 224), **cfg})
    dim = int(
        getattr(model.visual, "output_dim", 0)
        or model.encode_image(
            torch.zeros(1, 3, *prep.size, device=torch_device, dtype=next(model.parameters()).dtype)
        ).shape[-1]
    )
    tag = weights.name if from_file and weights is not None else pretrained
    identity = _open_clip_identity(name, tag, weights, dim, prep, torch_device)
    return ImageEncoder(
        name=name,
        features=lambda x: model.encode_image(x),
        prep=prep,
        device=torch_device,
        dtype=torch.float16 if identity["precision"] == "fp16" else torch.float32,
        dim=dim,
        identity=identity,
    )


def open_clip_identity(name: str, pretrained: str, device: Any) -> dict[str, Any] | None:
    """The identity `load_open_clip` gives, from open_clip's configs and the weights file
    alone (no model is built); None when the weights are not on this machine or the name
    or tag is not one open_clip knows (loading then says so)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    if name.endswith(".json"):
        name = register_open_clip_config(name)
    model_cfg = open_clip.get_model_config(name) if name in open_clip.list_models() else None
    if model_cfg is None or not pretrained:
        return None
    if Path(pretrained).expanduser().is_file() or looks_like_path(pretrained):
        weights, tag_cfg = Path(pretrained).expanduser(), {}
        tag = weights.name
        if not weights.is_file():
            return None
    else:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
        weights, tag = tag_weights_file(name, pretrained) if tag_cfg else None, pretrained
        if weights is None:
            return None
    # As open_clip.create_model: the defaults, the tag's own settings, the vision tower's size.
    cfg = merge_preprocess_dict(PreprocessCfg(), tag_cfg)
    cfg["size"] = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return _open_clip_identity(name, tag, weights, int(model_cfg["embed_dim"]), _open_clip_prep(cfg), device)


def _open_clip_identity(
    name: str, tag: str, weights: Path | None, dim: int, prep: FramePrep, device: Any
) -> dict[str, Any]:
    import open_clip

    return {
        "family": "open_clip",
        "name": name,
        "pretrained": tag,
        "weights_sha256": file_sha256(weights) if weights is not None else None,
        "open_clip_version": getattr(open_clip, "__version__", "unknown"),
        "features": "encode_image (projected, not normalised)",
        "dim": dim,
        "preprocess": prep.describe(),
        "precision": precision(device),
    }


def load_image_encoder(name: str, pretrained: str = "", device: Any = "cpu") -> ImageEncoder:
    """An image model by name: a registered visual encoder (efficientnet-lite0, a plugin's)
    or else an open_clip architecture with its pretrained tag or checkpoint file."""
    from emo.extract.config import ExtractConfig
    from emo.extract.encoders.registry import lookup

    return lookup("visual", name).load(ExtractConfig(visual_model=name, visual_pretrained=pretrained), device)

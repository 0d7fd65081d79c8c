"""The one trainer: `emo fit`, every `emo ablate` cell and `emo demo` run this `Trainer`.

    plan (once)  ->  set up  ->  epochs  ->  keep the best on dev  ->  write the run

The seed's training procedure (AdamW, ReduceLROnPlateau on dev weighted F1, clipped gradients, 15
epochs) over splits that live on the device as tensors. There is deliberately only one
loop: an ablation cell is *exactly* an `emo fit` with the same config and seed (a test
holds them to identical metrics), so every head, fusion mode or augmentation added here
is available to fit and ablate alike.

What a fit trains on is decided and checked once, before any of that, by
`emo.fuse.fit_plan.plan_fit`; the trainer only reads its `FitPlan`.

Progress goes to an optional callback as `emo.progress` events (one per epoch, with the
epoch's metrics row); this module never prints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emo.cache.fingerprint import fingerprint_digest
from emo.cache.load import LoadedSplit
from emo.device import resolve_device, seed_everything
from emo.errors import EmoError
from emo.fuse.augment import augment_batch
from emo.fuse.checkpoint import plain
from emo.fuse.config import FitConfig
from emo.fuse.dialogue import dialogue_batches, speaker_vocabulary
from emo.fuse.fit_plan import FitPlan, plan_fit
from emo.fuse.inputs import ModelInputs
from emo.fuse.scoring import autocast, batch_loss, class_weights, predict, primary_head, score
from emo.fuse.tensors import TensorSplit, epoch_batches
from emo.fuse.model import FusionModel, ModelConfig, task_heads
from emo.fuse.run_folder import RunWriter, run_folder
from emo.fuse.allocator import keep_freed_memory
from emo.fuse.threads import small_kernels
from emo.progress import Message, ProgressCallback, TaskAdvanced, TaskFinished, TaskStarted, emit


@dataclass
class FitResult:
    run_dir: Path | None
    checkpoint: Path | None
    best_epoch: int
    best_dev: dict[str, Any]  # dev metrics of the kept model, per head
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, as in metrics.jsonl
    fit_seconds: float = 0.0
    load_seconds: float = 0.0
    model: FusionModel | None = None  # the best model, in eval mode on CPU
    test: dict[str, Any] | None = None  # the kept model's metrics on a test split, when one was given
    config: FitConfig | None = None  # the resolved config the run was trained with


def model_config_for(config: FitConfig, features: ModelInputs) -> ModelConfig:
    """Model shape from the fit config plus the dims the cache actually holds."""
    dims: dict[str, Any] = {}
    if features.text_cls is not None:
        dims["text_dim"] = int(features.text_cls.shape[1])
    if features.visual is not None:
        dims["visual_dim"] = int(features.visual.shape[2])
    if features.mel is not None:
        dims["n_mels"] = int(features.mel.shape[1])
    if "audio" in config.modalities:
        dims["audio_mel"] = features.mel is not None
        dims["audio_dim"] = int(features.audio_vector.shape[1]) if features.audio_vector is not None else 0
    for modality in ("text", "audio"):  # layers sets: where each part's columns are (emo.fuse.layer_mix)
        if modality in config.modalities and features.layouts.get(modality):
            dims[f"{modality}_layout"] = features.layouts[modality]
    if config.context_model != "none":
        dims.update(
            context_model=config.context_model,
            context_direction=config.context_direction,
            context_layers=config.context_layers,
            speaker_embedding=config.speaker_embedding,
        )
        if config.speaker_embedding == "speaker":
            dims["speakers"] = speaker_vocabulary(list(features.speaker))
    return ModelConfig(
        modalities=config.modalities,
        fusion=config.fusion,
        heads=task_heads(config.task),
        proj_dim=config.proj_dim,
        layer_mix=config.layer_mix,
        layer_norm=config.layer_norm,
        **dims,
    )


def run_fit(config: FitConfig, progress: ProgressCallback | None = None) -> FitResult:
    """`emo fit`: load the cache's train and dev splits, fit, write the run folder.

    Everything that can fail on the user's input (paths, the cache, the device) is checked
    before the run folder exists (`emo.fuse.fit_request.check_fit`, which also decides the
    modalities a config leaves open), and a fit that fails later removes what it wrote, so a
    failed command leaves nothing behind.
    """
    from emo.fuse.feature_cache import load_raw
    from emo.fuse.fit_request import check_fit

    request = check_fit(config)
    config, selection = request.config, request.selection
    resolve_device(config.device)  # --device cuda without a GPU fails here, before any folder exists
    if request.note:  # e.g. a text-only cache: "Cache C holds text features only; fitting on text."
        emit(progress, Message(request.note))
    started = time.perf_counter()
    cache = Path(config.cache)
    # verify=True: every shard's SHA-256 is checked against its sidecar, so a cache with a
    # flipped byte is refused instead of silently training on wrong numbers.
    train, dev = (
        load_raw(cache, name, [selection], config.modalities, verify=True)
        for name in (config.train_split, config.dev_split)
    )
    plan = plan_fit(config, train, dev, selection=selection)
    load_seconds = time.perf_counter() - started
    out = Path(config.out)
    with run_folder(out, config.overwrite) as building:  # becomes `out` once the run is complete
        result = Trainer(plan, progress).run(building, load_seconds=load_seconds)
    return dataclasses.replace(result, run_dir=out, checkpoint=out / Path(result.checkpoint).name)


def fit_splits(
    config: FitConfig,
    train: LoadedSplit,
    dev: LoadedSplit,
    out_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    load_seconds: float = 0.0,
    test: LoadedSplit | None = None,
) -> FitResult:
    """Train on splits loaded in memory (a run folder is written when `out_dir` is given):
    `config` validated, its sets chosen from `config.features` and the splits composed and
    checked (`plan_fit`), then trained - each once. (`emo ablate`, whose cells' configs are
    validated and sets chosen against the cache up front, plans each cell itself.)"""
    config.validate()
    return Trainer(plan_fit(config, train, dev, test), progress).run(out_dir, load_seconds=load_seconds)


class Trainer:
    """One fit of a `FitPlan`, in the order a reader expects: `run` calls `setup`, then
    `train_epoch` and `evaluate` (dev) once per epoch, keeps the best state on dev, and
    writes the run."""

    def __init__(self, plan: FitPlan, progress: ProgressCallback | None = None):
        self.config = plan.config
        self.train_features, self.dev_features, self.test_features = plan.train, plan.dev, plan.test
        self.progress = progress

    # --- set up -------------------------------------------------------------------------
    def setup(self) -> None:
        config, train, dev = self.config, self.train_features, self.dev_features
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.device = device = resolve_device(config.device)
        if device.type == "cpu":
            keep_freed_memory()  # no page faults for each step's activations (emo.fuse.allocator)
        seed_everything(config.seed)
        self.order_rng = torch.Generator().manual_seed(config.seed)
        self.augment_rng = torch.Generator().manual_seed(config.seed + 1)
        self.train_set = TensorSplit(
            train,
            config.modalities,
            device,
            config.text_feature,
            config.max_mel_frames,
            keep_frames=config.frame_sampling,
            audio_views=config.audio_view_sampling,
        )
        self.model = FusionModel(model_config_for(config, train)).to(device)
        self.train_set.use_speakers(config.speaker_embedding, self.model.config.speakers)
        self.dev_set = self._eval_set(dev)
        self.main = primary_head(self.model.config.heads)
        self.weights = {
            head: class_weights(config.class_weights, head, getattr(self.train_set, head))
            for head in ("emotion", "sentiment")
        }
        # fused AdamW: one kernel per step instead of a dozen tiny ops per parameter tensor.
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
        )
        self.digest = fingerprint_digest(plain(train.fingerprint))

    def _eval_set(self, features: ModelInputs) -> TensorSplit:
        config = self.config
        split = TensorSplit(features, config.modalities, self.device, config.text_feature, config.max_mel_frames)
        split.use_speakers(config.speaker_embedding, self.model.config.speakers)
        return split

    # --- one epoch ----------------------------------------------------------------------
    def train_epoch(self) -> float:
        """One pass over the training split; returns the mean training loss. On CPU the many
        small kernels run on one thread and the mel CNN's on all (emo.fuse.threads)."""
        with small_kernels(self.device):
            return self._train_epoch()

    def _train_epoch(self) -> float:
        config, model, train_set, device = self.config, self.model, self.train_set, self.device
        model.train()
        views = None
        if train_set.num_views > 1:
            views = torch.randint(train_set.num_views, (len(train_set),), generator=self.order_rng).to(device)
        total_loss, seen = 0.0, 0
        for index, layout in self.batches():
            batch = train_set.gather(index, views=views, frames=config.frame_sampling)
            batch.layout = layout
            batch = augment_batch(batch, config, self.augment_rng, config.modalities)
            with autocast(config.precision, device):
                logits = model(**batch.inputs())
            loss = batch_loss(logits, batch, self.weights, config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            self.optimizer.step()
            total_loss += float(loss.detach()) * len(batch)
            seen += len(batch)
        return total_loss / max(seen, 1)

    def batches(self):
        """(rows, layout) per training batch: length-bucketed utterances, or, for a context
        head, whole dialogues in shuffled order (at most `dialogue_batch_size` turns; a longer
        dialogue is a batch of its own)."""
        config, train_set, device = self.config, self.train_set, self.device
        if self.model.config.has_context:
            for group in dialogue_batches(train_set.dialogues, config.dialogue_batch_size, device, self.order_rng):
                yield group.rows, group.layout
            return
        for index in epoch_batches(train_set.lengths(), config.batch_size, self.order_rng, config.length_bucketing):
            yield index.to(device), None

    def require_finite(self, epoch: int, loss: float) -> None:
        """Stop a fit whose loss stopped being a number: its weights are lost for good, and a
        run saved from them would predict `nan` for everything while looking finished."""
        if not math.isfinite(loss):
            clip = f"--set grad_clip=1.0 (now {self.config.grad_clip:g})" if self.config.grad_clip <= 0 else ""
            raise EmoError(
                f"Training diverged at epoch {epoch} (loss is {loss}); lower --lr (now {self.config.lr:g})"
                + (f" or clip gradients with {clip}" if clip else "")
                + " and run emo fit again."
            )

    def evaluate(self, split: TensorSplit) -> dict[str, Any]:
        return score(predict(self.model, split, self.config.eval_batch_size, precision=self.config.precision), split)

    # --- the whole fit ---------------------------------------------------------------
    def run(self, out_dir: Path | None = None, load_seconds: float = 0.0) -> FitResult:
        config = self.config
        self.setup()
        writer = RunWriter(out_dir, config, self.train_features.fingerprint, self.digest) if out_dir else None
        emit(
            self.progress,
            TaskStarted("fit", f"fit {'+'.join(config.modalities)} / {config.fusion}", config.epochs, "epochs"),
        )
        history: list[dict[str, Any]] = []
        best_score, best_epoch, best_dev, best_state = -math.inf, 0, {}, None
        fit_started = time.perf_counter()
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            train_loss = self.train_epoch()
            train_seconds = time.perf_counter() - epoch_started
            self.require_finite(epoch, train_loss)
            dev_scores = self.evaluate(self.dev_set)
            self.require_finite(epoch, dev_scores[self.main]["loss"])
            current = dev_scores[self.main]["weighted_f1"]
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step(current)
            improved = current > best_score
            if improved:  # keep the best on dev
                best_score, best_epoch, best_dev = current, epoch, dev_scores
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                if writer is not None:
                    writer.checkpoint(self.model, epoch, dev_scores)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "dev": dev_scores,
                "lr": lr,
                "fusion_weights": self.model.fusion_weights(),
                "best": improved,
                "train_seconds": round(train_seconds, 4),
                "epoch_seconds": round(time.perf_counter() - epoch_started, 4),
            }
            history.append(row)
            if writer is not None:
                writer.epoch(row)
            emit(self.progress, TaskAdvanced("fit", epoch, f"dev wF1 {100 * current:.2f} %", info=row))
        fit_seconds = time.perf_counter() - fit_started
        self.model.load_state_dict(best_state)
        test_scores = self.evaluate(self._eval_set(self.test_features)) if self.test_features is not None else None
        self.model.cpu().eval()
        result = FitResult(
            run_dir=Path(out_dir) if out_dir is not None else None,
            checkpoint=writer.checkpoint_path if writer is not None else None,
            best_epoch=best_epoch,
            best_dev=best_dev,
            history=history,
            fit_seconds=fit_seconds,
            load_seconds=load_seconds,
            model=self.model,
            test=test_scores,
            config=config,
        )
        if writer is not None:  # write the run
            writer.finish(
                history,
                self.main,
                {
                    "best_epoch": best_epoch,
                    "best_dev": best_dev,
                    "test": test_scores,
                    "fit_seconds": round(fit_seconds, 3),
                    "load_seconds": round(load_seconds, 3),
                },
            )
        emit(self.progress, TaskFinished("fit", f"best dev wF1 {100 * best_score:.2f} % at epoch {best_epoch}"))
        return result

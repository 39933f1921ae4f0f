"""The pretraining methods the trainer runs: what differs between ComFace and the FaceCycle baseline, in one class each.

The trainer (``training/pretrain.py``) owns the data, the optimiser, checkpoints and the loop; a method owns the model
it trains, one training step's forward (and which loss terms it logs), validation on held-out identities and what the
saved folder gets (model card, same-person calibration). Choose one with :func:`get_method` (``--method``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_comface import ComFaceConfig
from ..configuration_facecycle import FaceCycleConfig
from ..modeling_comface import ComFaceModel
from ..modeling_facecycle import FaceCycleModel
from .augment import augment_batch, augmentation_config, step_generator
from .generators import stream_card_text, uses_generator_specs
from .sources import to_model_input


class PretrainingMethod:
    """Base: a method trained by the shared loop. ``args`` is the run's ``PretrainArguments``."""

    name: str = ""
    #: Loss terms of the model's output logged beside ``loss`` (each a scalar, or None when switched off).
    loss_terms: tuple[str, ...] = ()
    #: The saved model's class, named in the lines printed after saving.
    model_class_name: str = ""
    #: Whether ``--validation probe`` applies (a backbone f whose features a ridge probe can read).
    has_probe_validation: bool = False

    def __init__(self, args: Any):
        self.args = args

    @property
    def find_unused_parameters(self) -> bool:
        """DDP: whether some parameters get no gradient in a step (a head whose loss weight is 0)."""
        return False

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def forward(self, model, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, batch: dict, device) -> Any:
        """One step's model output (``.loss`` and :attr:`loss_terms`) from the three augmented views ``[B, 3, S, S]``
        (x~, x~', y~, already the model's input) and the batch's ``alpha_x, alpha_y [B]``."""
        raise NotImplementedError

    def validate(self, model, val_source, accelerator, processor, s_max: float) -> dict[str, float]:
        """``val_*`` metrics on the fixed validation pairs (``model`` unwrapped, in eval mode)."""
        raise NotImplementedError

    def save(self, model, folder: Path, metrics: dict, steps: int, world: int, stream_generator=None) -> None:
        model.save_pretrained(folder)

    def finish(self, folder: Path) -> None:
        """After the folder is written (main process only)."""

    def final_validation(self, model, processor) -> dict[str, float]:
        """Metrics measured once after the final save (main process only); none by default."""
        return {}

    def load_hint(self, folder: Path) -> list[str]:
        """Lines the run prints after saving: how to load the result."""
        name = self.model_class_name
        return ["Load it with:", f"  from comface_hf import {name}", f"  model = {name}.from_pretrained('{folder}')"]

    def _pairs(self, val_source, accelerator):
        """This process's share of the fixed validation pairs: ``(start, count)`` per chunk of the device batch.

        Fetch each with ``val_source.batch(epoch=0, ..., s=s_max)``: epoch 0 and S_max give the same pairs at every
        validation, over all ranges of the curriculum."""
        rank, world = accelerator.process_index, accelerator.num_processes
        chunk = max(1, self.args.per_device_batch_size)
        num_pairs = int(min(self.args.validation_pairs, val_source.max_pairs))
        for start in range(rank * chunk, num_pairs, world * chunk):
            yield start, min(chunk, num_pairs - start)


class ComFaceMethod(PretrainingMethod):
    """Inter-personal (InfoNCE between x~ and x~') and intra-personal (d against |alpha_y - alpha_x|) learning, or
    either alone (``--learning inter|intra``, Table 7 a-b)."""

    name = "comface"
    loss_terms = ("inter_personal_loss", "intra_personal_loss")
    model_class_name = "ComFaceModel"
    has_probe_validation = True

    @property
    def find_unused_parameters(self) -> bool:
        return self.args.learning != "both"  # a term whose weight is 0 leaves its head without gradients

    def build_model(self) -> ComFaceModel:
        a = self.args
        return ComFaceModel(ComFaceConfig(
            backbone=a.backbone, image_size=a.image_size, projection_hidden_size=a.projection_hidden_size,
            projection_dim=a.projection_dim, temperature=a.temperature,
            inter_loss_weight=0.0 if a.learning == "intra" else 1.0,
            intra_loss_weight=0.0 if a.learning == "inter" else 1.0, intra_target=a.intra_target,
        ))

    def forward(self, model, x1, x2, y, batch, device):
        learning = self.args.learning
        intra = learning != "inter"
        return model(
            x1, None if learning == "intra" else x2, y if intra else None,
            alpha_x=batch["alpha_x"].to(device) if intra else None,
            alpha_y=batch["alpha_y"].to(device) if intra else None,
        )

    @torch.no_grad()
    def validate(self, model, val_source, accelerator, processor, s_max):
        """Pearson and MAE of d against |dalpha| (fixed pairs, all ranges up to S_max) and top-1 retrieval of the
        positive view among all second views (inter-personal branch)."""
        from scipy.stats import pearsonr

        d_all, t_all, z1_all, z2_all = [], [], [], []
        cfg = augmentation_config(self.args.augmentation, self.args.crop_scale_min)  # the training views'
        for start, count in self._pairs(val_source, accelerator):
            batch = val_source.batch(epoch=0, start=start, count=count, s=s_max)
            x, y = batch["x"].to(accelerator.device), batch["y"].to(accelerator.device)
            x1 = augment_batch(x, step_generator(self.args.seed, -1, start, 0, 0), cfg)
            x2 = augment_batch(x, step_generator(self.args.seed, -1, start, 0, 1), cfg)
            with accelerator.autocast():
                # d on the clean images (what a user compares); retrieval between two augmented views of x.
                distance = model.compare(to_model_input(x, processor), to_model_input(y, processor))
                out = model(to_model_input(x1, processor), to_model_input(x2, processor))
            d_all.append(distance.float())
            t_all.append((batch["alpha_y"] - batch["alpha_x"]).abs().to(accelerator.device))
            z1_all.append(torch.nn.functional.normalize(out.projections_x1.float(), dim=1))
            z2_all.append(torch.nn.functional.normalize(out.projections_x2.float(), dim=1))
        d = accelerator.gather_for_metrics(torch.cat(d_all)).cpu().numpy()
        t = accelerator.gather_for_metrics(torch.cat(t_all)).cpu().numpy()
        z1 = accelerator.gather_for_metrics(torch.cat(z1_all))
        z2 = accelerator.gather_for_metrics(torch.cat(z2_all))
        retrieval = (z1 @ z2.t()).argmax(dim=1).eq(torch.arange(len(z1), device=z1.device)).float().mean().item()
        pearson = float(pearsonr(d, t)[0]) if np.std(d) > 0 else 0.0
        return {"val_pearson": pearson, "val_mae": float(np.abs(d - t).mean()), "val_retrieval_top1": retrieval}

    def save(self, model, folder, metrics, steps, world, stream_generator=None):
        model.save_pretrained(folder, model_card=model_card_values(self.args, metrics, steps, world, stream_generator))

    def finish(self, folder):
        """The same-person threshold (issue 15), measured on unseen identities of the run's own embedded generator
        (the one ``comface calibrate`` rebuilds from ``config.generator_spec``), and the pipeline files."""
        from ..monitoring.calibration import finish_model_folder
        from ..synthesis.spec import embedded_spec_for
        from .generators import run_generator_specs, run_spec

        spec = embedded_spec_for(run_generator_specs(self.args) or [run_spec(self.args)])
        finish_model_folder(str(folder), generator_spec=spec, num_identities=max(8, min(200, self.args.num_identities)))

    def final_validation(self, model, processor):
        """``--validation probe`` (issue 24): a ridge probe of f on measured changes of held-out DCGAN faces
        (:mod:`comface_hf.pretraining.validation`); ``probe_<label>_pearson`` and its spread over folds."""
        if self.args.validation != "probe":
            return {}
        from .validation import trainer_probe_validation

        return trainer_probe_validation(model, self.args.image_size, processor.image_mean, processor.image_std)

    def load_hint(self, folder):
        return super().load_hint(folder) + [
            "  from comface_hf import ComFaceForChangeEstimation  # transfer f and l to a downstream task",
            f"  change_model = ComFaceForChangeEstimation.from_pretrained('{folder}')"]


class FaceCycleMethod(PretrainingMethod):
    """The FaceCycle baseline through the same pipeline: it learns from frames of one person without labels, so x and
    y of a pair are two such frames (reconstruction, motion-cycle and identity-cycle losses)."""

    name = "facecycle"
    loss_terms = ("reconstruction_loss", "motion_cycle_loss", "identity_cycle_loss")
    model_class_name = "FaceCycleModel"

    @property
    def find_unused_parameters(self) -> bool:
        return True

    def build_model(self) -> FaceCycleModel:
        return FaceCycleModel(FaceCycleConfig(image_size=self.args.image_size,
                                              base_channels=self.args.facecycle_base_channels))

    def forward(self, model, x1, x2, y, batch, device):
        return model(x1, y)

    @torch.no_grad()
    def validate(self, model, val_source, accelerator, processor, s_max):
        """FaceCycle has no d: the validation loss and the re-expression error on held-out identities."""
        losses, errors = [], []
        for start, count in self._pairs(val_source, accelerator):
            batch = val_source.batch(epoch=0, start=start, count=count, s=s_max)
            x = to_model_input(batch["x"].to(accelerator.device), processor)
            y = to_model_input(batch["y"].to(accelerator.device), processor)
            with accelerator.autocast():
                out = model(x, y)
            losses.append(out.loss.float().reshape(1))
            errors.append((out.reconstruction.float() - x).abs().mean().reshape(1))
        return {"val_loss": accelerator.gather_for_metrics(torch.cat(losses)).mean().item(),
                "val_reconstruction_l1": accelerator.gather_for_metrics(torch.cat(errors)).mean().item()}


METHODS: dict[str, type[PretrainingMethod]] = {m.name: m for m in (ComFaceMethod, FaceCycleMethod)}
LOSS_TERMS = {name: method.loss_terms for name, method in METHODS.items()}


def get_method(args: Any) -> PretrainingMethod:
    if args.method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {args.method!r}")
    return METHODS[args.method](args)


def validate(method: PretrainingMethod, model, val_source, accelerator, processor, s_max: float) -> dict[str, float]:
    """The method's validation with the model in eval mode, back in train mode after."""
    model.eval()
    try:
        return method.validate(accelerator.unwrap_model(model), val_source, accelerator, processor, s_max)
    finally:
        model.train()


def pair_options(args: Any) -> str:
    """The non-default ways a pair was made, as the model card states them ("" for the paper's)."""
    parts = []
    if args.pair_geometry == "shared":
        parts.append("y cropped and flipped as x1 (--pair_geometry shared)")
    if args.shared_capture_p > 0:
        parts.append(f"a pair's two images share one capture with probability {args.shared_capture_p}")
    if args.augmentation != "half" or args.crop_scale_min is not None:
        crop = augmentation_config(args.augmentation, args.crop_scale_min).crop_scale[0]
        parts.append(f"views augmented at {args.augmentation!r} strength, crops from {crop:g} of the area "
                     f"(--augmentation {args.augmentation}"
                     f"{f' --crop_scale_min {args.crop_scale_min:g}' if args.crop_scale_min is not None else ''})")
    return "; " + "; ".join(parts) if parts else ""


def model_card_values(args: Any, metrics: dict, steps: int, world: int, stream_generator=None) -> dict:
    """The model card's training data, procedure and validation lines for a ComFace run."""
    data = (
        f"Rendered on the fly by the embedded parametric face generator (`comface_hf.synthesis`, seed "
        f"{args.generator_seed}, renderer {args.renderer_version}"
        f"{'' if args.craniofacial_growth else ' without craniofacial growth'}, photographic capture strength "
        f"{args.photographic}): "
        f"{args.num_identities} identities split 90/10 by identity, attributes: "
        f"{args.attributes}, alpha in [{args.alpha_min}, {args.alpha_max}] step {args.alpha_step}, {args.image_size} px."
        if args.data_source == "stream"
        else f"The `comface_synthetic` corpus, configuration `{args.corpus_config}`, train split (90% of identities)."
    )
    if uses_generator_specs(args) and stream_generator is not None:
        data = stream_card_text(args, stream_generator)
    procedure = (
        f"`training/pretrain.py --preset {args.preset}`: {args.learning} learning, intra target {args.intra_target}, "
        f"curriculum {'off' if args.no_curriculum else 'on (Eq. 2, S_max = corpus span, stages ' + args.curriculum_stage_epochs + ' of 12 epochs, scaled)'}; "
        f"{args.num_epochs} epochs, {steps} optimiser steps, global batch {args.global_batch_size} on {world} process(es); "
        f"Adam lr {args.learning_rate} halved at epoch {args.lr_decay_epoch} of 12 (scaled); seed {args.seed}"
        f"{pair_options(args)}."
    )
    validation = {k: v for k, v in metrics.items() if k.startswith("val_")}
    return {"training_data": data, "training_procedure": procedure, "validation": validation,
            "model_id": args.hub_model_id or f"comface-{args.preset}"}


__all__ = ["ComFaceMethod", "FaceCycleMethod", "LOSS_TERMS", "METHODS", "PretrainingMethod", "get_method",
           "model_card_values", "validate"]

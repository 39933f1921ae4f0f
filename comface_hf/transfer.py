"""The downstream transfer protocol of ComFace (paper Sec. 3.4 and 4.2-4.3) as reusable functions.

One *run* = one task dataset x one initialisation x one mode (linear evaluation or fine-tuning):

1. :func:`load_task_dataset` gives a table of images with ``subject`` and ``value`` (a manual-data builder or a
   synthetic task rendered from identities pretraining never saw).
2. Pairs of images of one subject are sampled **once per task dataset with a fixed seed** (``data_seed``), saved to
   ``pairs.csv`` and filtered per fold by subject, so every method sees identical pairs (Sec. 4.2).
3. Four subject-disjoint folds; 10% of each fold's training subjects validate (model selection: the epoch with the
   best validation MAE is kept); the test subjects give MAE, Pearson correlation and direction accuracy.
4. Every fold starts again from the initial weights (:func:`build_change_model`): linear evaluation freezes f and
   trains l from scratch, fine-tuning trains f and l from the initial weights, both with MSE on value_y - value_x.

:func:`run_protocol` returns a JSON-able dict (per-fold metrics, mean and std over folds, settings, data report);
``training/transfer.py`` is the command line over it and :mod:`comface_hf.reports` turns results into tables.

Augmentation: the paper does not describe downstream augmentation, so none is applied by default; ``augment=True``
applies the pretraining SimCLR augmentation (:func:`comface_hf.augment.augment_batch`) to x and y independently
during training only (colour, crop and flip do not change expression, weight or age).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import datasets
import numpy as np
import torch
from torch import nn

from .image_processing_comface import COMFACE_MEAN, COMFACE_STD, ComFaceImageProcessor
from .linear_probe import DEFAULT_CV_FOLDS, DEFAULT_LOG10_GRID, fit_ridge_probe, fit_ridge_probe_cv, pair_features
from .peers import PEERS, parse_peer_list
from .transfer_data import (
    ChangePair,
    ChangePairDataset,
    Fold,
    compute_change_metrics,
    load_change_metrics,
    load_pairs,
    make_synthetic_task,
    pairs_for_subjects,
    sample_change_pairs,
    save_pairs,
    subject_kfold,
)

#: Tasks accepted by :func:`load_task_dataset` (and ``--task``).
TASKS: tuple[str, ...] = (
    "disfa_au6",
    "disfa_au12",
    "fgnet",
    "face_change",
    "synthetic_smile",
    "synthetic_weight",
    "synthetic_age",
)
#: ``linear``: f frozen, l from scratch; ``finetune``: f and l trained from the initial weights (Sec. 4.2).
MODES: tuple[str, ...] = ("linear", "finetune")
#: Forms of ``init`` understood by :func:`build_change_model`.
INIT_FORMS: str = (
    "'scratch' (random f, see --backbone), a ComFace checkpoint folder or Hub id, "
    "'timm:<backbone>:<weights file>' (e.g. ImageNet or face-recognition weights), 'facecycle:<folder>', or a peer "
    "(a face tool users already have, linear only: " + ", ".join(PEERS) + ")"
)
#: How the linear head's complexity is chosen (``--linear_selection``), the ridge penalty of the closed-form head or the
#: number of epochs of the SGD head: grouped cross-validation over the subjects of every non-test pair, then refitted
#: on all of them (default; see :func:`comface_hf.linear_probe.fit_ridge_probe_cv`), or the fold's validation subjects
#: alone (the earlier rule: two or three people choose it, which penalises weak features most).
LINEAR_SELECTIONS: tuple[str, ...] = ("cv", "val")
#: Input size of a scratch model when none is given: the embedded pretraining default (64 px).
DEFAULT_SCRATCH_IMAGE_SIZE = 64
#: Input size of a timm-weights model when none is given: what ImageNet weights are trained at.
DEFAULT_TIMM_IMAGE_SIZE = 224
#: Linear-head solvers (``--linear_solver``): the exact ridge head on cached features (default), or the paper's
#: gradient-trained head (Adam on MSE, Sec. 4.2).
LINEAR_SOLVERS: tuple[str, ...] = ("closed_form", "sgd")
#: Where fine-tuning's head l starts (``--head_init``): the init's own head (the pretrained l, or a fresh one for
#: scratch), or the exact ridge head on the init's frozen features, i.e. linear probing then fine-tuning (LP-FT; Kumar
#: et al., ICLR 2022: a head fitted first keeps the early, large gradients of a poor head from distorting f).
HEAD_INITS: tuple[str, ...] = ("pretrained", "ridge")
#: Adam learning rates of the gradient-trained paths (labels standardised, warm-up then cosine decay).
#: linear (sgd): checked to reach the closed-form optimum's validation MAE on the synthetic tasks; finetune: picked by
#: benchmarks/finetune_sweep.py on validation MAE (3e-3 of 3e-4 / 1e-3 / 3e-3, best for scratch and for ComFace on
#: synthetic age change; BENCHMARKS.md "Fine-tuning sweep").
DEFAULT_LR = {"linear": 1e-2, "finetune": 3e-3}
#: Maximum epochs of the gradient-trained paths (early stopping usually ends fine-tuning sooner).
DEFAULT_EPOCHS = {"linear": 100, "finetune": 15}
METRIC_NAMES: tuple[str, ...] = ("mae", "pearson", "direction_accuracy")
#: ``--align``: where a real photo's face landmarks come from (see :func:`load_task_dataset`).
ALIGN_MODES: tuple[str, ...] = ("auto", "landmarks", "detector", "none")
#: ``--align`` -> the builders' ``ManualDataConfig.landmarks`` option.
ALIGN_TO_LANDMARKS: dict[str, str] = {"auto": "auto", "landmarks": "dataset", "detector": "detector", "none": "none"}


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """A task's image table and what the builder left out.

    Attributes:
        task: one of :data:`TASKS`.
        dataset: ``datasets.Dataset`` with columns ``image``, ``subject``, ``value`` (one row per image).
        build_report: the builder's report as a dict (``num_rows``, ``bad_images``, ``single_image_subjects``...);
            ``None`` for synthetic tasks, which have nothing to skip.
        align: the ``--align`` mode the table was built with (:data:`ALIGN_MODES`).
    """

    task: str
    dataset: datasets.Dataset
    build_report: Optional[dict[str, Any]] = None
    align: str = "none"
    #: Aligned crops ``(row, size) -> PIL image`` made so far: warping a photo is the slow part of reading it, and it
    #: does not depend on the init, so every run over this table (inits, seeds, modes) shares it.
    crops: dict = field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> str:
        subjects = len(set(self.dataset["subject"]))
        text = f"{self.task}: {len(self.dataset)} images of {subjects} subjects"
        if self.build_report is not None:
            report = self.build_report
            text += (
                f"; builder skipped {len(report.get('bad_images', []))} unreadable image(s) and left out "
                f"{len(report.get('single_image_subjects', []))} subject(s) with fewer than 2 images"
            )
        return text


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    """Raise a ValueError listing the valid values when ``value`` is not one of them."""
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid values: {', '.join(valid)}.")


def load_task_dataset(
    task: str,
    data_dir: Optional[str] = None,
    *,
    image_size: int = 64,
    cache_dir: Optional[str] = None,
    data_seed: int = 0,
    synthetic_subjects: int = 40,
    synthetic_images_per_subject: int = 12,
    synthetic_nuisance: float = 1.0,
    max_frames_per_subject: Optional[int] = None,
    synthetic_generator: Any = None,
    align: str = "auto",
) -> TaskData:
    """Load (or render) a downstream task as one table of images.

    Args:
        task: one of :data:`TASKS`. ``disfa_au6``/``disfa_au12``/``fgnet``/``face_change`` read the user's copy in
            ``data_dir`` through ``dataset_builders``; ``synthetic_*`` render identities pretraining never saw.
        data_dir: the user's data folder (real tasks only; for ``face_change`` the folder holding the CSV).
        image_size: rendering resolution of synthetic tasks (the model's input size; real images are resized later).
        cache_dir: ``datasets`` cache for the builders.
        data_seed: seed of the synthetic rendering (alphas, nuisance) and of DISFA's frame subsampling.
        synthetic_subjects, synthetic_images_per_subject: size of a synthetic task.
        max_frames_per_subject: DISFA only: keep at most this many frames per subject (seeded).
        synthetic_generator: an ``EmbeddedFaceGenerator`` to reuse across tasks (saves its construction).
        align: where each photo's face landmarks come from (:data:`ALIGN_MODES`): ``auto`` (the dataset's own, e.g.
            FG-NET's ``.pts`` or a CSV column, else the face detector), ``landmarks`` (the dataset's only; images
            without are skipped), ``detector`` (always detect), ``none`` (whole images, shorter side resized and
            centre-cropped). The builder stores the landmarks (detections cached with the build); each image is then
            warped into the canonical face frame at ``image_size`` once per run. Synthetic faces are rendered in the
            frame: only ``auto`` and ``none`` apply to them.

    Returns:
        :class:`TaskData` with the builder's report.
    """
    check_choice("task", task, TASKS)
    check_choice("align", align, ALIGN_MODES)
    if task.startswith("synthetic_"):
        if align not in ("auto", "none"):
            raise ValueError(
                f"--align {align} does not apply to the synthetic task {task!r}: its faces are rendered in the "
                "canonical face frame already (no landmarks or detector needed). Use --align auto or none."
            )
        if data_dir:
            warnings.warn(f"--data_dir is ignored for the synthetic task {task!r} (its images are rendered).")
        dataset = make_synthetic_task(
            task.removeprefix("synthetic_"),
            num_subjects=synthetic_subjects,
            images_per_subject=synthetic_images_per_subject,
            image_size=image_size,
            seed=data_seed,
            nuisance=synthetic_nuisance,
            generator=synthetic_generator,
        )
        return TaskData(task, dataset, None, "none")

    if not data_dir:
        raise ValueError(
            f"Task {task!r} reads your own copy of the dataset (it cannot be downloaded): pass --data_dir <folder>. "
            "See dataset_builders/<name>/README.md for the expected layout, or use a synthetic_* task."
        )
    # Imported here: the builders live at the repository root (like metrics/), not inside the package.
    face = {"landmarks": ALIGN_TO_LANDMARKS[align], "face_size": int(image_size)}
    if task.startswith("disfa_"):
        from dataset_builders.disfa import Disfa

        builder = Disfa(
            config_name=task.removeprefix("disfa_"),
            data_dir=data_dir,
            cache_dir=cache_dir,
            max_frames_per_subject=max_frames_per_subject,
            seed=data_seed,
            **face,
        )
    elif task == "fgnet":
        from dataset_builders.fgnet import Fgnet

        builder = Fgnet(data_dir=data_dir, cache_dir=cache_dir, **face)
    else:
        from dataset_builders.face_change import FaceChange

        builder = FaceChange(data_dir=data_dir, cache_dir=cache_dir, **face)
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    report = builder.build_report
    return TaskData(task, dataset, report.to_dict() if report is not None else None, align)


def sample_task_pairs(
    data: TaskData, pairs_per_subject: int = 100, data_seed: int = 0, pairs_file: Optional[str] = None
) -> list[ChangePair]:
    """The task's pairs: loaded from ``pairs_file`` when given, else sampled with the fixed ``data_seed``.

    Sampling depends only on the task table and the seed (never on the init, mode or training seed), so separate runs
    of different methods get identical pairs; ``pairs_file`` reuses a saved ``pairs.csv`` explicitly.
    """
    if pairs_file:
        pairs = load_pairs(pairs_file)
        n = len(data.dataset)
        if any(not (0 <= p.index_x < n and 0 <= p.index_y < n) for p in pairs):
            raise ValueError(
                f"{pairs_file!r} refers to images beyond the {n} rows of {data.task!r}: it was saved for a different "
                "dataset (or builder options). Drop --pairs_file to sample new pairs."
            )
        return pairs
    return sample_change_pairs(data.dataset["subject"], data.dataset["value"], pairs_per_subject, seed=data_seed)


def make_folds(pairs: Sequence[ChangePair], n_folds: int = 4, data_seed: int = 0, val_fraction: float = 0.1) -> list[Fold]:
    """Subject-disjoint folds over the subjects that have pairs, with a clear error when there are too few."""
    subjects = sorted({p.subject for p in pairs})
    if len(subjects) < n_folds + 2:
        raise ValueError(
            f"{n_folds}-fold cross-validation needs at least {n_folds + 2} subjects with at least one pair "
            f"(each fold needs test, validation and training subjects), but only {len(subjects)} have pairs: "
            f"{', '.join(subjects[:10])}. Add subjects or use fewer folds (--folds, at least 2)."
        )
    return subject_kfold(subjects, n_folds=n_folds, seed=data_seed, val_fraction=val_fraction)


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ChangeModelSpec:
    """A change-estimation model with the input pipeline its initialisation requires.

    Attributes:
        model: ``ComFaceForChangeEstimation`` or ``FaceCycleForChangeEstimation`` (forward(pixel_values_x,
            pixel_values_y, labels) -> ``ChangeEstimationOutput``).
        image_size: input side S in pixels.
        image_mean, image_std: per-channel normalisation of [0, 1] images the initialisation was trained with.
        init_kind: ``scratch``, ``comface``, ``timm`` or ``facecycle``.
        method: a short name for tables (e.g. ``ComFace (model)``).
    """

    model: nn.Module
    image_size: int
    image_mean: list[float]
    image_std: list[float]
    init_kind: str
    method: str

    def image_processor(self) -> ComFaceImageProcessor:
        """Resize, centre-crop and normalise any image to what :attr:`model` expects."""
        return ComFaceImageProcessor(crop_size=self.image_size, image_mean=self.image_mean, image_std=self.image_std)


def _fixed_size(init: str, pretrained_size: int, requested: Optional[int]) -> int:
    """The init's own input size; a different explicit request is an error, not a silent resize."""
    if requested is not None and int(requested) != int(pretrained_size):
        raise ValueError(
            f"--image_size {requested} conflicts with init {init!r}, which was pretrained at {pretrained_size} px "
            f"(its config.image_size). Drop --image_size or pass --image_size {pretrained_size}."
        )
    return int(pretrained_size)


def _processor_stats(folder: str, default_mean: list[float], default_std: list[float]) -> tuple[list[float], list[float]]:
    """Normalisation saved with a checkpoint (preprocessor_config.json), else the method's default."""
    path = Path(folder) / "preprocessor_config.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("do_normalize", True) is False:
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        return list(saved.get("image_mean", default_mean)), list(saved.get("image_std", default_std))
    return list(default_mean), list(default_std)


def _config_model_type(init: str) -> Optional[str]:
    config = Path(init) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return None


def build_change_model(
    init: str,
    mode: str,
    image_size: Optional[int] = None,
    backbone: str = "resnet18",
    symmetric_change: bool = False,
    extra_features: Sequence[str] = (),
) -> ChangeModelSpec:
    """A change-estimation model initialised from ``init`` and prepared for ``mode``.

    Args:
        init: see :data:`INIT_FORMS`. A ComFace folder may come from any pretraining variant (both losses, intra-only,
            inter-only): f and l are transferred and g is dropped. A folder whose config says ``facecycle`` is loaded as
            FaceCycle even without the ``facecycle:`` prefix.
        mode: ``linear`` (freeze f, re-initialise l) or ``finetune`` (train f and l from the initial weights).
        image_size: input side; must match a pretrained checkpoint's ``config.image_size`` (error otherwise). Defaults
            to the checkpoint's size, :data:`DEFAULT_SCRATCH_IMAGE_SIZE` for scratch, :data:`DEFAULT_TIMM_IMAGE_SIZE`
            for timm weights.
        backbone: timm architecture for ``scratch``.
        symmetric_change: ComFace models: predict (d(x, y) - d(y, x)) / 2 (sign flips exactly when x, y swap).
        extra_features: peers (:data:`comface_hf.peers.PEERS`) whose per-image vectors are appended to f's features
            (fusion): the model becomes a :class:`~comface_hf.modeling_change_estimator.ChangeEstimator` taking
            aligned crops in [0, 1] at the largest size any part needs (f sees them resized to its own size).

    Returns:
        :class:`ChangeModelSpec`.
    """
    from .configuration_comface import ComFaceConfig
    from .modeling_comface import ComFaceForChangeEstimation
    from .modeling_facecycle import FaceCycleForChangeEstimation

    check_choice("mode", mode, MODES)
    if not isinstance(init, str) or not init:
        raise ValueError(f"--init is required: {INIT_FORMS}.")

    extra_features = parse_peer_list(extra_features)
    if init in PEERS:
        return _peer_spec([init, *[p for p in extra_features if p != init]], mode, init)
    if init == "scratch":
        size = int(image_size or DEFAULT_SCRATCH_IMAGE_SIZE)
        model = ComFaceForChangeEstimation(
            ComFaceConfig(backbone=backbone, image_size=size, symmetric_change=symmetric_change)
        )
        spec = ChangeModelSpec(model, size, list(COMFACE_MEAN), list(COMFACE_STD), "scratch", f"Scratch ({backbone})")
    elif init.startswith("timm:"):
        parts = init.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ValueError(f"--init {init!r}: write timm weights as 'timm:<backbone>:<weights file>'.")
        _, timm_name, weights = parts
        size = int(image_size or DEFAULT_TIMM_IMAGE_SIZE)
        model = ComFaceForChangeEstimation.from_timm_weights(
            timm_name, weights, image_size=size, symmetric_change=symmetric_change
        )
        # General pre-training expects its own normalisation (e.g. ImageNet mean/std), which timm records.
        from timm.data import resolve_data_config

        data_config = resolve_data_config({}, model=model.backbone)
        mean, std = list(data_config["mean"]), list(data_config["std"])
        spec = ChangeModelSpec(model, size, mean, std, "timm", f"{timm_name} ({Path(weights).stem})")
    elif init.startswith("facecycle:") or _config_model_type(init) == "facecycle":
        folder = init.removeprefix("facecycle:")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--init {init!r}: FaceCycle folder {folder!r} does not exist.")
        model = FaceCycleForChangeEstimation.from_facecycle(folder)
        size = _fixed_size(init, model.config.image_size, image_size)
        # FaceCycle is trained on faces in [0, 1] unless its folder saved another normalisation.
        mean, std = _processor_stats(folder, [0.0] * 3, [1.0] * 3)
        spec = ChangeModelSpec(model, size, mean, std, "facecycle", f"FaceCycle ({Path(folder).name})")
    else:
        if os.path.exists(init) and not os.path.isdir(init):
            raise ValueError(f"--init {init!r} is a file, not a checkpoint folder. Valid forms: {INIT_FORMS}.")
        model_type = _config_model_type(init)
        if model_type not in (None, "comface"):
            raise ValueError(f"--init {init!r} holds a {model_type!r} model, not ComFace. Valid forms: {INIT_FORMS}.")
        try:
            model = ComFaceForChangeEstimation.from_pretrained(init, symmetric_change=symmetric_change)
        except OSError as exc:
            if os.path.isdir(init):
                raise
            raise OSError(
                f"--init {init!r} is neither a local folder nor a Hub checkpoint that can be loaded ({exc}). "
                f"Valid forms: {INIT_FORMS}. Offline (HF_HUB_OFFLINE=1) only cached Hub ids load."
            ) from exc
        size = _fixed_size(init, model.config.image_size, image_size)
        mean, std = _processor_stats(init, COMFACE_MEAN, COMFACE_STD) if os.path.isdir(init) else (COMFACE_MEAN, COMFACE_STD)
        spec = ChangeModelSpec(model, size, list(mean), list(std), "comface", f"ComFace ({Path(init).name})")

    if extra_features:
        if spec.init_kind == "facecycle":
            raise ValueError("--extra_features applies to ComFace, scratch and timm inits, not FaceCycle's model.")
        from .modeling_change_estimator import ChangeEstimator

        model = ChangeEstimator.from_parts(
            spec.model, extra_features, backbone_image_size=spec.image_size, backbone_mean=spec.image_mean,
            backbone_std=spec.image_std, init=init,
        )
        spec = ChangeModelSpec(model, model.config.image_size, [0.0] * 3, [1.0] * 3, spec.init_kind,
                               f"{spec.method} + {' + '.join(extra_features)}")
    if mode == "linear":
        spec.model.prepare_linear_evaluation()
    return spec


def _peer_spec(peers: list[str], mode: str, init: str) -> ChangeModelSpec:
    """A peer (with any further peers fused) as an init: no learned f, linear evaluation only."""
    from .modeling_change_estimator import ChangeEstimator

    if mode != "linear":
        raise ValueError(
            f"--init {init} is a peer: its vectors are fixed (no dlib or ONNX network is fine-tuned), so it takes "
            "part in linear evaluation only. Use --mode linear, or fuse it into a ComFace init with --extra_features."
        )
    for name in peers:
        from .peers import get_peer

        get_peer(name).check_available()
    model = ChangeEstimator.from_parts(None, peers, init=init)
    spec = ChangeModelSpec(model, model.config.image_size, [0.0] * 3, [1.0] * 3, "peer", " + ".join(peers))
    spec.model.prepare_linear_evaluation()
    return spec


# ---------------------------------------------------------------------------------------------------------------------
# One fold
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TransferSettings:
    """Optimisation settings shared by all folds of a run.

    Linear evaluation defaults to the exact ridge head (:mod:`comface_hf.linear_probe`): f runs once per image, the
    least-squares head on ``ReLU(f(y) - f(x))`` is solved in closed form for a grid of L2 penalties; the penalty is
    chosen by grouped cross-validation over the subjects of the training and validation pairs and the head refitted on
    all of them (``linear_selection="cv"``), or the penalty with the best validation MAE is kept (``"val"``);
    ``epochs``/``lr`` do not apply. ``linear_solver="sgd"`` trains the head
    with Adam as in the paper; it and fine-tuning use: labels standardised with the training pairs' mean and std (the
    head is mapped back afterwards, so predictions and metrics are in the task's units), a linear warm-up over
    ``warmup_fraction`` of the steps then cosine decay to 0, model selection on validation MAE after every epoch and
    early stopping after ``patience`` epochs without improvement (0: never stop early).
    """

    epochs: Optional[int] = None  # None: DEFAULT_EPOCHS[mode]
    batch_size: int = 32
    lr: Optional[float] = None  # None: DEFAULT_LR[mode]
    weight_decay: float = 0.0
    seed: int = 0
    augment: bool = False
    num_workers: int = 0
    show_progress: bool = True
    # Linear evaluation without augmentation: f is frozen and in eval mode, so f(image) is a fixed function; computing
    # it once per image and training l on the stored features gives the same model as running f every step, at a
    # fraction of the cost (the many-epoch regime linear probes need). The closed-form solver always uses features.
    cache_features: bool = True
    linear_solver: str = "closed_form"
    ridge_log10_grid: tuple[float, ...] = DEFAULT_LOG10_GRID  # alpha = n_train * 10^k (closed form)
    linear_selection: str = "cv"  # LINEAR_SELECTIONS: grouped CV over the non-test subjects, or the validation subjects
    ridge_cv_folds: int = DEFAULT_CV_FOLDS  # inner folds of linear_selection="cv" (penalty or SGD epochs)
    # Keep the last epoch instead of the one with the best validation MAE (the SGD head's refit at the epoch count that
    # cross-validation chose).
    select_last_epoch: bool = False
    standardize_labels: bool = True
    warmup_fraction: float = 0.1
    schedule: str = "cosine"  # or "constant" (the paper's plain Adam)
    patience: int = 5
    # Gradient-norm clipping of the gradient-trained paths (None: off, the default recipe).
    max_grad_norm: Optional[float] = None
    # Decode (and align) every image once per run and keep the model-ready tensors in memory.
    cache_images: bool = True
    head_init: str = "pretrained"  # fine-tuning only: HEAD_INITS
    # Fine-tuning only: the encoder f learns at lr * this, the head l at lr (discriminative learning rates; 1: one lr).
    encoder_lr_scale: float = 1.0

    def learning_rate(self, mode: str) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[mode])

    def num_epochs(self, mode: str) -> int:
        return int(self.epochs if self.epochs is not None else DEFAULT_EPOCHS[mode])

    def uses_closed_form(self, mode: str) -> bool:
        return mode == "linear" and self.linear_solver == "closed_form"

    def check(self) -> None:
        """Clear errors for settings that cannot work together."""
        check_choice("linear_solver", self.linear_solver, LINEAR_SOLVERS)
        check_choice("linear_selection", self.linear_selection, LINEAR_SELECTIONS)
        if self.ridge_cv_folds < 2:
            raise ValueError(f"ridge_cv_folds must be >= 2, got {self.ridge_cv_folds}.")
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        check_choice("head_init", self.head_init, HEAD_INITS)
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}.")
        if not (self.encoder_lr_scale >= 0 and math.isfinite(self.encoder_lr_scale)):
            raise ValueError(f"encoder_lr_scale must be a finite number >= 0, got {self.encoder_lr_scale}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 (or None for no clipping), got {self.max_grad_norm}.")
        if self.augment and self.linear_solver == "closed_form":
            raise ValueError(
                "--augment needs a gradient-trained head (every step sees new augmented images); the closed-form "
                "linear head is solved once on fixed features. Use --linear_solver sgd with --augment."
            )


class _RowTensors:
    """Model-ready tensors of the task's images, computed on first use and (with ``keep``) kept in memory.

    ``transform`` maps one dataset row (``image`` and, for real photos, ``landmarks``/``landmark_scheme``) to a
    normalised ``[C, S, S]`` tensor; with ``keep`` each image is decoded and aligned once per run, whatever the number
    of epochs and folds.
    """

    def __init__(self, data: TaskData, transform: Callable[[dict], torch.Tensor], keep: bool = True):
        columns = [c for c in ("image", "landmarks", "landmark_scheme") if c in data.dataset.column_names]
        self.rows = data.dataset.select_columns(columns)
        self.transform, self.keep = transform, keep
        self.cache: dict[int, torch.Tensor] = {}
        self.crops = data.crops if isinstance(transform, RowTransform) else None

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        tensor = self.cache.get(index)
        if tensor is None:
            if self.crops is not None:  # the aligned crop is shared by every run over the same table
                key = (index, self.transform.size)
                crop = self.crops.get(key)
                if crop is None:
                    crop = self.transform.crop(self.rows[index])
                    if self.keep:
                        self.crops[key] = crop
                tensor = self.transform.to_tensor(crop)
            else:
                tensor = self.transform(self.rows[index])
            if self.keep:
                self.cache[index] = tensor
        return tensor

    def warm(self, indices: Sequence[int], show_progress: bool = False) -> None:
        """Decode and align ``indices`` now (with a progress bar), so epochs only read memory."""
        from tqdm.auto import tqdm

        if not self.keep:
            return
        todo = sorted({int(i) for i in indices} - self.cache.keys())
        for i in tqdm(todo, desc="decoding and aligning images", disable=not show_progress or len(todo) < 50,
                      leave=False):
            self[i]


class RowTransform:
    """One dataset row -> the model's input: warped into the canonical face frame with the row's own landmarks (when
    the builder stored some, see ``--align``), then resized/normalised by the image processor with ``align=False``.

    Rows without landmarks (``--align none``, rendered synthetic faces) go to the processor whole (shorter side
    resized, centre crop). The same function serves linear evaluation and fine-tuning; :meth:`crop` (the slow,
    init-independent part) and :meth:`to_tensor` are separate so crops can be shared across inits.
    """

    def __init__(self, spec: ChangeModelSpec):
        from .face_alignment import FaceAligner

        self.size = int(spec.image_size)
        self.processor = spec.image_processor()
        self.aligner = FaceAligner(size=self.size, detector=None, skip_if_aligned=False, warn_small=False)

    def crop(self, row: dict) -> Any:
        image = row["image"]
        landmarks = row.get("landmarks")
        if landmarks is not None and len(landmarks) > 0:
            image = self.aligner.align(image, landmarks=landmarks, scheme=row.get("landmark_scheme") or "auto").image
        return image

    def to_tensor(self, image: Any) -> torch.Tensor:
        return self.processor(image, align=False, return_tensors="pt")["pixel_values"][0]

    def __call__(self, row: dict) -> torch.Tensor:
        return self.to_tensor(self.crop(row))


def row_transform(spec: ChangeModelSpec) -> RowTransform:
    """The per-row input function of ``spec`` (see :class:`RowTransform`)."""
    return RowTransform(spec)


class _StoredPairs(torch.utils.data.Dataset):
    """Pairs over stored per-image tensors (images or backbone features) with ``pair_index`` (the row of pairs.csv).

    ``store[row]`` is the tensor of image row ``row`` (``row_of`` maps image rows to store rows; identity when
    omitted). With features, the ``pixel_values_x``/``pixel_values_y`` keys hold h `[F]` (not images) so that the
    training loop, `accelerator.prepare` and `gather_for_metrics` stay identical; `_HeadOnFeatures` consumes them.
    """

    def __init__(self, store: Any, pairs: Sequence[ChangePair], indices: Sequence[int],
                 row_of: Optional[dict[int, int]] = None):
        self.store, self.row_of, self.pairs, self.indices = store, row_of, list(pairs), list(indices)

    def __len__(self) -> int:
        return len(self.pairs)

    def _get(self, row: int) -> torch.Tensor:
        return self.store[self.row_of[row] if self.row_of is not None else row]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.pairs[i]
        return {
            "pixel_values_x": self._get(p.index_x),
            "pixel_values_y": self._get(p.index_y),
            "labels": torch.tensor(p.label, dtype=torch.float32),
            "pair_index": torch.tensor(self.indices[i]),
        }


def _augment_normalised(pixel_values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator):
    """SimCLR augmentation of normalised images: undo the normalisation, augment in [0, 1], normalise again."""
    from .augment import augment_batch

    return (augment_batch((pixel_values * std + mean).clamp(0, 1), generator) - mean) / std


class _HeadOnFeatures(nn.Module):
    """l applied to stored features: the change-estimation forward with f already evaluated.

    The same step as the models' forward after the backbone (`change_from_features`, including `symmetric_change`),
    sharing the model's `difference_head` module, so training this trains the model's l.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.difference_head = model.difference_head
        self.symmetric = bool(getattr(model.config, "symmetric_change", False))

    def forward(self, pixel_values_x: torch.Tensor, pixel_values_y: torch.Tensor, labels: Optional[torch.Tensor] = None):
        from .modeling_comface import change_from_features

        return change_from_features(self.difference_head, pixel_values_x, pixel_values_y, labels, self.symmetric)


@torch.no_grad()
def _backbone_features(
    model: nn.Module, images: _RowTensors, image_indices: Sequence[int], batch_size: int, device
) -> tuple[torch.Tensor, dict[int, int]]:
    """f(image) `[U, F]` (CPU) for the given image rows, and image row -> feature row."""
    model.to(device)
    model.backbone.eval()
    rows = sorted(set(int(i) for i in image_indices))
    chunks = []
    for start in range(0, len(rows), 2 * batch_size):
        batch = torch.stack([images[i] for i in rows[start : start + 2 * batch_size]])
        chunks.append(model.backbone(batch.to(device)).float().cpu())
    return torch.cat(chunks), {row: k for k, row in enumerate(rows)}


def _fit_ridge_head(model: nn.Module, images: _RowTensors, image_rows: Sequence[int], split: dict[str, list],
                    settings: "TransferSettings", device, label_scale: Optional["_LabelScale"] = None):
    """Solve the exact ridge head on f's frozen features and write it into ``model.difference_head.linear``, in
    ``label_scale``'s units when given (LP-FT's start), else the task's. The penalty is chosen as
    ``settings.linear_selection`` says: grouped CV over the subjects of ``split["train"] + split["val"]`` (then refitted
    on both), or on ``split["val"]`` (fitted on ``split["train"]``). Returns the probe and the test design
    ``(features, labels)``."""
    symmetric = bool(getattr(model.config, "symmetric_change", False))
    features, row_of = _backbone_features(model, images, image_rows, settings.batch_size, device)
    feats = features.double().numpy()

    def design(subset):
        fx = feats[[row_of[p.index_x] for p in subset]]
        fy = feats[[row_of[p.index_y] for p in subset]]
        return pair_features(fx, fy, symmetric), np.array([p.label for p in subset], dtype=np.float64)

    if settings.linear_selection == "cv":
        fit_pairs = list(split["train"]) + list(split["val"])
        x, y = design(fit_pairs)
        probe = fit_ridge_probe_cv(x, y, [p.subject for p in fit_pairs], symmetric=symmetric,
                                   log10_grid=settings.ridge_log10_grid, n_splits=settings.ridge_cv_folds)
    else:
        (train_x, train_y), (val_x, val_y) = design(split["train"]), design(split["val"])
        probe = fit_ridge_probe(train_x, train_y, val_x, val_y, symmetric=symmetric,
                                log10_grid=settings.ridge_log10_grid)
    write_ridge_head(model, probe, label_scale)
    return probe, design(split["test"]) if split.get("test") else None


def write_ridge_head(model: nn.Module, probe: Any, label_scale: Optional["_LabelScale"] = None) -> None:
    """The probe's weights as ``model.difference_head.linear`` (in ``label_scale``'s units when given)."""
    scale = label_scale or _LabelScale()
    head = model.difference_head.linear
    with torch.no_grad():
        # The symmetric head predicts w.(h_y - h_x)/2 and the probe's features are (h_y - h_x)/2: same w.
        head.weight.copy_(torch.from_numpy(probe.coef / scale.std).to(head.weight.dtype).view_as(head.weight))
        head.bias.fill_((probe.intercept - scale.mean) / scale.std)


@dataclass
class _LabelScale:
    """Training-label standardisation: the model learns (label - mean) / std; predictions are mapped back."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, labels: Sequence[float], enabled: bool, symmetric: bool) -> "_LabelScale":
        labels = np.asarray(labels, dtype=np.float64)
        if not enabled or len(labels) == 0:
            return cls()
        # The symmetric head has no usable bias (it cancels), so its labels are only scaled (root mean square).
        mean = 0.0 if symmetric else float(labels.mean())
        std = float(np.sqrt(np.mean((labels - mean) ** 2)))
        return cls(mean, std if std > 1e-12 else 1.0)

    def scale(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels - self.mean) / self.std

    def unscale(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean

    @torch.no_grad()
    def fold_into_head(self, model: nn.Module) -> None:
        """Make the model's own output the task's units: l(.) * std + mean (exact for both head variants)."""
        linear = model.difference_head.linear
        linear.weight.mul_(self.std)
        linear.bias.mul_(self.std).add_(self.mean)


@torch.no_grad()
def _predict(model: nn.Module, loader, accelerator, label_scale: Optional[_LabelScale] = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair_index, prediction in task units, label) over a prepared loader, gathered from all processes."""
    model.eval()
    label_scale = label_scale or _LabelScale()
    indices, preds, labels = [], [], []
    for batch in loader:
        index = batch.pop("pair_index")
        change = label_scale.unscale(model(batch["pixel_values_x"], batch["pixel_values_y"]).change.float())
        index, change, label = accelerator.gather_for_metrics((index, change, batch["labels"].float()))
        indices.append(index.cpu())
        preds.append(change.cpu())
        labels.append(label.cpu())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    return torch.cat(indices).numpy(), torch.cat(preds).double().numpy(), torch.cat(labels).double().numpy()


def _lr_lambda(total_steps: int, warmup_fraction: float, schedule: str) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0 (or constant)."""
    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def still_improving(history: Sequence[dict[str, float]], key: str = "val_loss") -> bool:
    """Whether the validation loss was still falling at the last epoch (a sign of stopping too early)."""
    values = [h[key] for h in history if h.get("epoch", 0) >= 1 and h.get(key) is not None]
    return len(values) >= 2 and values[-1] < values[-2] and values[-1] <= min(values)


@dataclass
class FoldResult:
    """Outcome of :func:`run_fold`.

    Attributes:
        metrics: test ``{"mae", "pearson", "direction_accuracy"}`` of the selected model.
        best_epoch: 1-based epoch with the best validation MAE (the weights kept for testing); 0 for the closed-form
            head (no epochs).
        history: per epoch ``{"epoch", "train_loss", "val_loss", "val_mae", "lr"}``; for the closed-form head per
            penalty ``{"alpha", "val_loss", "val_mae"}``.
        predictions: ``[(pair_index, prediction, label)]`` on the test pairs.
        model: the unwrapped model holding the selected weights (on CPU), predicting in the task's units.
        seconds: wall time of the fold.
        selection: how the model was selected (``{"alpha": ...}`` or ``{"epoch": ..., "stopped_at": ...}``).
    """

    metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    predictions: list[tuple[int, float, float]]
    model: nn.Module
    seconds: float
    num_pairs: dict[str, int] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)


def run_fold(
    spec: ChangeModelSpec,
    mode: str,
    data: TaskData,
    pairs: Sequence[ChangePair],
    fold: Fold,
    settings: TransferSettings,
    accelerator: Any = None,
    metrics_modules: Optional[dict[str, Any]] = None,
    description: str = "fold",
    images: Optional[_RowTensors] = None,
) -> FoldResult:
    """Train on ``fold.train`` subjects, select on ``fold.val``, test on ``fold.test``.

    ``spec.model`` must hold the initial weights (already prepared for ``mode`` by :func:`build_change_model`); it is
    trained in place. Linear evaluation with the default ``closed_form`` solver runs f once per image and solves the
    ridge head exactly, the penalty chosen on the validation pairs (:func:`comface_hf.linear_probe.fit_ridge_probe`).
    Otherwise only parameters with ``requires_grad`` are optimised (Adam on standardised labels, warm-up + cosine,
    early stopping on validation MAE). ``images`` shares decoded/aligned tensors across folds.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    start = time.perf_counter()
    settings.check()
    accelerator = accelerator or Accelerator()
    metrics_modules = metrics_modules or load_change_metrics()
    index_of = {p: i for i, p in enumerate(pairs)}
    split = {name: pairs_for_subjects(pairs, getattr(fold, name)) for name in ("train", "val", "test")}
    for name, subset in split.items():
        if not subset:
            raise ValueError(f"{description}: no {name} pairs (subjects {getattr(fold, name)}); add subjects or pairs.")
    images = images or _RowTensors(data, row_transform(spec), keep=settings.cache_images)
    image_rows = [i for subset in split.values() for p in subset for i in (p.index_x, p.index_y)]
    images.warm(image_rows, settings.show_progress and accelerator.is_local_main_process)
    symmetric = bool(getattr(spec.model.config, "symmetric_change", False))

    if settings.uses_closed_form(mode):
        probe, (test_x, test_y) = _fit_ridge_head(spec.model, images, image_rows, split, settings, accelerator.device)
        pred = probe.predict(test_x)
        index = np.array([index_of[p] for p in split["test"]])
        metrics = compute_change_metrics(pred, test_y, metrics_modules)
        result_model = spec.model.cpu()
        return FoldResult(
            metrics=metrics, best_epoch=0, history=probe.history,
            predictions=[(int(i), float(p), float(t)) for i, p, t in zip(index, pred, test_y)],
            model=result_model, seconds=time.perf_counter() - start,
            num_pairs={name: len(subset) for name, subset in split.items()},
            selection={"solver": "closed_form", "penalty_selection": settings.linear_selection, "alpha": probe.alpha,
                       "alpha_over_n_train": probe.alpha / len(split["train"]) if settings.linear_selection == "val"
                       else probe.alpha / (len(split["train"]) + len(split["val"])),
                       "val_mae": float(probe.val_mae[probe.selected_index])},
        )

    if mode == "linear" and settings.linear_selection == "cv" and not settings.select_last_epoch:
        return _sgd_head_by_cv(spec, data, pairs, fold, settings, accelerator, metrics_modules, description, images,
                               start)

    use_features = mode == "linear" and settings.cache_features and not settings.augment
    if use_features:
        store, row_of = _backbone_features(spec.model, images, image_rows, settings.batch_size, accelerator.device)
        model: nn.Module = _HeadOnFeatures(spec.model)
    else:
        store, row_of, model = images, None, spec.model
    loaders = {
        name: torch.utils.data.DataLoader(
            _StoredPairs(store, subset, [index_of[p] for p in subset], row_of),
            batch_size=settings.batch_size, shuffle=(name == "train"),
            generator=torch.Generator().manual_seed(settings.seed),
            num_workers=0 if use_features else settings.num_workers,
        )
        for name, subset in split.items()
    }
    label_scale = _LabelScale.fit([p.label for p in split["train"]], settings.standardize_labels, symmetric)
    if mode == "finetune" and settings.head_init == "ridge":
        # LP-FT's start is fitted on the training subjects alone: the validation subjects then select its epochs.
        _fit_ridge_head(spec.model, images, image_rows, split, replace(settings, linear_selection="val"),
                        accelerator.device, label_scale)
    epochs = settings.num_epochs(mode)
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = settings.learning_rate(mode)
    head = {id(p) for p in model.difference_head.parameters()}
    groups = [{"params": [p for p in trainable if id(p) in head], "lr": lr},
              {"params": [p for p in trainable if id(p) not in head], "lr": lr * settings.encoder_lr_scale}]
    optimizer = torch.optim.Adam([g for g in groups if g["params"]], weight_decay=settings.weight_decay)
    steps = epochs * len(loaders["train"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(steps, settings.warmup_fraction, settings.schedule)
    )
    model, optimizer, train_dl, val_dl, test_dl, scheduler = accelerator.prepare(
        model, optimizer, loaders["train"], loaders["val"], loaders["test"], scheduler
    )
    unwrapped = accelerator.unwrap_model(model)
    mean = torch.tensor(spec.image_mean, device=accelerator.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.image_std, device=accelerator.device).view(1, -1, 1, 1)
    aug_generator = torch.Generator().manual_seed(settings.seed + accelerator.process_index)

    def validate() -> tuple[float, float]:
        _, pred, label = _predict(model, val_dl, accelerator, label_scale)
        return float(np.mean((pred - label) ** 2)), float(np.mean(np.abs(pred - label)))

    # Epoch 0 (the initial weights) is recorded for reference but is not a candidate: selection picks among trained
    # epochs, as in the paper (a re-initialised l would otherwise compete as a zero predictor).
    val_loss, val_mae = validate()
    history = [{"epoch": 0, "train_loss": float("nan"), "val_loss": val_loss, "val_mae": val_mae}]
    best_mae, best_epoch, best_state, since_best = math.inf, 0, None, 0
    progress = tqdm(
        total=steps, desc=description, disable=not (settings.show_progress and accelerator.is_local_main_process),
        leave=False,
    )
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for batch in train_dl:
            batch.pop("pair_index")
            batch["labels"] = label_scale.scale(batch["labels"])
            if settings.augment:
                batch["pixel_values_x"] = _augment_normalised(batch["pixel_values_x"], mean, std, aug_generator)
                batch["pixel_values_y"] = _augment_normalised(batch["pixel_values_y"], mean, std, aug_generator)
            loss = model(**batch).loss
            accelerator.backward(loss)
            if settings.max_grad_norm is not None:
                accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float())
            progress.update(1)
        # Training loss in the task's units (MSE scales with std^2), comparable to the validation loss.
        train_loss = accelerator.gather(torch.stack(losses).mean().reshape(1)).mean().item() * label_scale.std**2
        val_loss, val_mae = validate()
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_mae": val_mae,
                        "lr": float(scheduler.get_last_lr()[0])})
        progress.set_postfix(train_loss=f"{train_loss:.3f}", val_mae=f"{val_mae:.3f}")
        if best_state is None or val_mae < best_mae or settings.select_last_epoch:  # every process keeps one epoch
            best_mae, best_epoch, since_best = val_mae, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
        else:
            since_best += 1
            if settings.patience and since_best >= settings.patience:
                break
    progress.close()
    stopped_at = history[-1]["epoch"]
    if mode == "linear" and stopped_at == epochs and still_improving(history) and not settings.select_last_epoch:
        warnings.warn(
            f"{description}: the validation loss was still falling at the last epoch ({epochs}); the SGD head has not "
            "converged. Raise --epochs or --lr, or use the exact head (--linear_solver closed_form).",
            stacklevel=2,
        )

    unwrapped.load_state_dict(best_state)
    index, pred, label = _predict(model, test_dl, accelerator, label_scale)
    metrics = compute_change_metrics(pred, label, metrics_modules)
    result_model = spec.model.cpu()  # with cached features, `unwrapped` is only the head: return the whole model
    label_scale.fold_into_head(result_model)  # the returned model predicts in the task's units
    accelerator.free_memory()  # drops the prepared references so the next fold starts clean
    return FoldResult(
        metrics=metrics,
        best_epoch=best_epoch,
        history=history,
        predictions=[(int(i), float(p), float(t)) for i, p, t in zip(index, pred, label)],
        model=result_model,
        seconds=time.perf_counter() - start,
        num_pairs={name: len(subset) for name, subset in split.items()},
        selection={"solver": "sgd" if mode == "linear" else "finetune", "epoch": best_epoch, "stopped_at": stopped_at,
                   "label_mean": label_scale.mean, "label_std": label_scale.std},
    )


def _sgd_head_by_cv(spec: ChangeModelSpec, data: TaskData, pairs: Sequence[ChangePair], fold: Fold,
                    settings: TransferSettings, accelerator: Any, metrics_modules: dict, description: str,
                    images: _RowTensors, start: float) -> FoldResult:
    """The SGD head with its number of epochs chosen by grouped cross-validation over the subjects of the fold's
    training and validation pairs (as the closed-form head's penalty): every inner fold trains the head from the same
    initial weights for ``epochs`` epochs (no early stopping) and records the held-out MAE of each epoch; the epoch
    count with the lowest MAE pooled over the held-out pairs is then trained on all of them and tested."""
    from sklearn.model_selection import GroupKFold

    subjects = np.array(sorted(set(fold.train) | set(fold.val)))
    initial = copy.deepcopy(spec.model.state_dict())
    inner_settings = replace(settings, linear_selection="val", patience=0, show_progress=False)
    error_sum, held_out = None, 0
    for k, (inner_train, inner_val) in enumerate(
            GroupKFold(n_splits=min(settings.ridge_cv_folds, len(subjects))).split(subjects, groups=subjects)):
        spec.model.load_state_dict(initial)
        inner = Fold(train=list(subjects[inner_train]), val=list(subjects[inner_val]), test=list(subjects[inner_val]))
        result = run_fold(spec, "linear", data, pairs, inner, inner_settings, accelerator, metrics_modules,
                          description=f"{description} inner {k + 1}", images=images)
        n = result.num_pairs["val"]
        curve = n * np.array([h["val_mae"] for h in result.history if h["epoch"] >= 1])
        error_sum = curve if error_sum is None else error_sum + curve
        held_out += n
        spec.model = result.model
    best_epochs = int(np.argmin(error_sum)) + 1
    spec.model.load_state_dict(initial)
    final = run_fold(spec, "linear", data, pairs, Fold(train=list(subjects), val=list(fold.val), test=list(fold.test)),
                     replace(settings, epochs=best_epochs, patience=0, select_last_epoch=True), accelerator,
                     metrics_modules, description=description, images=images)
    final.seconds = time.perf_counter() - start
    final.selection.update({"epoch_selection": "cv", "epochs_by_cv": best_epochs,
                            "cv_mae": float(error_sum[best_epochs - 1] / held_out)})
    return final


# ---------------------------------------------------------------------------------------------------------------------
# The whole protocol
# ---------------------------------------------------------------------------------------------------------------------


def aggregate(per_fold: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one fold) of each metric over folds."""
    out = {}
    for name in METRIC_NAMES:
        values = np.array([m[name] for m in per_fold], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[name] = {"mean": float(values.mean()), "std": std}
    return out


def run_protocol(
    task: str,
    init: str,
    mode: str,
    *,
    data: Optional[TaskData] = None,
    data_dir: Optional[str] = None,
    output_dir: Optional[str] = None,
    folds: int = 4,
    val_fraction: float = 0.1,
    pairs_per_subject: int = 100,
    pairs_file: Optional[str] = None,
    data_seed: int = 0,
    image_size: Optional[int] = None,
    backbone: str = "resnet18",
    symmetric_change: bool = False,
    settings: Optional[TransferSettings] = None,
    method: Optional[str] = None,
    accelerator: Any = None,
    data_kwargs: Optional[dict[str, Any]] = None,
    keep_models: bool = False,
    align: str = "auto",
    extra_features: Sequence[str] = (),
) -> dict[str, Any]:
    """Cross-validated transfer of ``init`` to ``task`` in ``mode`` (Sec. 4.2); optionally writes the run's files.

    Args:
        task, init, mode: see :data:`TASKS`, :data:`INIT_FORMS`, :data:`MODES`.
        data: an already loaded task (reused across inits; must be the table of ``task``); loaded when omitted.
        data_dir: the user's data folder for real tasks.
        output_dir: when given (main process), writes ``pairs.csv``, ``results.json``, ``predictions.csv`` and
            ``scatter.png``.
        folds, val_fraction: subject-disjoint cross-validation (4 and 10% in the paper).
        pairs_per_subject, pairs_file, data_seed: how pairs are drawn (see :func:`sample_task_pairs`); ``data_seed``
            also fixes the folds and the synthetic rendering, independently of the training ``settings.seed``.
        image_size, backbone, symmetric_change: see :func:`build_change_model`.
        settings: optimisation settings (:class:`TransferSettings`).
        method: row name in tables (default: derived from ``init``).
        accelerator: an ``accelerate.Accelerator`` (one is created when omitted).
        data_kwargs: extra arguments of :func:`load_task_dataset` (``synthetic_subjects``, ``cache_dir``...).
        keep_models: also return the per-fold trained models under ``"models"`` (not JSON-able; for tests).
        align: where real photos' face landmarks come from (:data:`ALIGN_MODES`; ignored when ``data`` is given,
            which carries its own).
        extra_features: peers fused into the init's features (see :func:`build_change_model`).

    Returns:
        dict with ``task``, ``init``, ``mode``, ``method``, ``settings``, ``data`` (sizes, build report), ``folds``
        (per fold: subjects, pair counts, best epoch, history, test metrics, seconds), ``aggregate`` (mean/std over
        folds) and ``predictions`` (``[fold, pair_index, prediction, label]``).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_choice("task", task, TASKS)
    check_choice("mode", mode, MODES)
    settings = settings or TransferSettings()
    settings.check()
    check_choice("align", align, ALIGN_MODES)
    accelerator = accelerator or Accelerator()
    start = time.perf_counter()

    # The model comes first: its init fixes the image size the synthetic task is rendered at.
    set_seed(settings.seed)
    spec = build_change_model(init, mode, image_size, backbone, symmetric_change, extra_features)
    initial_state = copy.deepcopy(spec.model.state_dict())
    if data is None:
        data = load_task_dataset(
            task, data_dir, image_size=spec.image_size, data_seed=data_seed, align=align, **(data_kwargs or {})
        )
    elif data.task != task:
        raise ValueError(f"`data` holds task {data.task!r} but task={task!r}.")
    accelerator.print(data.summary())

    pairs = sample_task_pairs(data, pairs_per_subject, data_seed, pairs_file)
    if not pairs:
        raise ValueError(f"{task}: no same-subject pair with different values could be drawn; check the values.")
    split = make_folds(pairs, folds, data_seed, val_fraction)
    if output_dir and accelerator.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        save_pairs(pairs, Path(output_dir) / "pairs.csv")

    metrics_modules = load_change_metrics()
    # Every image is decoded and aligned once for the whole run (all folds): the transform depends on the init only.
    images = _RowTensors(data, row_transform(spec), keep=settings.cache_images)
    fold_records, predictions, models = [], [], []
    for k, fold in enumerate(split):
        # Every fold restarts from the same initial weights (and, for scratch, the same random draw).
        spec.model.load_state_dict(initial_state)
        set_seed(settings.seed + k)
        result = run_fold(
            spec, mode, data, pairs, fold, settings, accelerator, metrics_modules,
            description=f"{task} {mode} fold {k + 1}/{len(split)}", images=images,
        )
        chosen = (f"penalty alpha {result.selection['alpha']:.3g}" if result.selection.get("solver") == "closed_form"
                  else f"best epoch {result.best_epoch} (stopped at {result.selection.get('stopped_at')})")
        accelerator.print(
            f"fold {k + 1}/{len(split)}: {chosen}, test MAE {result.metrics['mae']:.3f}, "
            f"Pearson {result.metrics['pearson']:.3f}, direction accuracy {result.metrics['direction_accuracy']:.3f} "
            f"({result.seconds:.0f} s)"
        )
        fold_records.append(
            {
                "fold": k,
                "train_subjects": fold.train,
                "val_subjects": fold.val,
                "test_subjects": fold.test,
                "num_pairs": result.num_pairs,
                "best_epoch": result.best_epoch,
                "selection": result.selection,
                "history": result.history,
                "test": result.metrics,
                "seconds": result.seconds,
            }
        )
        predictions.extend([k, i, p, t] for i, p, t in result.predictions)
        if keep_models:
            models.append(copy.deepcopy(result.model))
        spec.model = result.model  # back on CPU; reloaded with the initial weights at the next fold

    results: dict[str, Any] = {
        "task": task,
        "init": init,
        "init_kind": spec.init_kind,
        "mode": mode,
        "method": method or spec.method,
        "settings": {
            **asdict(settings),
            "lr": None if settings.uses_closed_form(mode) else settings.learning_rate(mode),
            "epochs": None if settings.uses_closed_form(mode) else settings.num_epochs(mode),
            "align": data.align,
            "folds": folds,
            "val_fraction": val_fraction,
            "pairs_per_subject": pairs_per_subject,
            "data_seed": data_seed,
            "image_size": spec.image_size,
            "image_mean": spec.image_mean,
            "image_std": spec.image_std,
            "backbone": getattr(spec.model.config, "backbone", type(spec.model).__name__),
            "extra_features": list(extra_features) if not isinstance(extra_features, str) else extra_features,
            "num_processes": accelerator.num_processes,
            "model_selection": (
                ("ridge penalty by grouped cross-validation over the training and validation subjects, refitted on "
                 "both (closed form)" if settings.linear_selection == "cv" else
                 "ridge penalty with the lowest validation MAE (closed form)") if settings.uses_closed_form(mode)
                else ("SGD head: the number of epochs by grouped cross-validation over the training and validation "
                      "subjects, then trained on both") if mode == "linear" and settings.linear_selection == "cv"
                else "trained epoch with the lowest validation MAE (early stopping)"
            ),
        },
        "data": {
            "num_images": len(data.dataset),
            "num_subjects": len(set(data.dataset["subject"])),
            "num_pairs": len(pairs),
            "num_subjects_with_pairs": len({p.subject for p in pairs}),
            "build_report": data.build_report,
        },
        "folds": fold_records,
        "aggregate": aggregate([f["test"] for f in fold_records]),
        "seconds": time.perf_counter() - start,
        "predictions": predictions,
    }
    if output_dir and accelerator.is_main_process:
        write_run_outputs(results, pairs, output_dir)
    if keep_models:
        results["models"] = models
    return results


#: The units of each task's change, for a saved estimator (``--change_units`` overrides).
TASK_UNITS: dict[str, str] = {
    "fgnet": "years",
    "disfa_au6": "AU6 intensity levels (0-5)",
    "disfa_au12": "AU12 intensity levels (0-5)",
    "face_change": "units of the CSV's value column",
    "synthetic_smile": "alpha units",
    "synthetic_weight": "alpha units",
    "synthetic_age": "alpha units",
}


def fit_change_estimator(
    task: str,
    init: str,
    data: TaskData,
    pairs: Sequence[ChangePair],
    *,
    image_size: Optional[int] = None,
    backbone: str = "resnet18",
    symmetric_change: bool = False,
    extra_features: Sequence[str] = (),
    settings: Optional[TransferSettings] = None,
    change_units: Optional[str] = None,
    cv_results: Optional[dict[str, Any]] = None,
    accelerator: Any = None,
):
    """The estimator a user keeps: the linear head refitted on the pairs of ALL subjects, its penalty chosen by
    grouped cross-validation over them (:func:`~comface_hf.linear_probe.fit_ridge_probe_cv`), as a
    :class:`~comface_hf.modeling_change_estimator.ChangeEstimator` predicting in ``change_units``.

    ``cv_results`` (the protocol's results on the same pairs) supplies the cross-validated metrics for its card.
    """
    from accelerate import Accelerator

    from .modeling_change_estimator import ChangeEstimator

    settings = settings or TransferSettings()
    accelerator = accelerator or Accelerator()
    spec = build_change_model(init, "linear", image_size, backbone, symmetric_change, extra_features)
    images = _RowTensors(data, row_transform(spec), keep=True)
    rows = [i for p in pairs for i in (p.index_x, p.index_y)]
    images.warm(rows, settings.show_progress and accelerator.is_local_main_process)
    features, row_of = _backbone_features(spec.model, images, rows, settings.batch_size, accelerator.device)
    feats = features.double().numpy()
    x = pair_features(feats[[row_of[p.index_x] for p in pairs]], feats[[row_of[p.index_y] for p in pairs]],
                      symmetric_change)
    y = np.array([p.label for p in pairs], dtype=np.float64)
    probe = fit_ridge_probe_cv(x, y, [p.subject for p in pairs], symmetric=symmetric_change,
                               log10_grid=settings.ridge_log10_grid, n_splits=settings.ridge_cv_folds)
    model = spec.model
    if not isinstance(model, ChangeEstimator):  # f alone: the same f and head, taking [0, 1] crops
        model = ChangeEstimator.from_parts(model, [], backbone_image_size=spec.image_size,
                                           backbone_mean=spec.image_mean, backbone_std=spec.image_std, init=init)
    write_ridge_head(model.cpu(), probe)
    model.config.change_units = change_units or TASK_UNITS.get(task)
    model.config.task = task
    model.config.init = init
    model.config.fit = {
        "num_pairs": len(pairs), "num_subjects": len({p.subject for p in pairs}), "alpha": probe.alpha,
        "penalty_selection": f"grouped {min(settings.ridge_cv_folds, len({p.subject for p in pairs}))}-fold "
                             "cross-validation over all subjects, then refitted on all pairs",
        "cv_metrics": (cv_results or {}).get("aggregate"), "cv_mode": (cv_results or {}).get("mode"),
        "data": f"{len(data.dataset)} images of {len(set(data.dataset['subject']))} subjects",
    }
    model.config.freeze_backbone = True
    return model.eval()


def run_zero_shot(
    task: str,
    peer: str,
    *,
    data: TaskData,
    pairs: Sequence[ChangePair],
    folds: int = 4,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    output_dir: Optional[str] = None,
    method: Optional[str] = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """A peer that already estimates the task's quantity (``peer.predicts == task``, e.g. age in years for FG-NET),
    scored with NO fitting: the prediction is ``v(y) - v(x)``, on the same folds' test pairs as every other row."""
    from .peers import get_peer

    peer_model = get_peer(peer)
    if peer_model.predicts != task:
        raise ValueError(f"the peer {peer!r} does not estimate the quantity of task {task!r}: no zero-shot row "
                         f"(peers with one: {', '.join(n for n, c in PEERS.items() if c.predicts)})")
    peer_model.check_available()
    start = time.perf_counter()
    spec = _peer_spec([peer], "linear", peer)
    images = _RowTensors(data, row_transform(spec), keep=True)
    metrics_modules = load_change_metrics()
    index_of = {p: i for i, p in enumerate(pairs)}
    records, predictions = [], []
    for k, fold in enumerate(make_folds(pairs, folds, data_seed, val_fraction)):
        test = pairs_for_subjects(pairs, fold.test)
        rows = [i for p in test for i in (p.index_x, p.index_y)]
        images.warm(rows, show_progress)
        value = {i: float(peer_model.features([images[i].permute(1, 2, 0).numpy()])[0, 0]) for i in set(rows)}
        pred = np.array([value[p.index_y] - value[p.index_x] for p in test])
        label = np.array([p.label for p in test], dtype=np.float64)
        metrics = compute_change_metrics(pred, label, metrics_modules)
        records.append({"fold": k, "train_subjects": fold.train, "val_subjects": fold.val, "test_subjects": fold.test,
                        "num_pairs": {"test": len(test)}, "best_epoch": 0, "selection": {"solver": "zero_shot"},
                        "history": [], "test": metrics, "seconds": 0.0})
        predictions.extend([k, index_of[p], float(a), float(b)] for p, a, b in zip(test, pred, label))
    results = {
        "task": task, "init": peer, "init_kind": "peer", "mode": "zero_shot", "method": method or f"{peer} (zero-shot)",
        "settings": {"align": data.align, "folds": folds, "val_fraction": val_fraction, "data_seed": data_seed,
                     "image_size": spec.image_size, "backbone": peer,
                     "model_selection": "none: the peer's own estimate, v(after) - v(before)"},
        "data": {"num_images": len(data.dataset), "num_subjects": len(set(data.dataset["subject"])),
                 "num_pairs": len(pairs), "num_subjects_with_pairs": len({p.subject for p in pairs}),
                 "build_report": data.build_report},
        "folds": records, "aggregate": aggregate([r["test"] for r in records]),
        "seconds": time.perf_counter() - start, "predictions": predictions,
    }
    if output_dir:
        write_run_outputs(results, pairs, output_dir)
    return results


def write_run_outputs(results: dict[str, Any], pairs: Sequence[ChangePair], output_dir: str) -> None:
    """``predictions.csv``, ``scatter.png`` and last ``results.json`` (everything but the predictions) in
    ``output_dir``, each written atomically: a run whose results.json exists is finished, with all its files."""
    from .reports import plot_scatter

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "predictions.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["fold", "pair_index", "subject", "index_x", "index_y", "value_x", "value_y", "label", "prediction"])
        for fold, i, pred, label in results["predictions"]:
            p = pairs[i]
            writer.writerow([fold, i, p.subject, p.index_x, p.index_y, repr(p.value_x), repr(p.value_y), repr(label), repr(pred)])
    os.replace(tmp, out / "predictions.csv")
    preds = np.array([row[2] for row in results["predictions"]])
    labels = np.array([row[3] for row in results["predictions"]])
    plot_scatter([(f"{results['method']} / {results['mode']}", preds, labels)], out / "scatter.png", title=results["task"])
    payload = {k: v for k, v in results.items() if k not in ("predictions", "models")}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(_jsonable(payload), indent=1), encoding="utf-8")
    os.replace(tmp, out / "results.json")


def _jsonable(value: Any) -> Any:
    """NaN (e.g. Pearson of constant predictions) as null: strict JSON readers reject NaN."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


__all__ = [
    "ALIGN_MODES",
    "ChangeModelSpec",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "HEAD_INITS",
    "LINEAR_SOLVERS",
    "FoldResult",
    "INIT_FORMS",
    "MODES",
    "TASKS",
    "TaskData",
    "TransferSettings",
    "LINEAR_SELECTIONS",
    "TASK_UNITS",
    "aggregate",
    "build_change_model",
    "fit_change_estimator",
    "run_zero_shot",
    "write_ridge_head",
    "load_task_dataset",
    "make_folds",
    "run_fold",
    "row_transform",
    "run_protocol",
    "sample_task_pairs",
    "write_run_outputs",
]

"""The protocol's settings, declared once (the CLI parses them with HfArgumentParser) with their choices and
defaults: the linear head's solver and selection rule, learning rates, epochs, fine-tuning's head start."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .linear_probe import (
    DEFAULT_CV_FOLDS,
    DEFAULT_LOG10_GRID,
)
from .tasks import check_choice

#: How the linear head's complexity is chosen (``--linear_selection``), the ridge penalty of the closed-form head or the
#: number of epochs of the SGD head: grouped cross-validation over the subjects of every non-test pair, then refitted
#: on all of them (default; see :func:`comface_hf.transfer.linear_probe.fit_ridge_probe_cv`), or the fold's validation subjects
#: alone (the earlier rule: two or three people choose it, which penalises weak features most).
LINEAR_SELECTIONS: tuple[str, ...] = ("cv", "val")
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


@dataclass
class TransferSettings:
    """Optimisation settings shared by all folds of a run.

    Linear evaluation defaults to the exact ridge head (:mod:`comface_hf.transfer.linear_probe`): f runs once per image, the
    least-squares head on ``ReLU(f(y) - f(x))`` is solved in closed form for a grid of L2 penalties; the penalty is
    chosen by grouped cross-validation over the subjects of the training and validation pairs and the head refitted on
    all of them (``linear_selection="cv"``), or the penalty with the best validation MAE is kept (``"val"``);
    ``epochs``/``lr`` do not apply. ``linear_solver="sgd"`` trains the head
    with Adam as in the paper; it and fine-tuning use: labels standardised with the training pairs' mean and std (the
    head is mapped back afterwards, so predictions and metrics are in the task's units), a linear warm-up over
    ``warmup_fraction`` of the steps then cosine decay to 0, model selection on validation MAE after every epoch and
    early stopping after ``patience`` epochs without improvement (0: never stop early).
    """

    # One declaration for the library and the command line: training/transfer.py parses these fields as its options
    # (HfArgumentParser reads each field's help).
    epochs: Optional[int] = field(default=None, metadata={"help": (
        f"Maximum epochs of the gradient paths (sgd linear head / finetune); default {DEFAULT_EPOCHS['linear']} / "
        f"{DEFAULT_EPOCHS['finetune']}.")})
    batch_size: int = field(default=32, metadata={"help": "Pairs per batch per process."})
    lr: Optional[float] = field(default=None, metadata={"help": (
        f"Adam peak learning rate; default {DEFAULT_LR['linear']:g} (sgd linear head), {DEFAULT_LR['finetune']:g} "
        "(finetune).")})
    weight_decay: float = 0.0
    seed: int = field(default=0, metadata={"help": "Training seed (scratch weights, head init, batch order)."})
    augment: bool = field(default=False, metadata={"help": "SimCLR augmentation of x and y while training."})
    num_workers: int = 0
    show_progress: bool = True
    # Linear evaluation without augmentation: f is frozen and in eval mode, so f(image) is a fixed function; computing
    # it once per image and training l on the stored features gives the same model as running f every step, at a
    # fraction of the cost (the many-epoch regime linear probes need). The closed-form solver always uses features.
    cache_features: bool = True
    linear_solver: str = field(default="closed_form", metadata={"help": (
        f"{' or '.join(LINEAR_SOLVERS)}: the exact ridge head or the paper's Adam-trained head (its complexity, "
        "penalty or epochs, chosen as --linear_selection says).")})
    ridge_log10_grid: list[float] = field(default_factory=lambda: list(DEFAULT_LOG10_GRID), metadata={"help": (
        "Exponents k of the ridge penalties n_train * 10^k searched by the closed-form head.")})
    linear_selection: str = field(default="cv", metadata={"help": (
        f"{' or '.join(LINEAR_SELECTIONS)}: the ridge penalty (or the SGD head's number of epochs) by grouped "
        "cross-validation over the training and validation subjects (then refitted on both), or by the validation "
        "subjects alone (the earlier rule).")})
    ridge_cv_folds: int = field(default=DEFAULT_CV_FOLDS, metadata={"help": "Inner folds of --linear_selection cv."})
    select_last_epoch: bool = field(default=False, metadata={"help": (
        "Keep the last epoch instead of the one with the best validation MAE (used for the SGD head's refit at the "
        "epoch count cross-validation chose).")})
    standardize_labels: bool = field(default=True, metadata={"help": "Train on (label - mean) / std (gradient paths)."})
    warmup_fraction: float = field(default=0.1, metadata={"help": "Linear warm-up over this fraction of the steps."})
    schedule: str = field(default="cosine", metadata={"help": "cosine (decay to 0 after warm-up) or constant."})
    patience: int = field(default=5, metadata={"help": "Early stopping: epochs without a better validation MAE (0: off)."})
    max_grad_norm: Optional[float] = field(default=None, metadata={"help": (
        "Clip the gradient norm to this (gradient paths; default: no clipping).")})
    # Decode (and align) every image once per run and keep the model-ready tensors in memory.
    cache_images: bool = True
    head_init: str = field(default="pretrained", metadata={"help": (
        f"{' or '.join(HEAD_INITS)}: fine-tuning starts from the init's head l, or from the exact ridge head on the "
        "init's frozen features (linear probing, then fine-tuning: LP-FT; for a pretrained init: on random features "
        "the ridge weights are huge and fine-tuning diverges).")})
    encoder_lr_scale: float = field(default=1.0, metadata={"help": (
        "Fine-tuning: the encoder f learns at lr x this, the head l at lr (discriminative learning rates; 1: one "
        "learning rate for all).")})

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



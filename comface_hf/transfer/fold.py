"""One fold of the protocol: the linear head (exact ridge or SGD, its complexity chosen by grouped cross-validation
over subjects or by the validation subjects) or fine-tuning, trained on the fold's training subjects and tested on its
test subjects."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .linear_probe import (
    DEFAULT_CV_FOLDS,
    DEFAULT_LOG10_GRID,
    fit_ridge_probe,
    fit_ridge_probe_cv,
    pair_features,
)
from .metrics import compute_change_metrics, load_change_metrics
from .models import ChangeModelSpec
from .pairs import ChangePair, Fold, pairs_for_subjects
from .tasks import TaskData, check_choice

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
    the builder stored some, see ``--align``), then resized/normalised by the image processor with ``align="none"``.

    Rows without landmarks (``--align none``, rendered synthetic faces) go to the processor whole (shorter side
    resized, centre crop). The same function serves linear evaluation and fine-tuning; :meth:`crop` (the slow,
    init-independent part) and :meth:`to_tensor` are separate so crops can be shared across inits.
    """

    def __init__(self, spec: ChangeModelSpec):
        from ..face_alignment import FaceAligner

        self.size = int(spec.image_size)
        self.processor = spec.image_processor()
        # No detector: the builder already chose each row's landmarks (``--align``); here they are only applied.
        self.aligner = FaceAligner(size=self.size, detector=None, skip_if_aligned=False, warn_small=False)

    def crop(self, row: dict) -> Any:
        # Imported here, at call time: the one alignment function, looked up where it lives.
        from ..face_alignment import align_face, has_landmarks

        landmarks = row.get("landmarks")
        # The stored landmarks are this row's whole alignment decision: "landmarks" applies them, "none" (a row the
        # builder kept without a face) leaves the image whole.
        mode = "landmarks" if has_landmarks(landmarks) else "none"
        face = align_face(row["image"], mode, landmarks, scheme=row.get("landmark_scheme") or "auto",
                          aligner=self.aligner)
        return row["image"] if face is None else face.image

    def to_tensor(self, image: Any) -> torch.Tensor:
        return self.processor(image, align="none", return_tensors="pt")["pixel_values"][0]

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
    from ..pretraining.augment import augment_batch

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
        from ..modeling_comface import change_from_features

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


def pair_design(features: np.ndarray, row_of: dict[int, int], pairs: Sequence[ChangePair], symmetric: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """The linear head's design for ``pairs``: pair features ``[N, D]`` from per-image features (``row_of``: image
    row -> feature row, as :func:`_backbone_features` returns) and the labels ``[N]``."""
    fx = features[[row_of[p.index_x] for p in pairs]]
    fy = features[[row_of[p.index_y] for p in pairs]]
    return pair_features(fx, fy, symmetric), np.array([p.label for p in pairs], dtype=np.float64)


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
        return pair_design(feats, row_of, subset, symmetric)

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
    ridge head exactly, the penalty chosen on the validation pairs (:func:`comface_hf.transfer.linear_probe.fit_ridge_probe`).
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
                       "scaling": probe.scaling,
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
        with warnings.catch_warnings():  # an unconverged head is judged once, on the pooled curve below
            warnings.filterwarnings("ignore", message=".*still falling at the last epoch")
            result = run_fold(spec, "linear", data, pairs, inner, inner_settings, accelerator, metrics_modules,
                              description=f"{description} inner {k + 1}", images=images)
        n = result.num_pairs["val"]
        curve = n * np.array([h["val_mae"] for h in result.history if h["epoch"] >= 1])
        error_sum = curve if error_sum is None else error_sum + curve
        held_out += n
        spec.model = result.model
    best_epochs = int(np.argmin(error_sum)) + 1
    if best_epochs == len(error_sum) > 1 and error_sum[-1] < error_sum[-2]:
        warnings.warn(
            f"{description}: the cross-validated MAE was still falling at the last epoch ({best_epochs}); the SGD head "
            "has not converged. Raise --epochs or --lr, or use the exact head (--linear_solver closed_form).",
            stacklevel=2,
        )
    spec.model.load_state_dict(initial)
    final = run_fold(spec, "linear", data, pairs, Fold(train=list(subjects), val=list(fold.val), test=list(fold.test)),
                     replace(settings, epochs=best_epochs, patience=0, select_last_epoch=True), accelerator,
                     metrics_modules, description=description, images=images)
    final.seconds = time.perf_counter() - start
    final.selection.update({"epoch_selection": "cv", "epochs_by_cv": best_epochs,
                            "cv_mae": float(error_sum[best_epochs - 1] / held_out)})
    return final

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

from .inputs import (
    _augment_normalised,
    _backbone_features,
    _HeadOnFeatures,
    _RowTensors,
    _StoredPairs,
    row_transform,
)
from .linear_probe import (
    fit_ridge_probe,
    fit_ridge_probe_cv,
    pair_features,
)
from .metrics import compute_change_metrics, load_change_metrics
from .models import ChangeModelSpec
from .pairs import ChangePair, Fold, pairs_for_subjects
from .settings import (
    TransferSettings,
)
from .tasks import TaskData


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

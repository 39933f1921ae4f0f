"""The whole protocol: every fold of a run, its aggregate and files, the zero-shot row of a peer that already
estimates the task's quantity, and the estimator a user keeps (refitted on every subject)."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..peers import PEERS
from .fold import pair_design, run_fold, write_ridge_head
from .inputs import _backbone_features, _RowTensors, row_transform
from .linear_probe import fit_ridge_probe_cv
from .metrics import compute_change_metrics, load_change_metrics
from .models import _peer_spec, build_change_model
from .pairs import ChangePair, pairs_for_subjects, save_pairs
from .settings import TransferSettings
from .tasks import (
    ALIGN_MODES,
    MODES,
    TASK_UNITS,
    TASKS,
    TaskData,
    check_choice,
    load_task_dataset,
    make_folds,
    sample_task_pairs,
)

METRIC_NAMES: tuple[str, ...] = ("mae", "pearson", "direction_accuracy")


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
    grouped cross-validation over them (:func:`~comface_hf.transfer.linear_probe.fit_ridge_probe_cv`), as a
    :class:`~comface_hf.modeling_change_estimator.ChangeEstimator` predicting in ``change_units``.

    ``cv_results`` (the protocol's results on the same pairs) supplies the cross-validated metrics for its card.
    """
    from accelerate import Accelerator

    from ..modeling_change_estimator import ChangeEstimator

    settings = settings or TransferSettings()
    accelerator = accelerator or Accelerator()
    spec = build_change_model(init, "linear", image_size, backbone, symmetric_change, extra_features)
    images = _RowTensors(data, row_transform(spec), keep=True)
    rows = [i for p in pairs for i in (p.index_x, p.index_y)]
    images.warm(rows, settings.show_progress and accelerator.is_local_main_process)
    features, row_of = _backbone_features(spec.model, images, rows, settings.batch_size, accelerator.device)
    x, y = pair_design(features.double().numpy(), row_of, pairs, symmetric_change)
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
        "scaling": probe.scaling,
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
    from ..peers import get_peer

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

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
``training/transfer.py`` is the command line over it and :mod:`comface_hf.transfer.reports` turns results into tables.

Augmentation: the paper does not describe downstream augmentation, so none is applied by default; ``augment=True``
applies the pretraining SimCLR augmentation (:func:`comface_hf.pretraining.augment.augment_batch`) to x and y independently
during training only (colour, crop and flip do not change expression, weight or age).

Modules, in pipeline order: :mod:`.schema` (a change task's columns), :mod:`.tasks` (task tables),
:mod:`.pairs` (same-subject pairs, subject-disjoint folds, the pair Dataset), :mod:`.synthetic_task` (rendered
stand-in tasks), :mod:`.models` (a change model from any init, peers and fusion), :mod:`.settings` (the protocol's
options), :mod:`.inputs` (rows to model inputs and features), :mod:`.linear_probe` (the exact ridge head and its
grouped CV), :mod:`.fold` (one fold: linear head or fine-tuning), :mod:`.protocol` (all folds, outputs, the zero-shot
row, the saved estimator), :mod:`.metrics` (MAE, Pearson, direction accuracy: the one definition), :mod:`.reports`
(tables and plots). Everything is importable from ``comface_hf.transfer``.
"""

from .fold import FoldResult, run_fold, write_ridge_head
from .inputs import RowTransform, _backbone_features, _RowTensors, row_transform
from .models import (
    DEFAULT_SCRATCH_IMAGE_SIZE,
    DEFAULT_TIMM_IMAGE_SIZE,
    INIT_FORMS,
    ChangeModelSpec,
    build_change_model,
)
from .protocol import (
    METRIC_NAMES,
    aggregate,
    fit_change_estimator,
    run_protocol,
    run_zero_shot,
    write_run_outputs,
)
from .settings import (
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    HEAD_INITS,
    LINEAR_SELECTIONS,
    LINEAR_SOLVERS,
    TransferSettings,
)
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

__all__ = [
    "DEFAULT_SCRATCH_IMAGE_SIZE",
    "DEFAULT_TIMM_IMAGE_SIZE",
    "METRIC_NAMES",
    "RowTransform",
    "check_choice",
    # used by the benchmarks that reuse the protocol's feature cache
    "_RowTensors",
    "_backbone_features",
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

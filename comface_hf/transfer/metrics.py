"""The evaluation metrics (paper Sec. 4.3), defined once: MAE, Pearson correlation and direction accuracy as
``evaluate`` modules shipped in the repository's ``metrics/`` folder and loaded by path."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Metrics (Sec. 4.3): evaluate modules shipped in the repository
# ---------------------------------------------------------------------------------------

#: ``metrics/`` next to the package: the repository root for an editable install, site-packages for the wheel
#: (which carries it, see pyproject.toml).
METRICS_DIR: Path = Path(__file__).resolve().parents[2] / "metrics"
_METRIC_NAMES = ("mae", "pearson", "direction_accuracy")


def load_change_metrics(metrics_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load the MAE, Pearson and direction-accuracy ``evaluate`` modules from the repository.

    They are loaded by absolute path, which ``evaluate`` resolves locally without
    contacting the Hub (works with ``HF_HUB_OFFLINE=1``).
    """
    import evaluate  # lazy: only needed for evaluation

    root = Path(metrics_dir) if metrics_dir is not None else METRICS_DIR
    loaded = {}
    for name in _METRIC_NAMES:
        script = root / name / f"{name}.py"
        if not script.is_file():
            raise FileNotFoundError(
                f"metric script {str(script)!r} not found; the metrics ship in the repository's metrics/ "
                f"folder, which `pip install` puts next to comface_hf: reinstall comface_hf, or pass metrics_dir"
            )
        loaded[name] = evaluate.load(str(script.parent.resolve()))
    return loaded


def compute_change_metrics(
    predictions: Sequence[float] | np.ndarray | torch.Tensor,
    references: Sequence[float] | np.ndarray | torch.Tensor,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """``{"mae", "pearson", "direction_accuracy"}`` for predicted vs true changes.

    ``metrics`` may be the result of :func:`load_change_metrics` to avoid reloading.
    """
    metrics = metrics or load_change_metrics()
    preds = np.asarray(torch.as_tensor(predictions).detach().cpu(), dtype=np.float64).reshape(-1)
    refs = np.asarray(torch.as_tensor(references).detach().cpu(), dtype=np.float64).reshape(-1)
    if preds.shape != refs.shape:
        raise ValueError(f"predictions ({preds.size}) and references ({refs.size}) differ in length")
    out: dict[str, float] = {}
    for name in _METRIC_NAMES:
        result = metrics[name].compute(predictions=preds.tolist(), references=refs.tolist())
        out[name] = float(result[name])
    return out

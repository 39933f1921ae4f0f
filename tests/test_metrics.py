"""The repository's evaluate modules against scipy / sklearn / numpy on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error

from comface_hf.transfer.metrics import METRICS_DIR, compute_change_metrics, load_change_metrics


@pytest.fixture(scope="module")
def metrics() -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # loading by path must not need the Hub
    try:
        yield load_change_metrics()
    finally:
        mp.undo()


def _data(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=n).astype(np.float32)
    preds = (0.7 * refs + 0.5 * rng.normal(size=n)).astype(np.float32)  # float32: the metrics' dtype
    return preds, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_references(metrics: dict, seed: int) -> None:
    preds, refs = _data(seed)
    out = compute_change_metrics(preds, refs, metrics)
    assert set(out) == {"mae", "pearson", "direction_accuracy"}
    assert out["mae"] == pytest.approx(mean_absolute_error(refs, preds), rel=1e-6)
    assert out["pearson"] == pytest.approx(pearsonr(preds, refs)[0], rel=1e-6)
    assert out["direction_accuracy"] == pytest.approx(np.mean(np.sign(preds) == np.sign(refs)))


def test_direction_accuracy_excludes_zero_change(metrics: dict) -> None:
    acc = metrics["direction_accuracy"]
    res = acc.compute(predictions=[1.0, -1.0, 0.5, 2.0, 0.0], references=[2.0, 1.0, 0.0, 3.0, -1.0])
    assert res["direction_accuracy"] == pytest.approx(2 / 4)  # zero reference excluded, 0 prediction wrong
    tol = acc.compute(predictions=[1.0, 1.0], references=[0.05, 1.0], zero_tolerance=0.1)
    assert tol["direction_accuracy"] == 1.0
    assert math.isnan(acc.compute(predictions=[1.0], references=[0.0])["direction_accuracy"])


def test_pearson_undefined_is_nan(metrics: dict) -> None:
    assert math.isnan(metrics["pearson"].compute(predictions=[1.0, 1.0, 1.0], references=[1.0, 2.0, 3.0])["pearson"])


def test_metric_info_and_location(metrics: dict) -> None:
    for name, module in metrics.items():
        assert (METRICS_DIR / name / f"{name}.py").is_file() and (METRICS_DIR / name / "README.md").is_file()
        assert module.description and "ComFace" in module.citation
        assert set(module.features) == {"predictions", "references"}


def test_length_mismatch(metrics: dict) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compute_change_metrics([1.0, 2.0], [1.0], metrics)

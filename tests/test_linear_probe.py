"""The exact linear probe: equals scikit-learn's Ridge, picks its penalty on validation pairs only, and the SGD head
warns when it has not converged. Tiny arrays and a tiny backbone only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from comface_hf.transfer.linear_probe import fit_ridge_probe, pair_features, ridge_path, standardisation
from comface_hf.transfer import (
    TransferSettings,
    build_change_model,
    load_task_dataset,
    make_folds,
    run_fold,
    sample_task_pairs,
)


def _problem(seed: int = 0, n: int = 120, d: int = 20):
    rng = np.random.default_rng(seed)
    h_x, h_y = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d), rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d)
    w = rng.normal(size=d)
    return h_x, h_y, w, rng


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("alpha", [1e-3, 1.0, 50.0])
def test_ridge_equals_sklearn_on_the_same_features(symmetric: bool, alpha: float) -> None:
    h_x, h_y, w, rng = _problem()
    x = pair_features(h_x, h_y, symmetric)
    y = x @ w + 3.0 * (not symmetric) + rng.normal(scale=2.0, size=len(x))
    train, val, test = slice(0, 80), slice(80, 100), slice(100, 120)
    probe = fit_ridge_probe(x[train], y[train], x[val], y[val], symmetric=symmetric, alphas=[alpha])
    mean, scale = standardisation(x[train], symmetric)
    reference = Ridge(alpha=alpha, fit_intercept=not symmetric, solver="svd").fit((x[train] - mean) / scale, y[train])
    expected = reference.predict((x[test] - mean) / scale)
    np.testing.assert_allclose(probe.predict(x[test]), expected, rtol=1e-8, atol=1e-8)
    if symmetric:
        assert probe.intercept == 0.0
        # Swapping x and y flips the prediction exactly.
        np.testing.assert_allclose(probe.predict(pair_features(h_y, h_x, True)), -probe.predict(x), atol=1e-10)


def test_ridge_path_matches_one_solve_per_penalty() -> None:
    h_x, h_y, w, rng = _problem(1, n=60, d=80)  # more features than rows: the kernel (N x N) path, rank-deficient
    x = pair_features(h_x, h_y)
    y = x @ w[:80] + rng.normal(size=60)
    alphas = [1e-2, 1.0, 1e2]
    coefs, intercepts = ridge_path(x, y, alphas)
    for a, c, b in zip(alphas, coefs, intercepts):
        ref = Ridge(alpha=a).fit(x, y)
        np.testing.assert_allclose(c, ref.coef_, rtol=1e-6, atol=1e-8)
        assert b == pytest.approx(ref.intercept_, rel=1e-8, abs=1e-8)


def test_penalty_is_the_validation_argmin_and_validation_decides_it() -> None:
    h_x, h_y, w, rng = _problem(2)
    x = pair_features(h_x, h_y)
    y = x @ w + rng.normal(scale=5.0, size=len(x))
    train, val = slice(0, 60), slice(60, 90)
    probe = fit_ridge_probe(x[train], y[train], x[val], y[val])
    assert probe.alpha == probe.alphas[int(np.argmin(probe.val_mae))]
    coefs, intercepts = ridge_path((x[train] - probe.feature_mean) / probe.feature_scale, y[train], probe.alphas)
    val_mae = np.abs(((x[val] - probe.feature_mean) / probe.feature_scale) @ coefs.T + intercepts - y[val, None]).mean(0)
    np.testing.assert_allclose(val_mae, probe.val_mae, rtol=1e-10)


@pytest.fixture(scope="module")
def task():
    return load_task_dataset("synthetic_age", image_size=32, synthetic_subjects=8, synthetic_images_per_subject=4)


def test_protocol_penalty_ignores_test_subjects(task) -> None:
    """Poisoning the test subjects' labels and images leaves the selected penalty and the head unchanged."""
    import dataclasses

    from PIL import Image

    from comface_hf.transfer import TaskData

    pairs = sample_task_pairs(task, pairs_per_subject=4)
    fold = make_folds(pairs, n_folds=2)[0]
    settings = TransferSettings(show_progress=False)
    torch.manual_seed(0)
    clean = run_fold(build_change_model("scratch", "linear", 32, "test_resnet"), "linear", task, pairs, fold, settings)
    test = set(fold.test)
    poisoned_pairs = [
        dataclasses.replace(p, value_y=p.value_y + 1e6, label=p.label + 1e6) if p.subject in test else p for p in pairs
    ]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    poisoned_images = task.dataset.map(lambda row: {"image": noise if row["subject"] in test else row["image"]})
    poisoned_task = TaskData(task.task, poisoned_images, None)
    torch.manual_seed(0)
    poisoned = run_fold(
        build_change_model("scratch", "linear", 32, "test_resnet"), "linear", poisoned_task, poisoned_pairs, fold,
        settings,
    )
    assert clean.selection["alpha"] == poisoned.selection["alpha"]
    assert torch.equal(clean.model.difference_head.linear.weight, poisoned.model.difference_head.linear.weight)
    assert clean.metrics["mae"] != poisoned.metrics["mae"]  # the test pairs did change: only the score, never the fit
    assert clean.best_epoch == 0 and clean.selection["solver"] == "closed_form"


def test_head_written_into_the_model_reproduces_the_probe(task) -> None:
    pairs = sample_task_pairs(task, pairs_per_subject=4)
    fold = make_folds(pairs, n_folds=2)[1]
    result = run_fold(build_change_model("scratch", "linear", 32, "test_resnet"), "linear", task, pairs, fold,
                      TransferSettings(show_progress=False))
    from comface_hf.transfer import _RowTensors, row_transform

    spec = build_change_model("scratch", "linear", 32, "test_resnet")
    images = _RowTensors(task, row_transform(spec))
    model = result.model.eval()
    by_index = {i: p for i, p, _ in result.predictions}
    with torch.no_grad():
        for i in list(by_index)[:8]:
            p = pairs[i]
            change = model(images[p.index_x][None], images[p.index_y][None]).change.item()
            assert change == pytest.approx(by_index[i], rel=1e-4, abs=1e-4)


def test_sgd_head_warns_when_still_improving_and_not_when_converged(task) -> None:
    pairs = sample_task_pairs(task, pairs_per_subject=4)
    fold = make_folds(pairs, n_folds=2)[0]
    short = TransferSettings(linear_solver="sgd", epochs=4, lr=1e-2, show_progress=False, patience=0,
                             schedule="constant", warmup_fraction=0.0, linear_selection="val")
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="still falling at the last epoch"):
        run_fold(build_change_model("scratch", "linear", 32, "test_resnet"), "linear", task, pairs, fold, short)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # Early stopping ended it: validation stopped improving, so no warning.
        result = run_fold(build_change_model("scratch", "linear", 32, "test_resnet"), "linear", task, pairs, fold,
                          TransferSettings(linear_solver="sgd", epochs=200, lr=1e-1, patience=3, show_progress=False,
                                           linear_selection="val"))
    assert result.selection["stopped_at"] < 200


def test_closed_form_rejects_augment_and_unknown_solver() -> None:
    with pytest.raises(ValueError, match="--linear_solver sgd with --augment"):
        TransferSettings(augment=True).check()
    with pytest.raises(ValueError, match="Unknown linear_solver"):
        TransferSettings(linear_solver="lbfgs").check()


def test_lp_ft_starts_fine_tuning_from_the_ridge_head(task) -> None:
    """--head_init ridge: fine-tuning's epoch 0 (its initial weights) predicts exactly what the closed-form linear
    probe fitted on the training subjects (penalty chosen on the validation ones) does on the validation pairs; the
    default starts from the init's own head."""
    pairs = sample_task_pairs(task, pairs_per_subject=4)
    fold = make_folds(pairs, n_folds=2)[0]

    def run(mode: str, **settings):
        torch.manual_seed(0)  # the same scratch weights for every run
        spec = build_change_model("scratch", mode, 32, "test_resnet")
        return run_fold(spec, mode, task, pairs, fold, TransferSettings(epochs=1, show_progress=False, **settings))

    probe = run("linear", linear_selection="val")  # LP-FT's start: the validation subjects select its epochs
    lp_ft, plain = run("finetune", head_init="ridge"), run("finetune")
    assert lp_ft.history[0]["val_mae"] == pytest.approx(probe.selection["val_mae"], rel=1e-4)
    assert abs(plain.history[0]["val_mae"] - probe.selection["val_mae"]) > 1e-3
    with pytest.raises(ValueError, match="Unknown head_init"):
        TransferSettings(head_init="zeros").check()


def test_sgd_head_epochs_by_grouped_cross_validation(task) -> None:
    """--linear_solver sgd with the default --linear_selection cv: the epoch count comes from inner folds over the
    training and validation subjects, and the head is then trained on both (more pairs than the val rule uses)."""
    pairs = sample_task_pairs(task, pairs_per_subject=4)
    fold = make_folds(pairs, n_folds=2)[0]

    def run(**settings):
        torch.manual_seed(0)
        spec = build_change_model("scratch", "linear", 32, "test_resnet")
        return run_fold(spec, "linear", task, pairs, fold,
                        TransferSettings(epochs=6, show_progress=False, linear_solver="sgd", ridge_cv_folds=3,
                                         **settings))

    with pytest.warns(UserWarning, match="cross-validated MAE was still falling"):  # 6 epochs are too few here
        cv = run()
    val = run(linear_selection="val")
    assert cv.selection["epoch_selection"] == "cv" and 1 <= cv.selection["epochs_by_cv"] <= 6
    assert cv.selection["stopped_at"] == cv.selection["epochs_by_cv"] == cv.best_epoch  # refit for that many epochs
    assert cv.num_pairs["train"] == val.num_pairs["train"] + val.num_pairs["val"]
    assert "epoch_selection" not in val.selection
    assert np.isfinite(cv.metrics["mae"])

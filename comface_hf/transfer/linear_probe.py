"""Linear evaluation solved exactly: ridge regression of the change on cached backbone features.

The change head of ComFace is ``change = l(ReLU(f(y) - f(x)))`` with ``l`` linear (Sec. 3.4), so with f frozen the
least-squares head is a ridge regression on the pair features ``ReLU(h_y - h_x)``. With ``symmetric_change`` the model
predicts ``(l(ReLU(a)) - l(ReLU(-a))) / 2 = w . a / 2`` for ``a = h_y - h_x`` (the bias cancels), a ridge regression
on ``a / 2`` without intercept.

How it is solved (:func:`fit_ridge_probe`):

1. Pair features of the training pairs are standardised with the TRAINING statistics (mean and std per feature; the
   symmetric variant is scaled by the root mean square only, since centring would break its sign symmetry), in
   float64.
2. One eigendecomposition of the centred training Gram matrix ``X^T X = V diag(l) V^T`` (or of ``X X^T`` when there
   are fewer pairs than features) gives the ridge solution for every penalty at once:
   ``w(alpha) = V diag(1 / (l + alpha)) V^T X^T y``; the intercept is the training label mean (features are centred).
   This is scikit-learn's ``Ridge(alpha)`` objective ``||y - Xw - b||^2 + alpha ||w||^2`` on the same features.
3. The penalty is chosen without the test pairs, in one of two ways:
   - :func:`fit_ridge_probe_cv` (the protocol's default): grouped cross-validation over the SUBJECTS of all non-test
     pairs (:data:`DEFAULT_CV_FOLDS` inner folds, no subject on both sides); the penalty with the lowest pooled MAE
     over the held-out pairs is refitted on all of them. Every pair of every subject helps choose it, so the choice
     is not left to the two or three validation people of a fold, which made weak features look weaker (the
     penalty landed at 13x the training size in two folds of four for a scratch ResNet18 on FG-NET).
   - :func:`fit_ridge_probe`: the lowest MAE on the validation pairs (subjects disjoint from training and test; MAE,
     as the protocol selects epochs).
   Grid: ``alpha = n_train * 10^k`` for k on a log grid (the diagonal of ``X^T X`` is ``n_train`` after
   standardisation, so the grid is scale-free and the same k means the same strength in every inner fold).
4. The solution is mapped back to the raw features, so it can be written into the model's ``difference_head``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

#: Inner folds of the grouped cross-validation that chooses the penalty (fewer when there are fewer subjects).
DEFAULT_CV_FOLDS = 5

#: Exponents k of the default penalty grid ``alpha = n_train * 10^k`` (25 values from 1e-6 to 1e3).
DEFAULT_LOG10_GRID: tuple[float, ...] = tuple(np.round(np.linspace(-6.0, 3.0, 25), 6))


def pair_features(h_x: np.ndarray, h_y: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """What the linear head sees for each pair: ``ReLU(h_y - h_x)``, or ``(h_y - h_x) / 2`` for the symmetric head."""
    diff = np.asarray(h_y, dtype=np.float64) - np.asarray(h_x, dtype=np.float64)
    return 0.5 * diff if symmetric else np.maximum(diff, 0.0)


@dataclass
class RidgeProbe:
    """A fitted probe: ``change = X @ coef + intercept`` on raw pair features X (see :func:`pair_features`).

    Attributes:
        coef: ``[D]`` weights on the raw pair features (float64).
        intercept: the bias (0 for the symmetric head).
        alpha: the selected penalty (on standardised features, sklearn's ``Ridge(alpha)``).
        alphas: the grid searched.
        val_mae, val_mse: validation MAE / MSE for each penalty of the grid.
        feature_mean, feature_scale: the training standardisation (mean 0 for the symmetric head).
        symmetric: whether this is the symmetric (no intercept, no centring) variant.
        scaling: how the features were scaled before the penalty (:data:`SCALINGS`).
    """

    coef: np.ndarray
    intercept: float
    alpha: float
    alphas: np.ndarray
    val_mae: np.ndarray
    val_mse: np.ndarray
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    symmetric: bool
    history: list[dict[str, float]] = field(default_factory=list)
    scaling: str = "feature"

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.coef + self.intercept

    @property
    def selected_index(self) -> int:
        return int(np.flatnonzero(self.alphas == self.alpha)[0])


#: How features are scaled before the ridge penalty applies (``scaling``): each feature to unit variance
#: (``"feature"``), or all by one common factor, their root-mean-square standard deviation (``"global"``). Per-feature
#: scaling gives every direction the same prior weight, which amplifies the noise of low-variance features: on a random
#: ResNet18's features it cost FG-NET Corr. 0.33 against 0.48 (BENCHMARKS.md); a common factor keeps the features'
#: own geometry but lets a large-valued block (an age in years beside unit vectors) dominate. The grouped CV chooses.
SCALINGS: tuple[str, ...] = ("feature", "global")


def standardisation(features: np.ndarray, symmetric: bool, scaling: str = "feature") -> tuple[np.ndarray, np.ndarray]:
    """Training mean and scale per feature (constant features get scale 1, so they stay 0 after centring); with
    ``scaling="global"`` every feature gets the same scale (see :data:`SCALINGS`)."""
    x = np.asarray(features, dtype=np.float64)
    if symmetric:
        mean = np.zeros(x.shape[1])
        scale = np.sqrt(np.mean(x**2, axis=0))
    else:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
    if scaling == "global":
        common = float(np.sqrt(np.mean(scale**2)))
        scale = np.full_like(scale, common if common > 0 else 1.0)
    elif scaling != "feature":
        raise ValueError(f"Unknown scaling {scaling!r}; valid values: {', '.join(SCALINGS)}.")
    scale = np.where(scale > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0))), scale, 1.0)
    return mean, scale


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition on one BLAS thread: for these sizes (a few hundred) threads gain little on an idle
    machine and lose 10-20x on a busy one (measured: 512 x 512 took 20 s with 2 threads at load 15, 1.1 s with 1)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings threadpoolctl; without it, run as numpy is configured
        return np.linalg.eigh(matrix)
    with threadpool_limits(limits=1, user_api="blas"):
        return np.linalg.eigh(matrix)


def ridge_path(x_std: np.ndarray, y: np.ndarray, alphas: Sequence[float], fit_intercept: bool = True):
    """Ridge solutions for every penalty from one eigendecomposition: ``(coefs [K, D], intercepts [K])``.

    Minimises ``||y - x_std w - b||^2 + alpha ||w||^2`` (b = 0 without intercept), scikit-learn's Ridge objective.
    With more rows than features the ``D x D`` Gram matrix ``X^T X = V diag(l) V^T`` gives
    ``w = V diag(1 / (l + alpha)) V^T X^T y``; otherwise the ``N x N`` kernel ``X X^T = U diag(l) U^T`` gives
    ``w = X^T U diag(1 / (l + alpha)) U^T y``. Eigenvalues below ``1e-12 * max`` count as 0, and with ``alpha = 0``
    their directions are dropped (the minimum-norm least-squares solution).
    """
    x = np.asarray(x_std, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_mean = x.mean(axis=0) if fit_intercept else np.zeros(x.shape[1])
    y_mean = float(y.mean()) if fit_intercept else 0.0
    xc, yc = x - x_mean, y - y_mean
    alphas = np.asarray(alphas, dtype=np.float64)
    n, d = xc.shape
    gram = xc.T @ xc if n >= d else xc @ xc.T
    eigenvalues, vectors = _eigh(gram)
    eigenvalues = np.where(eigenvalues > 1e-12 * max(float(eigenvalues.max(initial=0.0)), 1e-300), eigenvalues, 0.0)
    denom = eigenvalues[None, :] + alphas[:, None]  # [K, r]
    inverse = np.divide(1.0, denom, out=np.zeros_like(denom), where=denom > 0)
    projected = vectors.T @ (xc.T @ yc if n >= d else yc)  # [r]
    coefs = (inverse * projected[None, :]) @ vectors.T  # [K, D] (Gram) or [K, N] (kernel: dual weights)
    if n < d:
        coefs = coefs @ xc
    intercepts = y_mean - coefs @ x_mean
    return coefs, intercepts


def fit_ridge_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    symmetric: bool = False,
    log10_grid: Sequence[float] = DEFAULT_LOG10_GRID,
    alphas: Optional[Sequence[float]] = None,
) -> RidgeProbe:
    """The ridge head with the penalty chosen on the validation pairs (see the module docstring).

    Args:
        train_x, val_x: raw pair features ``[N, D]`` (:func:`pair_features`) of the training / validation pairs.
        train_y, val_y: their labels (value_y - value_x).
        symmetric: the symmetric-change head (no intercept, scaling without centring).
        log10_grid: exponents k of ``alpha = n_train * 10^k``; ignored when ``alphas`` is given.
        alphas: explicit penalties (on standardised features).

    Only training pairs fit the weights and only validation pairs choose the penalty.
    """
    train_x = np.asarray(train_x, dtype=np.float64)
    val_x = np.asarray(val_x, dtype=np.float64)
    train_y = np.asarray(train_y, dtype=np.float64).reshape(-1)
    val_y = np.asarray(val_y, dtype=np.float64).reshape(-1)
    if len(train_x) == 0 or len(val_x) == 0:
        raise ValueError("the ridge probe needs training and validation pairs")
    _check_finite(**{"training features": train_x, "training labels": train_y, "validation features": val_x,
                     "validation labels": val_y})
    if alphas is None:
        alphas = len(train_x) * 10.0 ** np.asarray(log10_grid, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    coefs_std, intercepts, mean, scale = _solve(train_x, train_y, alphas, symmetric)
    val_pred = ((val_x - mean) / scale) @ coefs_std.T + intercepts[None, :]  # [N_val, K]
    val_mae = np.abs(val_pred - val_y[:, None]).mean(axis=0)
    val_mse = ((val_pred - val_y[:, None]) ** 2).mean(axis=0)
    best = int(np.argmin(val_mae))
    _warn_grid_edge(best, alphas)
    coef = coefs_std[best] / scale
    intercept = float(intercepts[best] - coef @ mean)
    history = [
        {"alpha": float(a), "val_mae": float(m), "val_loss": float(s)} for a, m, s in zip(alphas, val_mae, val_mse)
    ]
    return RidgeProbe(
        coef=coef, intercept=intercept, alpha=float(alphas[best]), alphas=alphas, val_mae=val_mae, val_mse=val_mse,
        feature_mean=mean, feature_scale=scale, symmetric=symmetric, history=history,
    )


def _check_finite(**arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contain NaN or infinite values; check the images and values of those pairs")


def _warn_grid_edge(best: int, alphas: np.ndarray) -> None:
    # At the upper end the head is all but the mean label (more penalty changes nothing); at the lower end a smaller
    # penalty might still do better.
    if len(alphas) > 2 and best == 0 and alphas[0] > 0:
        warnings.warn(
            f"ridge probe: the selected penalty alpha={alphas[best]:.3g} is the smallest of the grid "
            f"[{alphas[0]:.3g}, {alphas[-1]:.3g}]; extend the grid downwards to be sure it is the optimum",
            stacklevel=3,
        )


def _solve(x: np.ndarray, y: np.ndarray, alphas: np.ndarray, symmetric: bool, scaling: str = "feature"):
    """Standardise with x's own statistics and solve the path: ``(coefs_std [K, D], intercepts [K], mean, scale)``."""
    mean, scale = standardisation(x, symmetric, scaling)
    coefs_std, intercepts = ridge_path((x - mean) / scale, y, alphas, fit_intercept=not symmetric)
    return coefs_std, intercepts, mean, scale


def fit_ridge_probe_cv(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence,
    symmetric: bool = False,
    log10_grid: Sequence[float] = DEFAULT_LOG10_GRID,
    n_splits: int = DEFAULT_CV_FOLDS,
    scalings: Sequence[str] = SCALINGS,
) -> RidgeProbe:
    """The ridge head with the penalty and the feature scaling chosen by grouped cross-validation (see the module
    docstring and :data:`SCALINGS`).

    Args:
        x: raw pair features ``[N, D]`` of every non-test pair (:func:`pair_features`).
        y: their labels (value_y - value_x).
        groups: ``[N]`` the subject of each pair: inner folds never split a subject (scikit-learn's GroupKFold).
        symmetric: the symmetric-change head (no intercept, scaling without centring).
        log10_grid: exponents k of ``alpha = n_fit * 10^k`` (n_fit: the pairs each fit sees).
        n_splits: inner folds (at most the number of subjects; at least 2 subjects are needed).
        scalings: the feature scalings the CV chooses among (:data:`SCALINGS`), with the same inner folds.

    Returns:
        :class:`RidgeProbe` refitted on all of ``x`` at the chosen k and scaling; ``val_mae``/``val_mse`` hold the
        pooled cross-validated errors of every k at the chosen scaling (its ``alphas`` are ``len(x) * 10^k``);
        ``history`` holds every (scaling, k).
    """
    from sklearn.model_selection import GroupKFold

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups)
    _check_finite(features=x, labels=y)
    subjects = np.unique(groups)
    if len(subjects) < 2:
        raise ValueError(
            f"choosing the ridge penalty by cross-validation over subjects needs at least 2 subjects, got "
            f"{len(subjects)}; add subjects or choose the penalty on validation pairs (fit_ridge_probe)"
        )
    factors = 10.0 ** np.asarray(log10_grid, dtype=np.float64)
    splits = list(GroupKFold(n_splits=min(int(n_splits), len(subjects))).split(x, y, groups))
    abs_err = np.zeros((len(scalings), len(factors)))
    sq_err = np.zeros((len(scalings), len(factors)))
    for j, scaling in enumerate(scalings):
        for inner_train, inner_val in splits:
            coefs_std, intercepts, mean, scale = _solve(x[inner_train], y[inner_train], len(inner_train) * factors,
                                                        symmetric, scaling)
            residual = ((x[inner_val] - mean) / scale) @ coefs_std.T + intercepts[None, :] - y[inner_val, None]
            abs_err[j] += np.abs(residual).sum(axis=0)
            sq_err[j] += (residual ** 2).sum(axis=0)
    j, best = np.unravel_index(int(np.argmin(abs_err)), abs_err.shape)
    val_mae, val_mse = abs_err[j] / len(x), sq_err[j] / len(x)
    alphas = len(x) * factors
    _warn_grid_edge(int(best), alphas)
    coefs_std, intercepts, mean, scale = _solve(x, y, alphas[best : best + 1], symmetric, scalings[j])
    coef = coefs_std[0] / scale
    history = [{"alpha": float(a), "val_mae": float(m), "val_loss": float(v), "scaling": scaling}
               for k, scaling in enumerate(scalings)
               for a, m, v in zip(alphas, abs_err[k] / len(x), sq_err[k] / len(x))]
    return RidgeProbe(
        coef=coef, intercept=float(intercepts[0] - coef @ mean), alpha=float(alphas[best]), alphas=alphas,
        val_mae=val_mae, val_mse=val_mse, feature_mean=mean, feature_scale=scale, symmetric=symmetric, history=history,
        scaling=scalings[j],
    )


__all__ = ["DEFAULT_CV_FOLDS", "DEFAULT_LOG10_GRID", "RidgeProbe", "SCALINGS", "fit_ridge_probe", "fit_ridge_probe_cv", "pair_features", "ridge_path", "standardisation"]

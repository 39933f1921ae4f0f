"""Does the probe validation (comface_hf/pretraining/validation.py) rank checkpoints as real faces do? (issue 24)

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m benchmarks.probe_validation

Scores scratch (random ResNet18, seeds 0-2, as the real-face table) and the three issue-24 checkpoints (renderer =
the main job, DCGAN preset, DCGAN + renderer mix) with the probe validation, reads their real-face linear Corr.
(benchmarks/results/realface_peers/summary.json: FG-NET age change, JAFFE happiness change) and the synthetic
validation Pearson each run printed (val_pearson in the checkpoint's model card), and reports Spearman's rank
correlation over the 4 rows between each validation and each real-face task. Writes
benchmarks/results/probe_validation.csv (+ .json with every figure).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from comface_hf.pretraining import validation as pv

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = {"ComFace (main job)": "/work/ckpts/main-job", "ComFace (DCGAN preset)": "/work/ckpts/dcgan",
               "ComFace (DCGAN + renderer mix)": "/work/ckpts/dcgan-mix"}
SCRATCH = "Scratch (resnet18)"
REALFACE = ROOT / "benchmarks" / "results" / "realface_peers" / "summary.json"
#: (probe label, real-face dataset) pairs whose rankings are compared.
COUNTERPARTS = (("age", "fgnet"), ("smile", "jaffe"))


def realface_corr(summary: Path) -> dict[str, dict[str, float]]:
    """``{method: {dataset: linear Corr. (fold mean)}}`` of the fair-probe table, learned-feature rows only."""
    out: dict[str, dict[str, float]] = {}
    for r in json.loads(summary.read_text())["records"]:
        if r["mode"] == "linear" and not r.get("extra_features"):
            out.setdefault(r["method"], {})[r["dataset"]] = float(r["aggregate"]["pearson"]["mean"])
    return out


def synthetic_val(folder: str) -> float:
    """The val_pearson the pretraining run wrote into its model card (NaN if none)."""
    found = re.search(r"\|\s*val_pearson\s*\|\s*([-0-9.]+)", (Path(folder) / "README.md").read_text())
    return float(found.group(1)) if found else float("nan")


def spearman(a, b) -> float:
    """Spearman's rho over the rows where both values are known (a row the real-face run did not score is left out)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    known = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[known], b[known])[0]) if known.sum() >= 3 else float("nan")


def edit_agreement(probe_set) -> dict[str, dict[str, float]]:
    """How far the intended edits explain the measured changes (no model): over the probe's pairs, Pearson r between a
    label's measured change and its own direction's alpha change, and the grouped-CV r of a least-squares fit of the
    measured change on all the alpha changes (what any head reading the edits could reach)."""
    from sklearn.model_selection import GroupKFold

    names = list(probe_set.meta["config"]["directions"])
    out = {}
    for label in probe_set.label_names:
        ix, iy, y, groups = pv.probe_pairs(probe_set, label)
        da = probe_set.alphas[iy] - probe_set.alphas[ix]
        x = np.c_[da, np.ones(len(y))]
        pred = np.zeros(len(y))
        for train, test in GroupKFold(n_splits=5).split(x, y, groups):
            pred[test] = x[test] @ np.linalg.lstsq(x[train], y[train], rcond=None)[0]
        out[label] = {"own_direction_r": float(np.corrcoef(da[:, names.index(label)], y)[0, 1])
                      if label in names else float("nan"),
                      "all_directions_cv_r": float(np.corrcoef(pred, y)[0, 1]), "pairs": int(len(y))}
    return out


def bootstrap_ranking(held_out: dict, rows: dict, names: list, draws: int = 1000, seed: int = 0) -> dict:
    """How stable the probe's ranking is to the choice of faces: identities resampled with replacement, each row's
    pooled held-out Pearson recomputed on the same resampled pairs (scratch: mean over its seeds), then Spearman
    against each real-face task. ``{"<label> vs <dataset>": {mean, low, high (2.5/97.5%), p_exact (share at +1)}}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for label, dataset in COUNTERPARTS:
        target = [rows[n]["realface"].get(dataset, np.nan) for n in names]
        groups = held_out[names[0]][0][label][2]
        ids = np.unique(groups)
        members = [np.flatnonzero(groups == i) for i in ids]
        values = []
        for _ in range(draws):
            take = np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))])
            r = [np.mean([np.corrcoef(p[label][0][take], p[label][1][take])[0, 1] for p in held_out[n]])
                 for n in names]
            values.append(spearman(r, target))
        values = np.asarray(values)
        out[f"probe {label} vs {dataset}"] = {"mean": float(values.mean()), "low": float(np.quantile(values, 0.025)),
                                              "high": float(np.quantile(values, 0.975)),
                                              "p_exact": float(np.mean(values > 0.999))}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FOLDER",
                        help="checkpoints to score (default: the three issue-24 ones)")
    parser.add_argument("--scratch_seeds", default="0,1,2")
    parser.add_argument("--realface", default=str(REALFACE),
                        help="summary.json of the realface_table run that scored the same checkpoints (by name)")
    parser.add_argument("--cache_dir", default=str(Path.home() / ".cache" / "comface_hf" / "probe_validation"))
    parser.add_argument("--write_shipped", action="store_true",
                        help="save the labelled set as the package's shipped set (comface_hf/pretraining/...)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "probe_validation.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint) if args.checkpoint else CHECKPOINTS

    t0 = time.time()
    G, directions = pv.load_probe_generator()
    config = pv.ProbeValidationConfig()
    probe_set = pv.probe_set_for(G, directions, config, cache_dir=args.cache_dir)
    if args.write_shipped:
        pv.save_probe_set(probe_set, pv.SHIPPED_SET)
    dirs = pv.direction_matrix(directions, config.directions)
    images = pv.render(G, dirs, probe_set.identity, probe_set.alphas, config.seed)
    set_seconds = time.time() - t0
    print(f"probe set: {probe_set.meta['labelled_images']}/{probe_set.meta['images']} images labelled "
          f"(labelling took {probe_set.meta['label_seconds']} s when built); ready in {set_seconds:.0f} s")

    agreement = edit_agreement(probe_set)
    for k, v in agreement.items():
        print(f"edits vs measured {k}: r(own alpha change) {v['own_direction_r']:+.3f}, "
              f"CV r(all alpha changes) {v['all_directions_cv_r']:+.3f} ({v['pairs']} pairs)")
    from comface_hf.transfer.models import build_change_model

    held_out: dict[str, list] = {}  # row -> [{label: (prediction, label, identity)}] (one per scratch seed)

    def score(spec, row) -> tuple[dict, float]:
        t = time.time()
        predictions: dict = {}
        result = pv.probe_validation(spec.model.backbone, spec.image_mean, spec.image_std, spec.image_size,
                                     probe_set=probe_set, images=images, names=list(probe_set.label_names),
                                     predictions=predictions)
        held_out.setdefault(row, []).append(predictions)
        return result["scores"], time.time() - t

    rows: dict[str, dict] = {}
    seeds = [int(s) for s in args.scratch_seeds.split(",") if s.strip()]
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        scores, sec = score(build_change_model("scratch", "linear"), SCRATCH)
        per_seed.append(scores)
        print(f"{SCRATCH} seed {seed}: {pv.format_scores(scores)} ({sec:.0f} s)")
    if per_seed:
        rows[SCRATCH] = {"scores": {k: {m: float(np.mean([s[k][m] for s in per_seed])) for m in per_seed[0][k]}
                                    for k in per_seed[0]},
                         "seed_pearsons": {k: [s[k]["pearson"] for s in per_seed] for k in per_seed[0]},
                         "synthetic_val": float("nan"), "seconds": sec}
    for name, folder in checkpoints.items():
        scores, sec = score(build_change_model(folder, "linear"), name)
        rows[name] = {"scores": scores, "synthetic_val": synthetic_val(folder), "seconds": sec}
        print(f"{name}: {pv.format_scores(scores)} ({sec:.0f} s)")

    if not Path(args.realface).is_file():
        raise SystemExit(f"No real-face summary at {args.realface}: run python -m benchmarks.realface_table on the same "
                         "checkpoint names with --out DIR (the folder is deleted once consolidated), then pass "
                         "--realface DIR/summary.json.")
    real = realface_corr(Path(args.realface))
    for name, row in rows.items():
        row["realface"] = real.get(name, {})
    names = list(rows)
    ranking = {}
    for label, dataset in COUNTERPARTS:
        target = [rows[n]["realface"].get(dataset, np.nan) for n in names]
        ranking[f"probe {label} vs {dataset}"] = spearman([rows[n]["scores"][label]["pearson"] for n in names], target)
        for other in probe_set.label_names:
            ranking[f"probe {other} vs {dataset} (any label)"] = spearman(
                [rows[n]["scores"][other]["pearson"] for n in names], target)
        with_val = [n for n in names if np.isfinite(rows[n]["synthetic_val"])]  # scratch has no pretraining run
        ranking[f"synthetic val vs {dataset} ({len(with_val)} pretrained rows)"] = spearman(
            [rows[n]["synthetic_val"] for n in with_val], [rows[n]["realface"][dataset] for n in with_val])
    for k, v in ranking.items():
        print(f"Spearman {k}: {v:+.2f}")
    resampled = bootstrap_ranking(held_out, rows, names)
    for k, v in resampled.items():
        print(f"bootstrap over identities, {k}: Spearman {v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}], "
              f"P(+1.00) {v['p_exact']:.2f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = list(probe_set.label_names)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row"] + [f"probe_{k}_{m}" for k in labels for m in ("pearson", "pearson_sd")]
                   + ["synthetic_val_pearson", "realface_fgnet_age_corr", "realface_jaffe_happiness_corr",
                      "probe_seconds"])
        for n in names:
            r = rows[n]
            w.writerow([n] + [f"{r['scores'][k][m]:.3f}" for k in labels for m in ("pearson", "pearson_sd")]
                       + [f"{r['synthetic_val']:.3f}", f"{r['realface'].get('fgnet', np.nan):.3f}",
                          f"{r['realface'].get('jaffe', np.nan):.3f}", f"{r['seconds']:.0f}"])
        w.writerow([])
        w.writerow(["spearman over rows", "value"])
        for k, v in ranking.items():
            w.writerow([k, f"{v:+.3f}"])
        w.writerow([])
        w.writerow(["bootstrap over identities (pooled held-out Pearson)", "spearman mean", "2.5%", "97.5%",
                    "share at +1.00"])
        for k, v in resampled.items():
            w.writerow([k, f"{v['mean']:+.3f}", f"{v['low']:+.3f}", f"{v['high']:+.3f}", f"{v['p_exact']:.3f}"])
        w.writerow([])
        w.writerow(["measured label", "r(own alpha change, measured change)", "CV r(all alpha changes -> measured)",
                    "pairs"])
        for k, v in agreement.items():
            w.writerow([k, f"{v['own_direction_r']:+.3f}", f"{v['all_directions_cv_r']:+.3f}", v["pairs"]])
    load = os.getloadavg()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": load,
              "machine": "2-core x86_64 CPU, no GPU, shared", "config": config.to_dict(), "set": probe_set.meta,
              "rows": rows, "spearman": ranking, "bootstrap": resampled, "edit_agreement": agreement, "seconds": round(time.time() - t0, 1)}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')} ({report['seconds']} s, load {load[0]:.1f})")
    return report


if __name__ == "__main__":
    main()

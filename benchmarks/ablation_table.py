"""Ablation rows over pretraining seeds, from a real-face table (``python -m benchmarks.realface_table``'s ``summary.json``).

A single pretraining run's real-face Corr. moves by ~0.1 with its seed alone, so each variant is several checkpoints
named ``"<prefix> <variant> seed <n>"``; this groups them and reports, per dataset and mode, the mean ± std over the
pretraining seeds of each checkpoint's fold-mean metric, and each variant's difference from the reference variant
with the seeds paired (same seed = same sampler stream of identities, attributes and alphas).

    python -m benchmarks.ablation_table benchmarks/results/realface_ablation --reference default

Run it on the ``--out`` folder before ``python -m benchmarks.consolidate_results`` folds that folder into
``benchmarks/results/realface.csv`` (the committed tables: ``benchmarks/results/realface_ablation.md``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = (("mae", "MAE↓", 3), ("pearson", "Corr.↑", 3), ("direction_accuracy", "Acc.↑ (%)", 1))
NAME = re.compile(r"^(?P<prefix>.*?)\s*(?P<variant>\S+) seed (?P<seed>\d+)$")


def group(records: list[dict]) -> dict:
    """(dataset, mode) -> variant -> seed -> {metric: fold mean}; rows not named ``... <variant> seed <n>`` are left
    out (scratch and the like stay in the real-face table itself)."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        m = NAME.match(r["method"])
        if m is None:
            continue
        out[(r["dataset"], r["mode"])][m["variant"]][int(m["seed"])] = {k: r["aggregate"][k]["mean"] for k, _, _ in METRICS}
    return out


def rows(grouped: dict, reference: str) -> list[dict]:
    result = []
    for (dataset, mode), variants in sorted(grouped.items()):
        ref = variants.get(reference, {})
        for variant, seeds in sorted(variants.items(), key=lambda kv: (kv[0] != reference, kv[0])):
            row = {"dataset": dataset, "mode": mode, "variant": variant, "seeds": sorted(seeds)}
            paired = [s for s in sorted(seeds) if s in ref]
            for key, _, _ in METRICS:
                v = np.array([seeds[s][key] for s in sorted(seeds)])
                row[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                            "per_seed": v.tolist()}
                if variant != reference and paired:
                    d = np.array([seeds[s][key] - ref[s][key] for s in paired])
                    row[key]["minus_reference"] = {"mean": float(d.mean()),
                                                   "std": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                                                   "seeds": paired}
            result.append(row)
    return result


def markdown(table: list[dict], reference: str) -> str:
    lines = []
    for dataset, mode in dict.fromkeys((r["dataset"], r["mode"]) for r in table):
        lines += [f"#### {dataset}, {mode} (mean ± std over pretraining seeds; Δ = variant − {reference}, seeds paired)", "",
                  "| variant | seeds | " + " | ".join(label for _, label, _ in METRICS) + " | ΔCorr. | per-seed Corr. |",
                  "|:--|:--|" + "--:|" * (len(METRICS) + 2)]
        for r in (r for r in table if (r["dataset"], r["mode"]) == (dataset, mode)):
            cells = []
            for key, _, digits in METRICS:
                scale = 100.0 if key == "direction_accuracy" else 1.0
                cells.append(f"{r[key]['mean'] * scale:.{digits}f} ± {r[key]['std'] * scale:.{digits}f}")
            delta = r["pearson"].get("minus_reference")
            dcell = f"{delta['mean']:+.3f} ± {delta['std']:.3f}" if delta else "–"
            per_seed = ", ".join(f"{v:.3f}" for v in r["pearson"]["per_seed"])
            lines.append(f"| {r['variant']} | {len(r['seeds'])} | " + " | ".join(cells) + f" | {dcell} | {per_seed} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table_dir", help="a realface_table.py --out folder (reads its summary.json)")
    p.add_argument("--reference", default="default", help="the variant the others are compared with")
    a = p.parse_args()
    folder = Path(a.table_dir)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    table = rows(group(summary["records"]), a.reference)
    if not table:
        raise SystemExit(f"no rows named '<prefix> <variant> seed <n>' in {folder / 'summary.json'}")
    (folder / "ablation.json").write_text(json.dumps(table, indent=1), encoding="utf-8")
    text = markdown(table, a.reference)
    (folder / "ablation.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

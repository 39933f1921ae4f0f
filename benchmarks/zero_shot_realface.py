"""Zero-shot synthetic -> real: a linear head fitted on rendered pairs only, applied unchanged to real pairs.

ComFace's claim is that synthetic faces teach change that holds on real faces. The protocol's linear evaluation fits
its head on real pairs (three or four subjects per JAFFE fold). This asks the claim directly: fit the exact ridge
head (the protocol's ``fit_ridge_probe``, penalty chosen on held-out rendered identities) on the frozen backbone's
features of rendered pairs of ONE attribute, with the pretraining's photographic capture and identities pretraining
never saw, and predict the real pairs with it. No real label is used. The units differ (alpha vs years or rating),
so Corr. and direction accuracy are the measures; MAE is left out.

    python -m benchmarks.zero_shot_realface --checkpoint "name=folder" [...] [--scratch_seeds 0,1,2]
        [--datasets fgnet,jaffe] --out benchmarks/results/realface_zeroshot

Pairs: the same real pairs as ``benchmarks/realface_table.py`` (same builder, alignment ``auto``, pairs per subject and
seed). Each run writes ``runs/<dataset>-auto-<name>-zeroshot-s<seed>/`` with the protocol's own writer
(``results.json``, ``predictions.csv``, ``scatter.png``), so ``benchmarks/realface_subjects.py`` gives per-subject intervals for them, and the comparison with
the in-domain linear rows is on identical pairs.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.realface_table import (  # its tables and run names
    DATASETS as TABLE_DATASETS,
)
from benchmarks.realface_table import _slug
from comface_hf.pretraining.sources import to_model_input
from comface_hf.synthesis import EmbeddedFaceGenerator, alpha_grid
from comface_hf.synthesis.photographic import photographic
from comface_hf.transfer import (
    _backbone_features,
    build_change_model,
    load_task_dataset,
    row_transform,
    sample_task_pairs,
    write_run_outputs,
)
from comface_hf.transfer.linear_probe import fit_ridge_probe, pair_features
from comface_hf.transfer.metrics import compute_change_metrics

#: dataset: (transfer task, default folder, pairs per subject, the rendered attribute that stands for it); the task and
#: folder are realface_table's, the pairs per subject its --pairs_per_subject default, so the pairs are its pairs.
DATASETS = {ds: (TABLE_DATASETS[ds][0], TABLE_DATASETS[ds][1], pairs, attribute)
            for ds, pairs, attribute in (("fgnet", 10, "age"), ("jaffe", 20, "smile"))}
#: Far above any pretraining identity (as the synthetic transfer tasks' offset), and a different range from theirs.
IDENTITY_OFFSET = 20_000_000


def embed(model, pixel_values: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """f(x) for ``[N, C, S, S]`` model inputs: ``float64[N, F]``, by the linear evaluation's own feature pass."""
    features, _ = _backbone_features(model, pixel_values, range(len(pixel_values)), batch_size, "cpu")
    return features.double().numpy()


#: Where the synthetic pairs come from (--synthetic_source): the embedded renderer, latent edits of
#: gan-face-generate's DCGAN along the shipped boundaries (training/pretrain.py --preset dcgan's generator), or that
#: DCGAN with the landmark-driven warps too (growth, adiposity, smile_warp; comface_hf.synthesis.warp).
SOURCES = ("embedded", "dcgan", "dcgan-warps")


def source_generator(source: str, image_size: int):
    if source == "embedded":
        return EmbeddedFaceGenerator(image_size=image_size)  # the pretraining's generator (seed 0, default renderer)
    if source == "dcgan":
        from comface_hf.pretraining.presets import DCGAN_DIRECTIONS
        from comface_hf.synthesis.dcgan import load_gan_face_generate
        from comface_hf.synthesis.latent_edit import LatentEditGenerator

        return LatentEditGenerator(load_gan_face_generate(), DCGAN_DIRECTIONS, image_size=image_size)
    if source == "dcgan-warps":
        from comface_hf.pretraining.presets import DCGAN_ATTRIBUTES, DCGAN_DIRECTIONS
        from comface_hf.synthesis.spec import GeneratorSpec, build_generator
        from comface_hf.synthesis.warp import WARPS

        return build_generator(GeneratorSpec(generator="latent-edit", loader="gan-face-generate",
                                             directions_dir=DCGAN_DIRECTIONS, latent_space="z", image_size=image_size,
                                             attributes=DCGAN_ATTRIBUTES, warps=",".join(WARPS)))
    raise ValueError(f"--synthetic_source must be one of {', '.join(SOURCES)}, got {source!r}")


@functools.lru_cache(maxsize=4)  # every init of a dataset sees the same rendered pairs: render them once
def synthetic_pairs(attribute: str, image_size: int, subjects: int, pairs_per_subject: int, seed: int,
                    strength: float, source: str = "embedded") -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Rendered pairs of one attribute for unseen identities, each image its own photographic capture.

    Returns ``(x, y, label, subject)``: ``[P, 3, S, S]`` images in [0, 1], alpha_y - alpha_x and the identity of
    each pair.
    """
    gen = source_generator(source, image_size)
    rng = np.random.default_rng([seed, 0x2E50])
    grid = alpha_grid().numpy()
    subject = np.repeat(np.arange(subjects) + IDENTITY_OFFSET, pairs_per_subject)
    ax, ay = rng.choice(grid, len(subject)), rng.choice(grid, len(subject))
    attr = gen.attribute_index(attribute)
    xs, ys = [], []
    for start in tqdm(range(0, len(subject), 64), desc=f"rendering synthetic {attribute} pairs", leave=False):
        ids = torch.as_tensor(subject[start:start + 64])
        n = len(ids)
        alphas = np.concatenate([ax[start:start + 64], ay[start:start + 64]])
        images = gen.render(torch.cat([ids, ids]), torch.full((2 * n,), attr), torch.as_tensor(alphas, dtype=torch.float32))
        if strength > 0:
            images = photographic(images, torch.Generator().manual_seed(seed * 1_000_003 + start), strength)
        xs.append(images[:n])
        ys.append(images[n:])
    return torch.cat(xs), torch.cat(ys), (ay - ax).astype(np.float64), subject


def run(name: str, init: str, seed: int, ds: str, data, args, out: Path) -> dict:
    task, _, pairs_per_subject, attribute = DATASETS[ds]
    attribute = getattr(args, "attribute_for", {}).get(ds, attribute)
    torch.manual_seed(seed)  # a scratch init's weights
    spec = build_change_model(init, "linear", image_size=args.image_size if init == "scratch" else None)
    model, size = spec.model, spec.image_size
    processor = spec.image_processor()
    symmetric = bool(getattr(model.config, "symmetric_change", False))

    # The head, from rendered pairs only: 90% of the identities to fit, 10% to choose the penalty.
    source = getattr(args, "synthetic_source", "embedded")
    x, y, label, subject = synthetic_pairs(attribute, size, args.synthetic_subjects, args.synthetic_pairs_per_subject,
                                           seed=0, strength=args.photographic, source=source)
    feats = pair_features(embed(model, to_model_input(x, processor)), embed(model, to_model_input(y, processor)),
                          symmetric)
    val = subject < IDENTITY_OFFSET + max(1, args.synthetic_subjects // 10)
    probe = fit_ridge_probe(feats[~val], label[~val], feats[val], label[val], symmetric=symmetric)

    # The real pairs, exactly as the protocol draws them; every pair is a test pair here.
    pairs = sample_task_pairs(data, pairs_per_subject=pairs_per_subject, data_seed=0)
    transform = row_transform(spec)
    rows = data.dataset.select_columns([c for c in ("image", "landmarks", "landmark_scheme")
                                        if c in data.dataset.column_names])
    used = sorted({p.index_x for p in pairs} | {p.index_y for p in pairs})
    for i in tqdm([i for i in used if (i, transform.size) not in data.crops], desc=f"{ds}: aligning", leave=False):
        data.crops[i, transform.size] = transform.crop(rows[i])  # the table's crop cache: every init reuses them
    crops = [data.crops[i, transform.size] for i in used]
    if args.real_greyscale:  # every photo a greyscale print: no colour difference left between a pair's photos
        crops = [c.convert("L").convert("RGB") for c in crops]
    images = torch.stack([transform.to_tensor(c) for c in crops])
    f = dict(zip(used, embed(model, images)))
    real = pair_features(np.stack([f[p.index_x] for p in pairs]), np.stack([f[p.index_y] for p in pairs]), symmetric)
    prediction = probe.predict(real)
    truth = np.array([p.label for p in pairs], dtype=np.float64)
    metrics = compute_change_metrics(prediction, truth)
    synthetic_val = compute_change_metrics(probe.predict(feats[val]), label[val])

    result = {
        "task": task, "init": init, "mode": "zero-shot", "method": name,
        "synthetic_attribute": attribute if source == "embedded" else f"{source}:{attribute}",
        "synthetic_pairs": int(len(label)), "photographic": args.photographic,
        "real_greyscale": bool(args.real_greyscale), "ridge_alpha": float(probe.alpha),
        "synthetic_val": synthetic_val, "aggregate": {k: {"mean": v} for k, v in metrics.items()},
        "predictions": [(0, i, float(pred), p.label) for i, (p, pred) in enumerate(zip(pairs, prediction))],
    }
    # The protocol's writer: results.json, predictions.csv (one "fold": every pair is a test pair) and scatter.png.
    suffix = ("" if source == "embedded" else f"-{source}") + (
        f"-{attribute}" if attribute != DATASETS[ds][3] else "")
    write_run_outputs(result, pairs, str(out / "runs" / f"{ds}-auto-{_slug(name)}-zeroshot{suffix}-s{seed}"))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FOLDER")
    p.add_argument("--scratch_seeds", default="0,1,2", help="random ResNet18 inits as the baseline ('' for none)")
    p.add_argument("--image_size", type=int, default=None, help="scratch's size (default: the first checkpoint's)")
    p.add_argument("--datasets", default="fgnet,jaffe")
    p.add_argument("--fgnet", default=str(DATASETS["fgnet"][1]))
    p.add_argument("--jaffe", default=str(DATASETS["jaffe"][1]))
    p.add_argument("--synthetic_subjects", type=int, default=300)
    p.add_argument("--synthetic_pairs_per_subject", type=int, default=4)
    p.add_argument("--photographic", type=float, default=1.0, help="capture strength of the rendered pairs")
    p.add_argument("--synthetic_source", default="embedded", choices=SOURCES,
                   help="the pairs the head is fitted on: the embedded renderer or the DCGAN's latent edits")
    p.add_argument("--synthetic_attribute", default="", metavar="DATASET=ATTR,...",
                   help="the edit standing for each task (default fgnet=age, jaffe=smile), e.g. fgnet=growth,"
                        "jaffe=smile_warp with --synthetic_source dcgan-warps")
    p.add_argument("--real_greyscale", action="store_true",
                   help="turn every real photo greyscale first (does a colour/greyscale difference drive the result?)")
    p.add_argument("--cache_dir", default="/tmp/comface_realface_cache")
    p.add_argument("--out", default="benchmarks/results/realface_zeroshot")
    a = p.parse_args()
    a.attribute_for = dict(item.split("=", 1) for item in a.synthetic_attribute.split(",") if item.strip())
    inits = {}
    for item in a.checkpoint:
        name, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "config.json").is_file():
            p.error(f"--checkpoint {item!r}: write 'name=folder' with a ComFace checkpoint folder")
        inits[name] = folder
    if a.image_size is None:
        a.image_size = (json.loads((Path(next(iter(inits.values()))) / "config.json").read_text())["image_size"]
                        if inits else 112)
    runs = [("Scratch (resnet18)", "scratch", int(s)) for s in a.scratch_seeds.split(",") if s.strip()]
    runs += [(name, folder, 0) for name, folder in inits.items()]
    out = Path(a.out)
    print(f"Command: python -m benchmarks.zero_shot_realface {shlex.join(sys.argv[1:])}\n")
    for ds in a.datasets.split(","):
        task, _, _, _ = DATASETS[ds]
        data = load_task_dataset(task, getattr(a, ds), image_size=a.image_size, cache_dir=a.cache_dir, align="auto")
        for name, init, seed in runs:
            t0 = time.perf_counter()
            r = run(name, init, seed, ds, data, a, out)
            print(f"{ds} | {name} | seed {seed}: real Corr. {r['aggregate']['pearson']['mean']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    text = table(out)
    (out / "table.md").write_text(text, encoding="utf-8")
    print(text)


def table(out: Path) -> str:
    """Every finished run under ``out/runs`` (whichever invocation made it) as one markdown table."""
    lines = ["| dataset | init | seed | synthetic attribute (pairs) | capture | real photos | synthetic val Corr. | "
             "real Corr. | real direction Acc. |", "|---|---|--:|---|--:|---|--:|--:|--:|"]
    for path in sorted(out.glob("runs/*/results.json")):
        r = json.loads(path.read_text())
        ds, seed = path.parent.name.split("-")[0], path.parent.name.rsplit("-s", 1)[-1]
        agg = r["aggregate"]
        lines.append(f"| {ds} | {r['method']} | {seed} | {r['synthetic_attribute']} ({r['synthetic_pairs']}) | "
                     f"{r['photographic']:g} | {'greyscale' if r.get('real_greyscale') else 'as taken'} | "
                     f"{r['synthetic_val']['pearson']:.3f} | {agg['pearson']['mean']:.3f} | "
                     f"{100 * agg['direction_accuracy']['mean']:.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

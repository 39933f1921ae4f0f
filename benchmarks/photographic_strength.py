"""Measure the photographic randomisation's strength against real pairs (comface_hf.synthesis.photographic).

    python -m benchmarks.photographic_strength [--realfaces ../shared/realfaces] [--size 64]

Real pairs: every two photos of one person in FG-NET dev (aligned with its own 68 landmarks) and JAFFE dev (aligned
with the dlib detector), at ``--size`` px. Synthetic pairs: renderer 2.0.0 pairs (same identity and attribute, two
alphas) with ``photographic(strength=s)`` drawn per image. For each of four capture statistics (brightness, contrast,
colourfulness, log sharpness; ``image_statistics``) the median within-pair |difference| is compared; the strength
whose medians are closest to the real ones (least squared log ratio, averaged over the statistics) is printed per
database (statistics that do not vary in a database, such as JAFFE's colour, are left out). Research images are only read, never written.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
import torch

from comface_hf.synthesis import EmbeddedFaceGenerator
from comface_hf.synthesis.photographic import image_statistics, photographic

STATS = ("brightness", "contrast", "colourfulness", "sharpness")


def _to_tensor(pil) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def real_faces(root: Path, size: int, max_images: int = 0) -> dict[str, tuple[torch.Tensor, list[str]]]:
    from comface_hf.alignment import read_pts
    from comface_hf.face_alignment import FaceAligner

    out = {}
    aligner = FaceAligner(size=size, detector=None, warn_small=False)
    images, subjects = [], []
    paths = sorted((root / "fgnet_dev" / "images").glob("*"))
    if max_images:  # every k-th photo: all subjects keep several
        paths = paths[:: max(1, len(paths) // max_images)]
    for path in paths:
        pts = root / "fgnet_dev" / "points" / (path.stem.lower() + ".pts")
        if not pts.exists():
            continue
        images.append(_to_tensor(aligner.align(path, landmarks=read_pts(pts), scheme="fgnet68").image))
        subjects.append(path.stem[:3])
    out["FG-NET dev"] = (torch.stack(images), subjects)
    aligner = FaceAligner(size=size, warn_small=False)
    images, subjects = [], []
    with open(root / "jaffe_dev" / "metadata.csv") as f:
        for row in csv.DictReader(f):
            try:
                face = aligner.align(root / "jaffe_dev" / row["image"])
            except Exception:  # no face found: skipped (counted below)
                continue
            images.append(_to_tensor(face.image))
            subjects.append(row["subject"])
    out["JAFFE dev"] = (torch.stack(images), subjects)
    return out


def pair_medians(stats: dict[str, torch.Tensor], pairs: np.ndarray) -> dict[str, float]:
    res = {}
    for k in STATS:
        v = stats[k].double()
        if k == "sharpness":
            v = torch.log(v + 1e-4)
        res[k] = float(np.median((v[pairs[:, 0]] - v[pairs[:, 1]]).abs().numpy()))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--realfaces", default=str(Path(__file__).resolve().parents[2] / "shared" / "realfaces"))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--strengths", default="0,0.5,1,1.5,2,3")
    p.add_argument("--max-images", type=int, default=0, help="use about this many FG-NET photos (0: all)")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"Command: python -m benchmarks.photographic_strength --size {a.size} --pairs {a.pairs} "
          f"--max-images {a.max_images} --strengths {a.strengths}\n", flush=True)
    real = {}
    for name, (imgs, subjects) in real_faces(Path(a.realfaces), a.size, a.max_images).items():
        subj = np.array(subjects)
        pairs = np.array([(i, j) for i, j in itertools.combinations(range(len(subj)), 2) if subj[i] == subj[j]])
        pairs = pairs[rng.choice(len(pairs), min(a.pairs, len(pairs)), replace=False)]
        real[name] = pair_medians(image_statistics(imgs), pairs)
        print(f"{name}: {len(imgs)} aligned images, {len(pairs)} within-person pairs", flush=True)
    gen = EmbeddedFaceGenerator(image_size=a.size)
    n = a.pairs
    ids = torch.from_numpy(rng.integers(0, 10_000, n))
    attrs = torch.from_numpy(rng.integers(0, 43, n))
    al = torch.from_numpy(np.round(rng.uniform(-5, 5, (2, n)), 1)).float()
    clean = gen.render(torch.cat([ids, ids]), torch.cat([attrs, attrs]), torch.cat([al[0], al[1]]))
    pairs = np.stack([np.arange(n), np.arange(n) + n], 1)
    rows, scores = [], {}
    for s in [float(x) for x in a.strengths.split(",")]:
        x = photographic(clean, torch.Generator().manual_seed(1), s)
        med = pair_medians(image_statistics(x), pairs)
        # per database, over the statistics that vary there (JAFFE is all greyscale: no colourfulness difference)
        per_db = {name: float(np.mean([(np.log(med[k]) - np.log(r[k])) ** 2 for k in STATS if r[k] > 1e-3]))
                  for name, r in real.items()}
        scores[s] = per_db
        rows.append((f"synthetic, strength {s:g}", med, per_db))
    print("\nMedian within-pair |difference| of capture statistics (log for sharpness):\n")
    print("| pairs | " + " | ".join(STATS) + " | " + " | ".join(f"mismatch to {n}" for n in real) + " |")
    print("|---|" + "---|" * (len(STATS) + len(real)))
    for name, med in real.items():
        print(f"| {name} | " + " | ".join(f"{med[k]:.4f}" for k in STATS) + " |" + " - |" * len(real))
    for name, med, per_db in rows:
        print(f"| {name} | " + " | ".join(f"{med[k]:.4f}" for k in STATS) + " | "
              + " | ".join(f"{per_db[n]:.3f}" for n in real) + " |")
    for n in real:
        best = min(scores, key=lambda s: scores[s][n])
        print(f"Closest strength to {n}: {best:g} (mismatch = mean squared log ratio of the medians)")


if __name__ == "__main__":
    main()

"""Does the aligner put rendered faces back where the generator drew them? (the frames agree)

    python -m benchmarks.render_alignment_check [--n 32] [--size 112]

For ``--n`` renders (renderer 2.0.0, random identities, attributes and alphas) at ``--size`` px: (a) the aligner with
the generator's own key points (``EmbeddedFaceGenerator.key_points``): mean |crop - render| over the inner 86% of the
frame; (b) the dlib detector (the aligner's default): faces found, its key points' distance from the generator's
(in % of the eye-to-eye distance), and mean |crop - render|; as a yardstick, mean |render - another render|.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from comface_hf.face_alignment import FaceAligner, NoFaceError, key_points
from comface_hf.synthesis import EmbeddedFaceGenerator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    a = p.parse_args()
    gen = EmbeddedFaceGenerator(image_size=a.size)
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, 100_000, a.n))
    attrs = torch.from_numpy(rng.integers(0, 43, a.n))
    alphas = torch.from_numpy(np.round(rng.uniform(-5, 5, a.n), 1)).float()
    imgs = gen.render(ids, attrs, alphas)
    kps = gen.key_points(ids, attrs, alphas).numpy()
    m = int(round(a.size * 0.07))
    inner = (slice(None), slice(m, a.size - m), slice(m, a.size - m))

    def diff(face, img) -> float:
        crop = torch.from_numpy(np.asarray(face.image, dtype=np.float32) / 255).permute(2, 0, 1)
        return float((crop - img)[inner].abs().mean())

    by_kp = FaceAligner(size=a.size, detector=None, skip_if_aligned=False, warn_small=False)
    by_dlib = FaceAligner(size=a.size, skip_if_aligned=False, warn_small=False)
    e_kp, e_dlib, kp_err, found = [], [], [], 0
    for i in range(a.n):
        pil = Image.fromarray((imgs[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        e_kp.append(diff(by_kp.align(pil, landmarks=kps[i], scheme="three_point"), imgs[i]))
        try:
            face = by_dlib.align(pil)
        except NoFaceError:
            continue
        found += 1
        e_dlib.append(diff(face, imgs[i]))
        det = key_points(face.landmarks, face.scheme)
        eye = np.linalg.norm(kps[i][1] - kps[i][0])
        kp_err.append(float(np.linalg.norm(det - kps[i], axis=1).mean() / eye * 100))
    other = float((imgs - imgs.roll(1, 0))[:, :, inner[1], inner[2]].abs().mean())
    print(f"Command: python -m benchmarks.render_alignment_check --n {a.n} --size {a.size}\n")
    print("| aligned with | faces found | key point error (% eye distance) | mean abs(crop - render) |")
    print("|---|---|---|---|")
    print(f"| generator's key_points | {a.n}/{a.n} | 0 (by definition) | {np.mean(e_kp):.4f} (max {np.max(e_kp):.4f}) |")
    if found:
        print(f"| dlib detector | {found}/{a.n} | {np.mean(kp_err):.1f} (median {np.median(kp_err):.1f}) | "
              f"{np.mean(e_dlib):.4f} (max {np.max(e_dlib):.4f}) |")
    else:
        print(f"| dlib detector | 0/{a.n} | - | - |")
    print(f"| (yardstick: another render) | - | - | {other:.4f} |")


if __name__ == "__main__":
    main()

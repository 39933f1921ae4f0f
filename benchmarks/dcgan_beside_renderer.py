"""A picture: one DCGAN identity edited along each shipped direction, beside one rendered identity's edits.

    python -m benchmarks.dcgan_beside_renderer --out docs/dcgan_beside_renderer.png

Rows pair the two generators' attributes of one name (age, smile, weight), then the DCGAN's own (mouth_open,
brow_raise, eye_open) beside the renderer's nearest (jaw_drop_AU26, brow_raise_AU1_2, Smiling); columns are alpha.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from comface_hf.pretraining.presets import DCGAN_DIRECTIONS
from comface_hf.synthesis import EmbeddedFaceGenerator
from comface_hf.synthesis.dcgan import load_gan_face_generate
from comface_hf.synthesis.latent_edit import LatentEditGenerator

PAIRS = (("age", "age"), ("smile", "smile"), ("weight", "weight"), ("mouth_open", "jaw_drop_AU26"),
         ("brow_raise", "brow_raise_AU1_2"), ("eye_open", "Smiling"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/dcgan_beside_renderer.png")
    p.add_argument("--dcgan_identity", type=int, default=7)
    p.add_argument("--renderer_identity", type=int, default=3)
    p.add_argument("--alphas", default="-4,-2,0,2,4")
    p.add_argument("--cell", type=int, default=80)
    a = p.parse_args(argv)
    alphas = [float(v) for v in a.alphas.split(",")]
    names = [d for d, _ in PAIRS]
    dcgan = LatentEditGenerator(load_gan_face_generate(), DCGAN_DIRECTIONS, attribute_names=names, image_size=a.cell)
    renderer = EmbeddedFaceGenerator(image_size=a.cell)
    k, cell, margin, gap = len(alphas), a.cell, 130, 16
    sheet = Image.new("RGB", (2 * margin + 2 * k * cell + gap, 20 + len(PAIRS) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((margin, 4), "DCGAN (gan-face-generate), z + alpha n", fill="black")
    draw.text((2 * margin + k * cell + gap, 4), "embedded renderer, p + alpha n", fill="black")
    alpha = torch.tensor(alphas, dtype=torch.float32)
    for row, (d_name, r_name) in enumerate(PAIRS):
        y = 20 + row * cell
        left = dcgan.render(torch.full((k,), a.dcgan_identity), torch.full((k,), dcgan.attribute_index(d_name)), alpha)
        right = renderer.render(torch.full((k,), a.renderer_identity),
                                torch.full((k,), renderer.attribute_index(r_name)), alpha)
        draw.text((4, y + cell // 2 - 6), d_name, fill="black")
        draw.text((margin + k * cell + gap + 4, y + cell // 2 - 6), r_name, fill="black")
        for j in range(k):
            for x0, im in ((margin + j * cell, left[j]), (2 * margin + k * cell + gap + j * cell, right[j])):
                arr = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                sheet.paste(Image.fromarray(arr), (x0, y))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(out)  # atomic
    print(f"wrote {out} (alphas {a.alphas})")


if __name__ == "__main__":
    main()

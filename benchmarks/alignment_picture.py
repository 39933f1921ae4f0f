"""docs/alignment.png: a real photo and rendered faces brought into the canonical face frame.

    .venv/bin/python -m benchmarks.alignment_picture --out docs/alignment.png \
        --beside docs/real_beside_rendered.png

``--beside``: the aligned astronaut at 112 px beside faces of the embedded generator (renderer 2.0.0) at 112 px, as
rendered and as one random photographic capture each (:mod:`comface_hf.synthesis.photographic`).

Top row: scikit-image's ``astronaut`` (a photo that ships in a registry package) with the detector's 68 landmarks
and the frame's square, its aligned crop with the frame's eye and mouth marks (green), and the crops of a copy turned
by 25 degrees and of a small greyscale copy. Bottom row: faces from the embedded generator and what the aligner makes
of them: the frames agree when a render and its crop look alike. No research image is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from comface_hf.face_alignment import FaceAligner
from comface_hf.face_frame import CANONICAL_KEY_POINTS, frame_quad
from comface_hf.synthesis import EmbeddedFaceGenerator

TILE = 224


def _marks(image: Image.Image, points, colour, radius=3) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for x, y in points:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour, width=2)
    return image


def _canonical(image: Image.Image) -> Image.Image:
    return _marks(image, CANONICAL_KEY_POINTS * image.width, (0, 255, 0), radius=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/alignment.png")
    parser.add_argument("--beside", default=None, help="also write the astronaut-beside-rendered-faces picture here")
    args = parser.parse_args()
    from skimage import data

    aligner = FaceAligner(size=TILE)
    photo = Image.fromarray(data.astronaut())
    face = aligner.align(photo)
    raw = _marks(photo, face.landmarks, (255, 60, 60), radius=2)
    ImageDraw.Draw(raw).polygon([tuple(p) for p in frame_quad(*(face.key_points + 0.5))], outline=(0, 255, 0), width=3)
    turned = aligner.align(photo.rotate(25, resample=Image.BICUBIC, fillcolor=(200, 200, 200)))
    small = aligner.align(photo.convert("L").resize((200, 200), Image.LANCZOS))
    top = [raw.resize((TILE, TILE), Image.LANCZOS), _canonical(face.image), _canonical(turned.image),
           _canonical(small.image)]

    generator = EmbeddedFaceGenerator(image_size=TILE)
    renders = generator.render(torch.tensor([3, 42]), torch.zeros(2, dtype=torch.long), torch.zeros(2))
    bottom = []
    for img in renders:
        render = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        bottom += [_canonical(render), _canonical(aligner.align(render).image)]

    sheet = Image.new("RGB", (4 * TILE + 50, 2 * TILE + 70), "white")
    draw = ImageDraw.Draw(sheet)
    labels = ["photo, 68 landmarks, frame", "aligned (green: frame marks)", "turned 25 deg, aligned",
              "grey 200 px copy, aligned", "rendered face", "its aligned crop", "rendered face", "its aligned crop"]
    for k, tile in enumerate(top + bottom):
        x, y = 10 + (k % 4) * (TILE + 10), 25 + (k // 4) * (TILE + 35)
        sheet.paste(tile, (x, y))
        draw.text((x, y - 15), labels[k], fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")
    if args.beside:
        beside(photo, args.beside)


def beside(photo: Image.Image, out: str, size: int = 112, count: int = 7) -> None:
    from comface_hf.synthesis.photographic import photographic

    aligner = FaceAligner(size=size)
    real = aligner.align(photo).image
    generator = EmbeddedFaceGenerator(image_size=size)
    ids = torch.arange(count) * 7 + 1
    attrs = torch.tensor([generator.attribute_index(a) for a in ("smile", "age", "smile", "weight", "age", "Young", "smile")][:count])
    alphas = torch.tensor([4.0, -4.0, 0.0, 3.0, 4.0, 0.0, 5.0][:count])
    renders = generator.render(ids, attrs, alphas)
    captured = photographic(renders, torch.Generator().manual_seed(0), 1.0)

    def pil(x: torch.Tensor) -> Image.Image:
        return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))

    pad = 6
    sheet = Image.new("RGB", (pad + (count + 1) * (size + pad), 2 * (size + pad) + 40), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), "skimage astronaut", fill="black")
    draw.text((pad + size + pad, 4), "renderer 2.0.0 faces in the same frame (top), one photographic capture each (bottom)",
              fill="black")
    sheet.paste(real, (pad, 20))
    sheet.paste(real.convert("L").convert("RGB"), (pad, 20 + size + pad))
    for k in range(count):
        x = pad + (k + 1) * (size + pad)
        sheet.paste(pil(renders[k]), (x, 20))
        sheet.paste(pil(captured[k]), (x, 20 + size + pad))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

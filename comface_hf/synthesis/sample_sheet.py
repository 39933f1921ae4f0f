"""Sample sheets: rows = identities, columns = an alpha sweep, with labels.

    python -m comface_hf.synthesis.sample_sheet --attribute smile --identities 4 --out docs/sample_sheet.png
    python -m comface_hf.synthesis.sample_sheet --attribute weight,age,smile --out sheet.png
    python -m comface_hf.synthesis.sample_sheet --attribute all --identities 1 --out all.png
    python -m comface_hf.synthesis.sample_sheet --attribute all --identities 3 --one-row-per-attribute \
        --out docs/sample_sheet.png     # the docs picture: every attribute, 3 identities x 5 alphas, 112 px
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence, Union

import torch
from PIL import Image, ImageDraw

from .attributes import ATTRIBUTE_NAMES

DEFAULT_ALPHAS = (-5.0, -2.5, 0.0, 2.5, 5.0)


def make_sample_sheet(
    attributes: Union[str, Sequence[str]] = "smile",
    identities: Union[int, Sequence[int]] = 4,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    image_size: int = 112,
    seed: int = 0,
    generator: Optional[Any] = None,
    one_row_per_attribute: bool = False,
) -> Image.Image:
    """Grid image: for each attribute a block of rows (one per identity) x ``alphas`` columns.

    Args:
        attributes: a name, ``"all"``, a comma-separated string or a list of names.
        identities: a count (identities ``0..n-1``) or explicit identity indices.
        generator: any object with ``render``/``attribute_index`` (default: embedded).
        one_row_per_attribute: put the identities side by side (one row per attribute, ``identities x alphas``
            columns) instead of one row per (attribute, identity).
    """
    if generator is None:
        from .spec import GeneratorSpec, build_generator

        generator = build_generator(GeneratorSpec(image_size=image_size, seed=seed))
    names = list(generator.attribute_names) if attributes == "all" else (
        [a.strip() for a in attributes.split(",")] if isinstance(attributes, str) else list(attributes)
    )
    ids = list(range(identities)) if isinstance(identities, int) else list(identities)
    if one_row_per_attribute:
        rows = [(n, None) for n in names]
        tiles = [(n, i, x) for n in names for i in ids for x in alphas]
    else:
        rows = [(n, i) for n in names for i in ids]
        tiles = [(n, i, x) for n, i in rows for x in alphas]
    cols = len(tiles) // len(rows)
    I = torch.tensor([i for _, i, _ in tiles])
    A = torch.tensor([generator.attribute_index(n) for n, _, _ in tiles])
    X = torch.tensor([float(x) for _, _, x in tiles])
    imgs = []
    for s in range(0, len(I), 256):  # bounded memory for --attribute all
        imgs.append(generator.render(I[s:s + 256], A[s:s + 256], X[s:s + 256]).cpu())
    img = torch.cat(imgs)
    size = img.shape[-1]
    label_w, head_h, pad = 150, 18, 2
    sheet = Image.new("RGB", (label_w + cols * (size + pad), head_h + len(rows) * (size + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c in range(cols):
        a = alphas[c % len(alphas)]
        head = f"a={a:+.1f}" if not one_row_per_attribute else f"id {ids[c // len(alphas)]} a={a:+.0f}"
        draw.text((label_w + c * (size + pad) + 4, 3), head, fill=(0, 0, 0))
    arr = (img * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for r, (n, i) in enumerate(rows):
        y = head_h + r * (size + pad)
        draw.text((4, y + size // 2 - 12), n if i is None else f"{n}\nidentity {i}", fill=(0, 0, 0))
        for c in range(cols):
            sheet.paste(Image.fromarray(arr[r * cols + c]), (label_w + c * (size + pad), y))
    return sheet


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attribute", default="smile", help="name, comma-separated names, or 'all'")
    p.add_argument("--identities", type=int, default=4)
    p.add_argument("--alphas", default=",".join(str(a) for a in DEFAULT_ALPHAS))
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--renderer-version", default=None, help="embedded renderer version (default: the newest)")
    p.add_argument("--one-row-per-attribute", action="store_true", help="identities side by side in one row")
    p.add_argument("--out", default="sample_sheet.png")
    a = p.parse_args(argv)
    generator = None
    if a.renderer_version:
        from .spec import GeneratorSpec, build_generator

        generator = build_generator(GeneratorSpec(image_size=a.image_size, seed=a.seed,
                                                  renderer_version=a.renderer_version))
    sheet = make_sample_sheet(a.attribute, a.identities, [float(x) for x in a.alphas.split(",")], a.image_size, a.seed,
                              generator=generator, one_row_per_attribute=a.one_row_per_attribute)
    sheet.save(a.out)
    print(f"wrote {a.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()

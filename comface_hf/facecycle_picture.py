# Copyright 2025 The comface_hf authors. Licensed under the Apache License, Version 2.0.
"""Picture of what a FaceCycle model does: input | neutral face | mean face | reconstruction, one row per input.

    python -m comface_hf.facecycle_picture --model FOLDER --out facecycle.png [--images a.png b.png ...]

Without `--images` the faces come from the project's embedded synthetic generator (one identity per row, with a
smile so the de-expression has something to remove).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image


COLUMNS = ("input", "neutral_face", "mean_face", "reconstruction")


def _to_unit_range(
    images: torch.Tensor, image_mean: Optional[Sequence[float]], image_std: Optional[Sequence[float]]
) -> torch.Tensor:
    if image_mean is not None or image_std is not None:
        channels = images.shape[1]
        mean = torch.tensor(image_mean if image_mean is not None else [0.0] * channels, dtype=images.dtype)
        std = torch.tensor(image_std if image_std is not None else [1.0] * channels, dtype=images.dtype)
        images = images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    return images.clamp(0.0, 1.0)


@torch.no_grad()
def make_facecycle_picture(
    model,
    pixel_values: torch.Tensor,
    padding: int = 2,
    image_mean: Optional[Sequence[float]] = None,
    image_std: Optional[Sequence[float]] = None,
) -> Image.Image:
    """Grid of FaceCycle outputs.

    Args:
        model: a `FaceCycleModel` (run in eval mode here, and put back in its previous mode).
        pixel_values: `FloatTensor[B, C, H, W]` faces in the model's input space.
        padding: white pixels between and around tiles.
        image_mean, image_std: the normalisation the faces were given, to undo before display; omit for [0, 1] inputs.

    Returns:
        RGB `PIL.Image` of width `4 * (W + padding) + padding` and height `B * (H + padding) + padding`;
        columns are input, de-expressed neutral face, mean face, reconstruction.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        output = model(pixel_values.to(device))
    finally:
        model.train(was_training)

    tiles = [pixel_values.cpu(), output.neutral_face.cpu(), output.mean_face.cpu(), output.reconstruction.cpu()]
    tiles = [_to_unit_range(t.float(), image_mean, image_std) for t in tiles]
    batch, channels, height, width = tiles[0].shape
    if channels == 1:
        tiles = [t.expand(-1, 3, -1, -1) for t in tiles]
    elif channels != 3:
        tiles = [t[:, :3] for t in tiles]  # show the first three channels
    canvas = torch.ones(3, batch * (height + padding) + padding, len(tiles) * (width + padding) + padding)
    for row in range(batch):
        for col, column_images in enumerate(tiles):
            top = padding + row * (height + padding)
            left = padding + col * (width + padding)
            canvas[:, top : top + height, left : left + width] = column_images[row]
    array = (canvas.permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(array)  # uint8 HxWx3 -> RGB


def _load_images(paths: Sequence[str], image_size: int) -> torch.Tensor:
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB").resize((image_size, image_size), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255.0)
    return torch.stack(images)


def _synthetic_faces(image_size: int, rows: int, seed: int, attribute: str, generator_spec=None) -> torch.Tensor:
    """Faces of the embedded renderer the model was trained with (its ``config.generator_spec``; default: the
    embedded renderer at ``seed``), edited along ``attribute``."""
    # Imported lazily: the picture command works on user images without the synthesis package.
    from comface_hf.synthesis.spec import build_generator, embedded_spec_for, specs_from_config

    generator = build_generator(embedded_spec_for(specs_from_config(generator_spec), image_size, seed), "cpu")
    identities = torch.arange(rows, dtype=torch.long)
    attributes = torch.full((rows,), generator.attribute_index(attribute), dtype=torch.long)
    alphas = torch.linspace(2.5, 5.0, rows) if rows > 1 else torch.full((1,), 5.0)  # strong edits in [-5, 5]
    return generator.render(identities, attributes, alphas)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder written by FaceCycleModel.save_pretrained")
    parser.add_argument("--out", required=True, help="output picture (.png)")
    parser.add_argument("--images", nargs="*", default=None, help="face images; default: synthetic faces")
    parser.add_argument("--rows", type=int, default=6, help="number of synthetic faces when --images is not given")
    parser.add_argument("--attribute", default="smile", help="synthetic expression attribute to render")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .modeling_facecycle import FaceCycleModel

    model = FaceCycleModel.from_pretrained(args.model)
    size = model.config.image_size
    if args.images:
        pixel_values = _load_images(args.images, size)
    else:
        if args.rows < 1:
            parser.error("--rows must be >= 1")
        pixel_values = _synthetic_faces(size, args.rows, args.seed, args.attribute,
                                        getattr(model.config, "generator_spec", None))
    # A model trained by training/pretrain.py saw the image processor's normalisation: apply it, and undo it to show.
    mean = std = None
    if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
        with open(os.path.join(args.model, "preprocessor_config.json")) as f:
            processor = json.load(f)
        mean, std = processor["image_mean"], processor["image_std"]
        pixel_values = (pixel_values - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    picture = make_facecycle_picture(model, pixel_values, image_mean=mean, image_std=std)
    picture.save(args.out)
    print(f"wrote {args.out} ({picture.width}x{picture.height}; columns: {', '.join(COLUMNS)})")


if __name__ == "__main__":
    main()

"""Eigen-CAM saliency maps of pretrained backbones (paper Sec. 4.7, Fig. 4) and a centre-of-face score.

The paper computes Eigen-CAM [43] on the final convolutional layer of each pretrained backbone: the first principal
component of the layer's activations, no class scores involved. This module wraps the maintained implementation,
``pytorch_grad_cam.EigenCAM`` (package ``grad-cam``), and adds what claim (f) of issue 6 needs:

* :func:`eigencam` — ``[N, H, W]`` maps in ``[0, 1]`` for a ComFace model (its ``backbone`` is used) or a bare timm
  backbone;
* :func:`centre_score` — the share of CAM mass inside the central box of the image (default: the central 50% of
  each side, i.e. 25% of the area, so a uniform map scores 0.25), a number to compare ComFace with scratch;
* :func:`saliency_figure` — rows = face images, columns = the original and one overlay per model;
* a command line::

    python -m comface_hf.monitoring.saliency --models ComFace=outputs/comface-embedded/model Scratch=scratch:resnet18 \\
        --out saliency.png [--num_images 4] [--score_images 64]

Supported default target layers (:func:`default_target_layer`): timm ResNets (``layer4``, the last convolutional
stage), timm models with ``stages`` (ConvNeXt, RegNet, ByobNet..., the last stage), EfficientNet-style ``conv_head``,
and ViTs (``blocks[-1].norm1``, tokens reshaped to the patch grid; ViT has no convolutional stage). Anything else:
pass ``target_layer`` explicitly.

Note: Eigen-CAM's principal component has an arbitrary sign; pytorch-grad-cam keeps the positive part of the
projection as computed (no sign correction), so a map can occasionally highlight the complement of what a
sign-flipped projection would. That is the reference behaviour and is left unchanged here.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
#: Unseen identities for the figure's faces: the synthetic downstream tasks' offset, far above pretraining's range.
FACE_IDENTITY_OFFSET = 10_000_000

ModelEntry = Union[nn.Module, tuple[nn.Module, Sequence[float], Sequence[float]]]


def _backbone(model_or_backbone: nn.Module) -> nn.Module:
    """A ComFace model's feature extractor f, or the module itself when it is already a backbone."""
    return getattr(model_or_backbone, "backbone", model_or_backbone)


def default_target_layer(backbone: nn.Module) -> tuple[nn.Module, Optional[Callable[[torch.Tensor], torch.Tensor]]]:
    """(layer whose activations Eigen-CAM decomposes, reshape transform or None) for a timm backbone.

    Raises ValueError naming the fix (pass ``target_layer``) for architectures not listed in the module docstring.
    """
    if hasattr(backbone, "layer4"):  # timm ResNet / ResNeXt: the last convolutional stage, as in the paper
        return backbone.layer4, None
    if hasattr(backbone, "patch_embed") and hasattr(backbone, "blocks"):  # ViT: tokens of the last block
        grid = tuple(backbone.patch_embed.grid_size)
        prefix = int(getattr(backbone, "num_prefix_tokens", 1))

        def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
            # [N, prefix + h*w, C] -> [N, C, h, w]: drop the class/register tokens, lay patches on their grid.
            patches = tokens[:, prefix:, :]
            return patches.reshape(patches.shape[0], grid[0], grid[1], patches.shape[2]).permute(0, 3, 1, 2)

        return backbone.blocks[-1].norm1, tokens_to_grid
    if hasattr(backbone, "stages"):
        return backbone.stages[-1], None
    if hasattr(backbone, "conv_head"):
        return backbone.conv_head, None
    raise ValueError(
        f"No default Eigen-CAM target layer for {type(backbone).__name__}: pass target_layer= (a module whose output "
        "is [N, C, h, w]), e.g. the backbone's last convolutional stage."
    )


def eigencam(
    model_or_backbone: nn.Module,
    pixel_values: torch.Tensor,
    target_layer: Optional[nn.Module] = None,
    reshape_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> np.ndarray:
    """Eigen-CAM maps of normalised images through a ComFace model's backbone (or a timm backbone).

    Args:
        model_or_backbone: ``ComFaceModel`` / ``ComFaceForChangeEstimation`` (its ``backbone`` is used) or a module
            mapping ``[N, 3, H, W]`` to features.
        pixel_values: ``[N, 3, H, W]`` images normalised as the model expects.
        target_layer: layer to decompose; default :func:`default_target_layer`.
        reshape_transform: maps the layer's output to ``[N, C, h, w]`` (only needed for token layers).

    Returns:
        ``float32`` array ``[N, H, W]`` in ``[0, 1]`` (each map min-max scaled by pytorch-grad-cam).
    """
    from pytorch_grad_cam import EigenCAM

    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be [N, 3, H, W], got shape {tuple(pixel_values.shape)}.")
    backbone = _backbone(model_or_backbone)
    if target_layer is None:
        target_layer, default_transform = default_target_layer(backbone)
        reshape_transform = reshape_transform or default_transform
    was_training = backbone.training
    backbone.eval()  # BatchNorm running statistics, no dropout: the map must not depend on the batch
    grid: list[tuple[int, ...]] = []
    hook = target_layer.register_forward_hook(lambda _m, _i, out: grid.append(tuple(
        (reshape_transform(out) if reshape_transform else out).shape[-2:])))
    try:
        device = next(backbone.parameters()).device
        with EigenCAM(model=backbone, target_layers=[target_layer], reshape_transform=reshape_transform) as cam:
            maps = cam(input_tensor=pixel_values.to(device), targets=None)
    finally:
        hook.remove()
        backbone.train(was_training)
    if grid and grid[0][0] * grid[0][1] < 9:
        # A 1x1 or 2x2 activation grid upsampled to the image carries (almost) no spatial information.
        warnings.warn(
            f"The target layer's activation map is only {grid[0][0]}x{grid[0][1]} for {pixel_values.shape[-1]} px "
            "inputs, so the CAM is nearly uniform. Feed larger images (e.g. --image_size 128 for a ResNet, stride 32) "
            "or pass an earlier target_layer.", stacklevel=2)
    return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)


def centre_score(cams: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Share of each map's mass inside the central box whose sides are ``fraction`` of the image's.

    Args:
        cams: ``[N, H, W]`` (or ``[H, W]``) non-negative maps.
        fraction: side of the central box relative to the image (0.5: the central 25% of the area).

    Returns:
        ``[N]`` scores in ``[0, 1]``; a uniform map scores ``fraction ** 2``; an all-zero map scores NaN.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim == 2:
        cams = cams[None]
    if cams.ndim != 3 or (cams < 0).any():
        raise ValueError("cams must be non-negative maps of shape [N, H, W].")
    _, h, w = cams.shape
    top, left = round(h * (1 - fraction) / 2), round(w * (1 - fraction) / 2)
    bottom, right = h - top, w - left
    inside = cams[:, top:bottom, left:right].sum(axis=(1, 2))
    total = cams.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def _entry(value: ModelEntry) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    if isinstance(value, tuple):
        model, mean, std = value
    else:
        model, mean, std = value, DEFAULT_MEAN, DEFAULT_STD
    return model, torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)


def _model_size(model: nn.Module, fallback: int) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "image_size", fallback) or fallback)


def cams_for_models(models: Mapping[str, ModelEntry], images: torch.Tensor,
                    input_size: Optional[int] = None) -> dict[str, np.ndarray]:
    """Eigen-CAM of ``images`` (``[N, 3, H, W]`` in [0, 1]) for every model, each with its own normalisation; maps
    are returned at the images' resolution.

    ``input_size``: side the images are resized to before the backbone; default each model's ``config.image_size``.
    Convolutional backbones accept other sizes, which is how a model pretrained at 32 px gets a usable 4 x 4 map.
    """
    out = {}
    for name, value in models.items():
        model, mean, std = _entry(value)
        size = input_size or _model_size(model, images.shape[-1])
        x = images if size == images.shape[-1] else torch.nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False)
        maps = eigencam(model, (x - mean) / std)
        if maps.shape[-1] != images.shape[-1]:
            maps = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=images.shape[-2:],
                                                   mode="bilinear", align_corners=False)[:, 0].numpy()
        out[name] = maps
    return out


def saliency_figure(models: Mapping[str, ModelEntry], images: torch.Tensor, cell: int = 128,
                    cams: Optional[Mapping[str, np.ndarray]] = None) -> Image.Image:
    """A grid: rows = images, columns = the original then one Eigen-CAM overlay per model, with a header row.

    Args:
        models: name -> model (normalised with mean/std 0.5) or (model, mean, std).
        images: ``[N, 3, H, W]`` faces in ``[0, 1]``.
        cell: side of each tile in pixels (tiles are upscaled with nearest-neighbour, no smoothing of the map).
        cams: precomputed :func:`cams_for_models` output (computed when omitted).

    Returns:
        RGB ``PIL.Image`` of size ``((1 + len(models)) * cell, HEADER + N * cell)``; the header names each column and
        its mean centre score.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    cams = dict(cams) if cams is not None else cams_for_models(models, images)
    names = list(models)
    rgb = images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
    header = 18
    canvas = Image.new("RGB", ((1 + len(names)) * cell, header + len(images) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), "image", fill="black")
    for j, name in enumerate(names, 1):
        draw.text((j * cell + 4, 3), f"{name} c={np.nanmean(centre_score(cams[name])):.2f}", fill="black")
    for i in range(len(images)):
        tiles = [np.uint8(np.round(rgb[i] * 255))]
        tiles += [show_cam_on_image(rgb[i], cams[name][i], use_rgb=True) for name in names]
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile).resize((cell, cell), Image.NEAREST), (j * cell, header + i * cell))
    return canvas


def face_images(num_images: int, image_size: int, seed: int = 0, generator_spec: Any = None) -> torch.Tensor:
    """Neutral faces (alpha 0) of unseen identities from the embedded generator, ``[N, 3, S, S]`` in [0, 1].

    ``generator_spec``: a model's ``config.generator_spec``: the faces come from the embedded renderer that model was
    trained or calibrated with (its renderer version and growth; :func:`~comface_hf.synthesis.spec.embedded_spec_for`);
    default: the embedded renderer at ``seed``."""
    from comface_hf.synthesis.spec import build_generator, embedded_spec_for, specs_from_config

    generator = build_generator(embedded_spec_for(specs_from_config(generator_spec), max(32, image_size), seed))
    ids = torch.arange(FACE_IDENTITY_OFFSET, FACE_IDENTITY_OFFSET + num_images)
    images = generator.render(ids, torch.zeros(num_images, dtype=torch.long), torch.zeros(num_images))
    if images.shape[-1] != image_size:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images


def load_model_spec(spec: str, image_size: Optional[int] = None) -> tuple[nn.Module, list[float], list[float]]:
    """``FOLDER`` (a ComFace ``from_pretrained`` folder) or ``scratch:<timm backbone>`` -> (model, mean, std)."""
    from comface_hf import ComFaceConfig, ComFaceImageProcessor, ComFaceModel

    if spec.startswith("scratch:"):
        backbone = spec.split(":", 1)[1] or "resnet18"
        torch.manual_seed(0)
        model = ComFaceModel(ComFaceConfig(backbone=backbone, image_size=image_size or 64))
        return model, list(DEFAULT_MEAN), list(DEFAULT_STD)
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"{spec!r} is neither a ComFace checkpoint folder nor 'scratch:<backbone>'.")
    model = ComFaceModel.from_pretrained(spec)
    try:
        processor = ComFaceImageProcessor.from_pretrained(spec)
        mean, std = list(processor.image_mean), list(processor.image_std)
    except OSError:  # a folder without preprocessor_config.json: the ComFace default
        mean, std = list(DEFAULT_MEAN), list(DEFAULT_STD)
    return model, mean, std


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Eigen-CAM saliency figure (Fig. 4) and centre-of-face scores.")
    parser.add_argument("--models", nargs="+", required=True,
                        help="name=FOLDER or name=scratch:<backbone>, e.g. ComFace=outputs/x/model Scratch=scratch:resnet18")
    parser.add_argument("--out", required=True, help="PNG path; the centre scores go to the same name with .json.")
    parser.add_argument("--num_images", type=int, default=4, help="Faces (rows) in the figure.")
    parser.add_argument("--score_images", type=int, default=64, help="Faces averaged for the centre score.")
    parser.add_argument("--image_size", type=int, default=None,
                        help="Face resolution and the backbones' input size (default: the first checkpoint's "
                             "image_size, else 64). ResNets need >= 96 px for a 3 x 3 last-stage map.")
    parser.add_argument("--fraction", type=float, default=0.5, help="Side of the central box (0.5: central 25%).")
    parser.add_argument("--cell", type=int, default=128)
    args = parser.parse_args(argv)

    specs = {}
    for item in args.models:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            parser.error(f"--models {item!r}: write name=FOLDER or name=scratch:<backbone>.")
        specs[name] = spec
    size = args.image_size
    if size is None:
        folders = [s for s in specs.values() if not s.startswith("scratch:")]
        size = _model_size(load_model_spec(folders[0])[0], 64) if folders else 64
    models = {name: load_model_spec(spec, size) for name, spec in specs.items()}
    # the faces of the first checkpoint's own embedded renderer (all models see the same faces)
    trained = next((m for m, _, _ in models.values() if getattr(m.config, "generator_spec", None)), None)
    images = face_images(max(args.num_images, args.score_images), size,
                         generator_spec=trained.config.generator_spec if trained is not None else None)
    # An explicit --image_size is also the backbones' input size (see cams_for_models); otherwise each model's own.
    cams = cams_for_models(models, images, input_size=args.image_size)
    scores = {name: centre_score(c, args.fraction) for name, c in cams.items()}
    figure = saliency_figure(models, images[: args.num_images], cell=args.cell,
                             cams={k: v[: args.num_images] for k, v in cams.items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    report = {
        "centre_box_side_fraction": args.fraction,
        "uniform_map_score": args.fraction**2,
        "num_faces": len(images),
        "image_size": size,
        "input_size": args.image_size or "each model's config.image_size",
        "models": specs,
        "centre_score": {name: {"mean": float(np.nanmean(s)), "std": float(np.nanstd(s, ddof=1)) if len(s) > 1 else 0.0}
                         for name, s in scores.items()},
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    for name, s in report["centre_score"].items():
        print(f"{name}: centre score {s['mean']:.3f} ± {s['std']:.3f} over {len(images)} faces "
              f"(uniform map: {args.fraction ** 2:.2f})")
    print(f"Wrote {out} and {out.with_suffix('.json')}")
    return report


if __name__ == "__main__":
    main()

"""The paper's augmentation (Sec. 3.2: horizontal flip, colour jitter, grayscale, random crop), batched on the device.

torchvision's v2 transforms draw one set of random parameters per call, so a batch tensor would share one crop and
one jitter. ComFace needs independent views per image (two of x, one of y) for thousands of images a second on the
training device, so parameters are drawn per image from a seeded generator and applied with torchvision's own
kernels: `roi_align` for crop-and-resize, `rgb_to_grayscale`, and the colour operations of
`torchvision.transforms.v2.functional` written as one per-image affine colour map (tests compare it with them).
Seeding per (seed, epoch, step) makes the views a pure function of the step, so a resumed run sees the same views.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from ..synthesis.photographic import uniform_draws


@dataclass(frozen=True)
class AugmentationConfig:
    """SimCLR's operations at half of ImageNet SimCLR's strength (0.4/0.4/0.4/0.1 jitter, crop from 8%, grey 0.2):
    several attributes are colours (pale skin, rosy cheeks, grey hair, lipstick) or small regions, and x and y are
    augmented independently, so full-strength jitter and crops would erase the change ComFace learns to measure."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    grayscale_p: float = 0.1


#: ``--augmentation`` names: ``half`` (the default; why in :class:`AugmentationConfig`) and ``simclr``, ImageNet
#: SimCLR's full strength (crops from 8% of the area, jitter 0.4/0.4/0.4/0.1, grey 0.2). On the DCGAN + renderer mix,
#: ``simclr`` lowers FG-NET age change and leaves JAFFE happiness change level (BENCHMARKS.md, "What else was
#: screened"), so ``half`` stays the default.
AUGMENTATIONS: dict[str, AugmentationConfig] = {
    "half": AugmentationConfig(),
    "simclr": AugmentationConfig(crop_scale=(0.08, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                                 grayscale_p=0.2),
}


def augmentation_config(name: str = "half", crop_scale_min: float | None = None) -> AugmentationConfig:
    """The named augmentation of :data:`AUGMENTATIONS`, with its smallest crop area share replaced when given."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"--augmentation must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
    cfg = AUGMENTATIONS[name]
    if crop_scale_min is None:
        return cfg
    if not 0.0 < crop_scale_min <= 1.0:
        raise ValueError(f"--crop_scale_min is the smallest crop's share of the image area, in (0, 1]; "
                         f"got {crop_scale_min}")
    return replace(cfg, crop_scale=(crop_scale_min, 1.0))


def crop_boxes(n: int, height: int, width: int, cfg: AugmentationConfig, g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes [n, 4] (x1, y1, x2, y2), one per image: area share and log-uniform aspect ratio."""
    area = uniform_draws(n, *cfg.crop_scale, g) * height * width
    log_ratio = uniform_draws(n, torch.log(torch.tensor(cfg.crop_ratio[0])).item(), torch.log(torch.tensor(cfg.crop_ratio[1])).item(), g)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=width)
    h = torch.sqrt(area / ratio).clamp(max=height)
    x1 = torch.rand(n, generator=g) * (width - w)
    y1 = torch.rand(n, generator=g) * (height - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def augment_batch(images: torch.Tensor, generator: torch.Generator, cfg: AugmentationConfig = AugmentationConfig(),
                  geometry: tuple[torch.Tensor, torch.Tensor] | None = None, return_geometry: bool = False):
    """One random view of each image.

    Args:
        images: `[N, 3, H, W]` float in [0, 1], on any device.
        generator: a CPU torch.Generator; all parameters are drawn from it (device-independent).
        geometry: optional `(boxes [N, 4], flip [N])` of another view to crop and flip exactly as (its own are still
            drawn, so the colour draws stay those of the generator).
        return_geometry: also return this view's `(boxes, flip)`.

    Returns:
        `[N, 3, H, W]` float in [0, 1] on the images' device (and `(boxes, flip)` with `return_geometry`).
    """
    n, _, height, width = images.shape
    device = images.device
    boxes = crop_boxes(n, height, width, cfg, generator)
    flip = torch.rand(n, generator=generator) < cfg.flip_p
    if geometry is not None:
        if geometry[0].shape != boxes.shape or geometry[1].shape != flip.shape:
            raise ValueError(f"geometry must be (boxes [{n}, 4], flip [{n}]) for {n} images, got "
                             f"{tuple(geometry[0].shape)} and {tuple(geometry[1].shape)}")
        boxes, flip = geometry
    jitter = torch.rand(n, generator=generator) < cfg.jitter_p
    brightness = uniform_draws(n, 1 - cfg.brightness, 1 + cfg.brightness, generator)
    contrast = uniform_draws(n, 1 - cfg.contrast, 1 + cfg.contrast, generator)
    saturation = uniform_draws(n, 1 - cfg.saturation, 1 + cfg.saturation, generator)
    hue = uniform_draws(n, -cfg.hue, cfg.hue, generator)
    gray = torch.rand(n, generator=generator) < cfg.grayscale_p
    one = torch.ones(n)
    # Images without jitter get identity factors, so one batched pass serves all.
    brightness, contrast, saturation = (torch.where(jitter, f, one).to(device) for f in (brightness, contrast, saturation))
    hue = torch.where(jitter, hue, torch.zeros(n)).to(device)

    rois = torch.cat([torch.arange(n, dtype=torch.float32).unsqueeze(1), boxes], dim=1).to(device, images.dtype)
    out = roi_align(images, rois, output_size=(height, width), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    out = torch.where(flip.to(device).view(-1, 1, 1, 1), out.flip(-1), out)
    out = color_jitter(out, brightness, contrast, saturation, hue)
    grayscale = TF.rgb_to_grayscale(out, num_output_channels=3)
    out = torch.where(gray.to(device).view(-1, 1, 1, 1), grayscale, out)
    return (out, (boxes, flip)) if return_geometry else out


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_matrix(brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor):
    """Brightness, contrast, saturation and hue, in that order, as one affine colour map per image.

    torchvision applies each as a blend (brightness: with black; contrast: with the mean grey level; saturation: with
    the grey image); each blend is linear in the pixels, so their composition is out = A x + o * mean_gray(x), with
    A = c * b * H * S and o = (1 - c) * b (S and H keep grey fixed). Hue turns the chroma plane of YIQ by
    2 pi * hue, a linear stand-in for torchvision's HSV shift. torchvision clamps after every step; this clamps once.

    Returns:
        (A `[N, 3, 3]`, o `[N]`).
    """
    n = brightness.shape[0]
    w = torch.tensor(GRAY_WEIGHTS, device=brightness.device)
    eye = torch.eye(3, device=brightness.device).expand(n, 3, 3)
    sat = saturation.view(-1, 1, 1) * eye + (1 - saturation.view(-1, 1, 1)) * torch.ones(n, 3, 1, device=w.device) * w.view(1, 1, 3)
    theta = 2 * torch.pi * hue
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(n, 3, 3, device=w.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    yiq = _RGB_TO_YIQ.to(w.device)
    hue_matrix = torch.linalg.inv(yiq) @ rot @ yiq
    a = (contrast * brightness).view(-1, 1, 1) * hue_matrix @ sat
    return a, (1 - contrast) * brightness


def color_jitter(images: torch.Tensor, brightness, contrast, saturation, hue) -> torch.Tensor:
    """Per-image colour jitter of `[N, 3, H, W]` images in [0, 1] (see `color_matrix`)."""
    a, offset = color_matrix(brightness, contrast, saturation, hue)
    mean_gray = TF.rgb_to_grayscale(images).mean(dim=(-3, -2, -1))
    out = torch.einsum("nij,njhw->nihw", a.to(images.dtype), images)
    return (out + (offset * mean_gray).view(-1, 1, 1, 1).to(images.dtype)).clamp(0, 1)


def step_generator(seed: int, epoch: int, step: int, rank: int, stream: int) -> torch.Generator:
    """A CPU generator that depends only on its arguments (seed, epoch, step, process, view)."""
    mixed = (((seed * 1_000_003 + epoch) * 1_000_033 + step) * 1_009 + rank) * 7 + stream
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


__all__ = ["AUGMENTATIONS", "AugmentationConfig", "augment_batch", "augmentation_config", "step_generator"]

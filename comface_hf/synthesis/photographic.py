"""Photographic capture randomisation: make each rendered face look like one photo out of many cameras and prints.

Real image pairs of one person differ in more than the face: two photos of a child taken years apart (FG-NET) were
shot on different cameras and film, printed, faded and scanned; video frames and phone photos differ in exposure,
white balance, noise, focus and compression. :func:`photographic` applies such a capture, drawn independently for
every image, so the two images of a synthetic pair are two different "photos" of the same face change:

* exposure (a gain) and tone curve (gamma, contrast), white balance (per-channel gains around grey),
* optical blur (a Gaussian of random width) and sensor grain (Gaussian noise, luminance plus a little chroma),
* greyscale (black-and-white film, as in a part of FG-NET and all of JAFFE),
* a faded-scan look (lifted blacks, lower contrast, a yellow-brown cast),
* JPEG compression at a random quality.

``strength`` scales every effect's range (0: identity); its default is measured, not guessed:
``benchmarks/photographic_strength.py`` matches the within-pair spread of simple image statistics (brightness,
contrast, colourfulness, sharpness) between synthetic pairs and real FG-NET / JAFFE development pairs (BENCHMARKS.md).

Every capture parameter is drawn from a CPU ``torch.Generator`` (deterministic per seed, device-independent), as
in :mod:`.augment`. The pixel work runs where the images are, so that on a GPU the capture does not stall the training
step on host copies: the grain noise comes from a generator on the images' device seeded with a drawn ``noise_seed``
(on CPU the same numbers as ever; on CUDA other numbers from the same seed), and JPEG goes through
``jpeg_backend``: ``"auto"`` uses torchvision's nvJPEG encoder/decoder on CUDA (one encode call per quality, one
batched decode) and Pillow on CPU, whose output the CPU tests pin bit for bit. (torchvision's CPU JPEG gave the same
bytes as Pillow with torchvision 0.29 and Pillow 13, but each wheel bundles its own libjpeg, so nothing keeps them
equal. nvJPEG encodes chroma at full resolution (4:4:4) where Pillow subsamples it (4:2:0), so JPEG on CUDA is a
slightly milder artifact.)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: ``photographic(jpeg_backend=...)`` values: ``"auto"`` is torchvision on CUDA, Pillow elsewhere.
JPEG_BACKENDS = ("auto", "pillow", "torchvision")

#: The strength the pretraining ``--photographic`` flag uses (measured: benchmarks/photographic_strength.py).
DEFAULT_STRENGTH = 1.0


@dataclass(frozen=True)
class CaptureRanges:
    """Ranges at ``strength = 1`` (each scaled by the strength)."""

    exposure: float = 0.35  # log2 gain, uniform in +-
    gamma: float = 0.25  # log gamma, uniform in +-
    contrast: float = 0.25  # contrast factor 1 +- this
    white_balance: float = 0.12  # per-channel log gain, uniform in +-
    blur_sigma: float = 1.0  # Gaussian sigma in pixels of a 64 px face, uniform in [0, this]
    grain: float = 0.03  # noise std, uniform in [0, this]
    greyscale_p: float = 0.2
    faded_p: float = 0.15
    jpeg_p: float = 0.5
    jpeg_quality_min: int = 30


def uniform_draws(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """``n`` draws from U(low, high) with generator ``g`` (the per-image random settings of a capture or augmentation)."""
    return low + (high - low) * torch.rand(n, generator=g)


def luma(images: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` luma (Rec. 601 weights) of ``[N, 3, H, W]`` RGB images: what black-and-white film records."""
    return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur (sigma in pixels; 0 leaves the image unchanged)."""
    n, c, h, w = images.shape
    radius = max(1, int(np.ceil(3 * float(sigma.max())))) if len(sigma) else 1
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    s = sigma.to(images.device, images.dtype).clamp(min=1e-3).view(n, 1)
    k = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # [n, K]
    pad = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    kh = k.repeat_interleave(c, 0).view(n * c, 1, 1, -1)
    kv = k.repeat_interleave(c, 0).view(n * c, 1, -1, 1)
    y = F.conv2d(pad.reshape(1, n * c, h + 2 * radius, w + 2 * radius), kh, groups=n * c)
    y = F.conv2d(y, kv, groups=n * c)
    return y.view(n, c, h, w)


def _jpeg_pillow(images: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """JPEG round trip of uint8 ``[K, 3, H, W]`` images through Pillow, one image at a time on the CPU."""
    out = []
    for image, q in zip(images.cpu(), quality):
        buf = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=int(q))
        buf.seek(0)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(out).to(images.device)


def _jpeg_torchvision(images: torch.Tensor, quality: Sequence[int]) -> torch.Tensor:
    """JPEG round trip of uint8 ``[K, 3, H, W]`` images through torchvision, on the images' device (nvJPEG on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    encoded: dict[int, torch.Tensor] = {}
    for q in sorted(set(quality)):  # encode_jpeg takes one quality per call, so one batch per quality
        which = [i for i, qi in enumerate(quality) if qi == q]
        encoded.update(zip(which, encode_jpeg([images[i] for i in which], quality=int(q))))
    ordered = [encoded[i] for i in range(len(quality))]
    # decode_jpeg reads the bytes from the CPU (wherever it decodes): one small copy for the whole batch.
    data = torch.cat(ordered).cpu().split([len(e) for e in ordered])
    return torch.stack(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=images.device))


def photographic(
    images: torch.Tensor, generator: torch.Generator, strength: float = DEFAULT_STRENGTH,
    ranges: CaptureRanges = CaptureRanges(), jpeg_backend: str = "auto", settings_from: torch.Tensor | None = None,
) -> torch.Tensor:
    """One random capture of each image.

    Args:
        images: ``[N, 3, H, W]`` in ``[0, 1]`` on any device.
        generator: CPU ``torch.Generator`` all draws come from.
        strength: scales every effect (0 returns the images unchanged; 1 is the measured default).
        ranges: the effects' ranges at strength 1.
        jpeg_backend: one of :data:`JPEG_BACKENDS`: ``"auto"`` (torchvision on CUDA, Pillow elsewhere), ``"pillow"``
            or ``"torchvision"`` (which images get JPEG, and at which quality, is the same draw for all three).

    Returns:
        ``[N, 3, H, W]`` in ``[0, 1]``, same device and dtype.
    """
    if strength < 0 or not np.isfinite(strength):
        raise ValueError(f"photographic strength must be a finite number >= 0, got {strength}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"photographic() takes [N, 3, H, W] images, got shape {tuple(images.shape)}")
    if jpeg_backend not in JPEG_BACKENDS:
        raise ValueError(f"photographic jpeg_backend must be one of {JPEG_BACKENDS}, got {jpeg_backend!r}")
    n, _, h, _ = images.shape
    if n == 0 or strength == 0:
        return images
    r, s, dev = ranges, float(strength), images.device
    exposure = torch.exp2(uniform_draws(n, -r.exposure * s, r.exposure * s, generator))
    gamma = torch.exp(uniform_draws(n, -r.gamma * s, r.gamma * s, generator))
    contrast = 1.0 + uniform_draws(n, -r.contrast * s, r.contrast * s, generator)
    wb = torch.exp(uniform_draws(3 * n, -r.white_balance * s, r.white_balance * s, generator)).view(n, 3)
    wb = wb / wb.mean(1, keepdim=True)
    sigma = uniform_draws(n, 0.0, r.blur_sigma * s, generator) * (h / 64.0)
    grain = uniform_draws(n, 0.0, r.grain * s, generator)
    grey = torch.rand(n, generator=generator) < min(1.0, r.greyscale_p * s)
    faded = torch.rand(n, generator=generator) < min(1.0, r.faded_p * s)
    fade_amount = uniform_draws(n, 0.3, 1.0, generator)
    jpeg = torch.rand(n, generator=generator) < min(1.0, r.jpeg_p * s)
    quality = (r.jpeg_quality_min + (95 - r.jpeg_quality_min) * torch.rand(n, generator=generator)).round()
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    if settings_from is not None:  # drawn as usual (the stream stays the same), then copied from the source image
        if settings_from.shape != (n,) or bool((settings_from < 0).any() | (settings_from >= n).any()):
            raise ValueError(f"settings_from must be an [N] = [{n}] index into the images, got {tuple(settings_from.shape)}")
        exposure, gamma, contrast, wb, sigma, grain, grey, faded, fade_amount, jpeg, quality = (
            t[settings_from] for t in (exposure, gamma, contrast, wb, sigma, grain, grey, faded, fade_amount, jpeg, quality))

    def v(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, images.dtype).view(n, *([1] * (images.ndim - 1)))

    x = _gaussian_blur(images, sigma)
    x = x * v(exposure) * wb.to(dev, images.dtype).view(n, 3, 1, 1)
    x = x.clamp(1e-4, 1.0) ** v(gamma)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * v(contrast)
    x = torch.where(v(grey.float()) > 0, luma(x).expand_as(x), x)
    # Faded print: lifted blacks, compressed highlights, a warm (yellow-brown) cast.
    tint = torch.tensor([1.0, 0.9, 0.72], device=dev, dtype=images.dtype).view(1, 3, 1, 1)
    f = v(fade_amount * faded.float())
    x = x + f * ((0.18 + 0.62 * x) * tint - x)
    # Noise is drawn on the images' device so a GPU batch needs no host-to-device copy of N x 4 x H x W floats. The
    # CUDA branch only swaps the generator's device (it is not run by the CPU-only tests); the CPU branch is the
    # original draw, so CPU pixels stay as they were.
    noise_device = dev if dev.type == "cuda" else torch.device("cpu")
    g = torch.Generator(device=noise_device).manual_seed(noise_seed)
    w = images.shape[-1]
    noise = (torch.randn(n, 1, h, w, generator=g, device=noise_device)
             + 0.3 * torch.randn(n, 3, h, w, generator=g, device=noise_device))
    x = (x + v(grain) * noise.to(dev, images.dtype)).clamp(0.0, 1.0)
    if bool(jpeg.any()):
        which = torch.nonzero(jpeg).view(-1)
        use_torchvision = jpeg_backend == "torchvision" or (jpeg_backend == "auto" and dev.type == "cuda")
        round_trip = _jpeg_torchvision if use_torchvision else _jpeg_pillow
        rows = which.to(dev)  # x is this function's own tensor (from clamp), so writing into it touches no input
        compressed = round_trip((x[rows].clamp(0, 1) * 255).round().byte(), quality[which].int().tolist())
        x[rows] = compressed.to(images.dtype) / 255.0
    return x


def image_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image capture statistics ``[N]`` each: mean luminance, luminance contrast (std), colourfulness (mean
    chroma distance from grey) and sharpness (mean |Laplacian| of the luminance at the image's size)."""
    grey = luma(images)
    chroma = (images - grey).abs().mean((1, 2, 3))
    y = grey[:, 0]
    lap = (4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]).abs()
    return {"brightness": y.mean((1, 2)), "contrast": y.std((1, 2)), "colourfulness": chroma,
            "sharpness": lap.mean((1, 2))}


__all__ = ["CaptureRanges", "DEFAULT_STRENGTH", "JPEG_BACKENDS", "image_statistics", "luma", "photographic"]

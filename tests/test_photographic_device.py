"""The device-side photographic capture: torchvision JPEG and device noise, checked on CPU tensors (no GPU in CI).

``photographic`` picks torchvision's JPEG (nvJPEG) on CUDA and keeps Pillow on CPU; these tests force the torchvision
backend on CPU tensors to check its batching and closeness to Pillow, and pin the default CPU output bit for bit to
the implementation before the device work (a copy of which is below).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf.synthesis.photographic import (
    CaptureRanges,
    _gaussian_blur,
    photographic,
)
from comface_hf.synthesis.photographic import uniform_draws as _uniform

pytestmark = pytest.mark.filterwarnings("ignore:.*TorchCodec:DeprecationWarning")  # torchvision.io's JPEG, 0.29+


def _reference_photographic(images: torch.Tensor, generator: torch.Generator, strength: float,
                            r: CaptureRanges = CaptureRanges()) -> torch.Tensor:
    """photographic() as it was before the device work: CPU noise and a Pillow JPEG round trip per image."""
    n, _, h, _ = images.shape
    s, dev = float(strength), images.device
    exposure = torch.exp2(_uniform(n, -r.exposure * s, r.exposure * s, generator))
    gamma = torch.exp(_uniform(n, -r.gamma * s, r.gamma * s, generator))
    contrast = 1.0 + _uniform(n, -r.contrast * s, r.contrast * s, generator)
    wb = torch.exp(_uniform(3 * n, -r.white_balance * s, r.white_balance * s, generator)).view(n, 3)
    wb = wb / wb.mean(1, keepdim=True)
    sigma = _uniform(n, 0.0, r.blur_sigma * s, generator) * (h / 64.0)
    grain = _uniform(n, 0.0, r.grain * s, generator)
    grey = torch.rand(n, generator=generator) < min(1.0, r.greyscale_p * s)
    faded = torch.rand(n, generator=generator) < min(1.0, r.faded_p * s)
    fade_amount = _uniform(n, 0.3, 1.0, generator)
    jpeg = torch.rand(n, generator=generator) < min(1.0, r.jpeg_p * s)
    quality = (r.jpeg_quality_min + (95 - r.jpeg_quality_min) * torch.rand(n, generator=generator)).round()
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    def v(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, images.dtype).view(n, 1, 1, 1)

    x = _gaussian_blur(images, sigma)
    x = x * v(exposure) * wb.to(dev, images.dtype).view(n, 3, 1, 1)
    x = x.clamp(1e-4, 1.0) ** v(gamma)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * v(contrast)
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = torch.where(v(grey.float()) > 0, luma.expand_as(x), x)
    tint = torch.tensor([1.0, 0.9, 0.72], device=dev, dtype=images.dtype).view(1, 3, 1, 1)
    f = v(fade_amount * faded.float())
    x = x + f * ((0.18 + 0.62 * x) * tint - x)
    g = torch.Generator(device="cpu").manual_seed(noise_seed)
    w = images.shape[-1]
    noise = torch.randn(n, 1, h, w, generator=g) + 0.3 * torch.randn(n, 3, h, w, generator=g)
    x = (x + v(grain) * noise.to(dev, images.dtype)).clamp(0.0, 1.0)
    x = x.clone()
    for i in torch.nonzero(jpeg).view(-1).tolist():
        arr = (x[i].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality[i]))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
        x[i] = torch.from_numpy(out.copy()).permute(2, 0, 1).to(dev, images.dtype) / 255.0
    return x


def _images(n: int = 48, size: int = 40) -> torch.Tensor:
    smooth = torch.rand(n, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(smooth, size=size, mode="bilinear", align_corners=False)


def test_cpu_default_is_bit_identical_to_before() -> None:
    x = _images()
    for seed, strength, dtype in [(0, 1.0, torch.float32), (1, 0.5, torch.float32), (2, 2.0, torch.float32),
                                  (3, 1.0, torch.float64)]:
        new = photographic(x.to(dtype), torch.Generator().manual_seed(seed), strength)
        old = _reference_photographic(x.to(dtype), torch.Generator().manual_seed(seed), strength)
        assert new.dtype == dtype and torch.equal(new, old), (seed, strength)
        assert torch.equal(new, photographic(x.to(dtype), torch.Generator().manual_seed(seed), strength,
                                             jpeg_backend="pillow"))


def test_torchvision_jpeg_is_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.io

    calls: dict[str, list[int]] = {"encode": [], "decode": []}
    encode, decode = torchvision.io.encode_jpeg, torchvision.io.decode_jpeg

    def counting_encode(images, quality):
        calls["encode"].append(len(images))
        return encode(images, quality=quality)

    def counting_decode(data, **kwargs):
        calls["decode"].append(len(data))
        return decode(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "encode_jpeg", counting_encode)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", counting_decode)
    x, one_quality = _images(), CaptureRanges(jpeg_quality_min=95)
    raw = photographic(x, torch.Generator().manual_seed(0), ranges=CaptureRanges(jpeg_quality_min=95, jpeg_p=0.0))
    out = photographic(x, torch.Generator().manual_seed(0), ranges=one_quality, jpeg_backend="torchvision")
    jpegged = int((out != raw).flatten(1).any(1).sum())
    assert 5 < jpegged < len(x) and calls == {"encode": [jpegged], "decode": [jpegged]}  # one call each, all images
    # with random qualities: one encode call per distinct quality, still one decode call
    for recorded in calls.values():
        recorded.clear()
    photographic(x, torch.Generator().manual_seed(0), jpeg_backend="torchvision")
    assert len(calls["decode"]) == 1 and sum(calls["encode"]) == calls["decode"][0] and max(calls["encode"]) > 1


def test_torchvision_jpeg_matches_pillow() -> None:
    x = _images(64)
    for seed in (0, 1):
        pil = photographic(x, torch.Generator().manual_seed(seed), jpeg_backend="pillow")
        tv = photographic(x, torch.Generator().manual_seed(seed), jpeg_backend="torchvision")
        raw = photographic(x, torch.Generator().manual_seed(seed), ranges=CaptureRanges(jpeg_p=0.0))
        jpegged = (pil != raw).flatten(1).any(1)
        assert 0 < int(jpegged.sum()) < len(x)
        assert torch.equal(tv[~jpegged], pil[~jpegged])  # same draws: the images without JPEG are identical
        # torchvision 0.29's CPU JPEG gave Pillow 13's bytes exactly (difference 0, on 128 rendered 64 px faces too);
        # allow a tenth of the JPEG artifact itself (4.6-5.3/255 mean here) for a differently built libjpeg.
        artifact = float((pil - raw)[jpegged].abs().mean())
        assert float((tv - pil)[jpegged].abs().mean()) <= 0.1 * artifact, seed


def test_unknown_jpeg_backend() -> None:
    with pytest.raises(ValueError, match="jpeg_backend"):
        photographic(_images(2), torch.Generator(), jpeg_backend="nvjpeg")

"""A small StyleGAN-shaped generator for tests and CPU benchmarks (no weights to download).

It has what `comface_hf.synthesis` relies on in NVIDIA's StyleGAN2-ADA / StyleGAN3 generators: ``z_dim``, ``c_dim``,
``w_dim``, ``num_ws``, ``img_resolution``; ``mapping(z, c, truncation_psi=1)`` -> ``[B, num_ws, w_dim]`` (an MLP, with
a tracked ``w_avg``); ``synthesis(ws)`` -> ``[B, 3, R, R]`` in [-1, 1] from a learned 4x4 constant through modulated
3x3 convolutions (weight demodulation as in StyleGAN2, in its non-fused form) and per-resolution toRGB outputs summed (the "skip"
architecture). Random weights from a seed, so each seed is a different, fixed "trained" generator.

    G = make_generator(seed=0, img_resolution=32)     # also the import path tests.stylegan_fixture:make_generator
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 3):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # normalise the 2nd moment, as StyleGAN does
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * math.sqrt(2)
        w = x[:, None, :].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            w[:, :cutoff] = self.w_avg.lerp(w[:, :cutoff], truncation_psi)
        return w


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated convolution: per-sample weights scaled by styles from w, then demodulated."""

    def __init__(self, w_dim: int, in_channels: int, out_channels: int, kernel: int = 3, demodulate: bool = True):
        super().__init__()
        self.affine = nn.Linear(w_dim, in_channels)
        nn.init.ones_(self.affine.bias)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.demodulate, self.padding = demodulate, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # StyleGAN2's non-fused form (fused_modconv=False): scale the input by the styles, one shared convolution,
        # then scale the output by the demodulation coefficients -- the same result as per-sample weights.
        styles = self.affine(w)  # [B, in]
        weight = self.weight.to(x.dtype)
        x = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight, padding=self.padding)
        if self.demodulate:
            dcoefs = ((self.weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            x = x * dcoefs[:, :, None, None].to(x.dtype)
        else:
            x = x / math.sqrt(self.weight.shape[1] * self.weight.shape[-1] ** 2)
        return x + self.bias.view(1, -1, 1, 1).to(x.dtype)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, channels: int = 16):
        super().__init__()
        self.w_dim, self.img_resolution = w_dim, img_resolution
        self.const = nn.Parameter(torch.randn(channels, 4, 4))
        self.resolutions = [2 ** k for k in range(2, int(math.log2(img_resolution)) + 1)]
        self.convs = nn.ModuleList()
        self.torgb = nn.ModuleList()
        for res in self.resolutions:
            self.convs.append(nn.ModuleList(ModulatedConv(w_dim, channels, channels) for _ in range(1 if res == 4 else 2)))
            self.torgb.append(ModulatedConv(w_dim, channels, 3, kernel=1, demodulate=False))
        self.num_ws = sum(len(c) for c in self.convs) + 1  # one w per conv, plus the last toRGB (as StyleGAN2)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = self.const[None].expand(len(ws), -1, -1, -1).to(ws.dtype)
        img, k = None, 0
        for convs, torgb in zip(self.convs, self.torgb):
            if img is not None:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            for conv in convs:
                x = F.leaky_relu(conv(x, ws[:, k]), 0.2) * math.sqrt(2)
                k += 1
            rgb = torgb(x, ws[:, k])  # toRGB shares the w of the next layer, as in StyleGAN2
            img = rgb if img is None else img + rgb
        return torch.tanh(img)


class Generator(nn.Module):
    def __init__(self, z_dim: int = 32, w_dim: int = 32, img_resolution: int = 32, channels: int = 16):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, 0, w_dim
        self.img_resolution, self.img_channels = img_resolution, 3
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, 0, w_dim, self.num_ws)

    def forward(self, z, c=None, truncation_psi: float = 1.0, **_):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi))


def make_generator(checkpoint: Optional[str] = None, seed: int = 0, img_resolution: int = 32, z_dim: int = 32,
                   w_dim: int = 32, channels: int = 16) -> Generator:
    """A fixed random generator for `seed` (or one whose weights are in a safetensors `checkpoint`)."""
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        G = Generator(z_dim, w_dim, img_resolution, channels)
        with torch.no_grad():
            G.mapping.w_avg.copy_(G.mapping(torch.randn(256, z_dim))[:, 0].mean(0))
    finally:
        torch.random.set_rng_state(rng_state)  # building a generator must not move the caller's random stream
    if checkpoint is not None:
        from safetensors.torch import load_file

        G.load_state_dict(load_file(checkpoint))
    return G.eval().requires_grad_(False)


def unit_directions(names, w_dim: int = 32, seed: int = 0, num_ws: Optional[int] = None) -> dict:
    """Random InterFaceGAN-style boundaries: ``{name: float32 [1, w_dim]}`` (or ``[1, num_ws * w_dim]`` for W+), unit norm."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size = w_dim * (num_ws or 1)
    out = {}
    for name in names:
        v = rng.standard_normal((1, size))
        out[name] = (v / np.linalg.norm(v)).astype(np.float32)
    return out

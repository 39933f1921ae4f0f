"""Deterministic helpers both embedded renderers use (:mod:`.renderer_v1`, frozen at 1.1.0, and :mod:`.renderer`).

They live here, not in either renderer, so that version 2 can change without touching the frozen module and version 1
keeps its pixels bit for bit (the helpers are the same code it always ran). Only IEEE exactly rounded operations
(``+ - * / sqrt floor clamp``): vectorised, scalar and ``torch.compile``d paths agree bit for bit, which the
streaming trainer's resume and the 1.1.0 pixel pins rely on.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
import torch

_INV_2PI = 1.0 / (2.0 * math.pi)

# Presence features: (name, probability; a 'male' suffix scales the probability by male).
_PRESENCE_SPEC = [
    ("glasses", 0.15, False), ("hat", 0.08, False), ("earrings", 0.2, False),
    ("necklace", 0.15, False), ("necktie", 0.25, True), ("bangs", 0.2, False),
    ("beard", 0.3, True), ("moustache", 0.35, True), ("goatee", 0.2, True),
    ("sideburn", 0.4, True), ("stubble", 0.5, True),
]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrap-around arithmetic is defined in numpy)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, identities: np.ndarray, num: int, stream: int = 0) -> np.ndarray:
    """Counter-based uniforms in [0, 1): ``[len(identities), num]`` float64.

    The value for ``(seed, identity, k)`` never depends on which other identities are drawn,
    which is what makes rendering independent of batch composition and process.
    """
    ids = np.asarray(identities, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(stream * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF)) ^ ids)
        ctr = np.arange(num, dtype=np.uint64)[None, :]
        h = _splitmix64(key[:, None] * np.uint64(0xD1342543DE82EF95) + ctr)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ----------------------------------------------------------------------------------------
# Deterministic elementwise helpers (only IEEE exactly-rounded ops, see module docstring)
# ----------------------------------------------------------------------------------------
def _smooth01(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _cov(d: torch.Tensor, ew: torch.Tensor) -> torch.Tensor:
    """Soft coverage of a signed distance ``d`` (negative inside) with edge width ``ew``."""
    return _smooth01(0.5 - d / ew)


def _psin(x: torch.Tensor) -> torch.Tensor:
    """Polynomial sine (max error ~1e-3): deterministic replacement for ``torch.sin``."""
    t = x * _INV_2PI
    t = t - torch.floor(t + 0.5)
    y = 8.0 * t - 16.0 * t * t.abs()
    return 0.225 * (y * y.abs() - y) + y


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 square root, identical in eager and compiled code.

    ATen's vectorised float32 ``sqrt`` is not correctly rounded (it is off by one ulp for about
    a sixth of inputs) while compiled kernels are.  A float64 square root rounded to float32 is
    correctly rounded (53 >= 2 * 24 + 2 bits), so both paths give the same bits.
    """
    return torch.sqrt(x.double()).float()


def _bump(dx: torch.Tensor, dy: torch.Tensor, rx, ry) -> torch.Tensor:
    """Smooth compact bump ``(1 - r^2)^2`` on an ellipse of radii ``rx, ry``."""
    a = dx / rx
    b = dy / ry
    r = (1.0 - a * a - b * b).clamp(min=0.0)
    return r * r


def _ellipse_sdf(dx: torch.Tensor, dy: torch.Tensor, rx, ry) -> torch.Tensor:
    """Approximate signed distance to an ellipse (exact for circles)."""
    a = dx / rx
    b = dy / ry
    return (_sqrt(a * a + b * b) - 1.0) * torch.minimum(torch.as_tensor(rx), torch.as_tensor(ry))


def _blend(img: torch.Tensor, a: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``img <- img + a * (col - img)`` with ``img [B,3,H,W]``, ``a [B,H,W]``, ``col [B,3,1,1]`` or ``[B,3,H,W]``."""
    return img + a.unsqueeze(1) * (col - img)


def _rows(a: torch.Tensor) -> Optional[slice]:
    """Row slice of ``a [B,H,W]`` outside which ``a`` is exactly zero in every image (``None``: zero everywhere).

    Updating only those rows is bit-identical: where the weight is 0, ``img + 0 * (col - img)``
    and ``img * (1 +- 0)`` leave ``img`` unchanged.  In eager CPU code the (cheap) check pays for
    itself; on other devices it would force a host sync and in compiled code the fused kernel
    makes it pointless, so the full height is used there.
    """
    if torch.compiler.is_compiling() or a.device.type != "cpu" or a.shape[-2] == 1:
        return slice(None)
    idx = a.ne(0).any(-1).any(0).nonzero()
    if idx.numel() == 0:
        return None
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _blend_(img: torch.Tensor, a: torch.Tensor, col) -> torch.Tensor:
    """In-place :func:`_blend` restricted to the rows where ``a`` is non-zero (same values, bit for bit).

    ``col`` is a tensor (``[B,3,1,1]`` or ``[B,3,H,W]``) or a function of a row slice returning it.
    """
    sl = _rows(a)
    if sl is None:
        return img
    im = img[:, :, sl]
    if callable(col):
        c = col(sl)
    else:
        c = col[:, :, sl] if col.shape[-2] != 1 else col
    t = c - im
    t.mul_(a[:, sl].unsqueeze(1))
    im.add_(t)
    return img


def _scale_(img: torch.Tensor, m: torch.Tensor, sign: float) -> torch.Tensor:
    """In-place ``img <- img * (1 + m)`` (``sign`` +1) or ``img * (1 - m)`` (-1), ``m [B,H,W]``, on its non-zero rows."""
    sl = _rows(m)
    if sl is None:
        return img
    f = (1.0 + m[:, sl]) if sign > 0 else (1.0 - m[:, sl])
    img[:, :, sl].mul_(f.unsqueeze(1))
    return img


def _rgb(*c: float) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float32)


_HAIR_PALETTE = torch.stack([
    _rgb(0.07, 0.055, 0.05), _rgb(0.2, 0.12, 0.07), _rgb(0.38, 0.24, 0.13),
    _rgb(0.55, 0.38, 0.2), _rgb(0.82, 0.66, 0.4), _rgb(0.55, 0.22, 0.09),
])
_IRIS_PALETTE = torch.stack([
    _rgb(0.3, 0.17, 0.08), _rgb(0.2, 0.11, 0.05), _rgb(0.25, 0.4, 0.6), _rgb(0.3, 0.42, 0.25),
    _rgb(0.45, 0.35, 0.2),
])
_SKIN_LIGHT, _SKIN_MID, _SKIN_DARK = _rgb(1.0, 0.86, 0.75), _rgb(0.9, 0.68, 0.52), _rgb(0.5, 0.33, 0.23)


def _hue_rgb(h: torch.Tensor, sat: float, light: torch.Tensor) -> torch.Tensor:
    """Cheap hue wheel from piecewise-linear ramps: ``h [B] -> [B, 3]``."""
    k = torch.stack([h * 6.0, h * 6.0 + 4.0, h * 6.0 + 2.0], 1)
    k = k - 6.0 * torch.floor(k / 6.0)
    ramp = (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return light[:, None] * (1.0 - sat + sat * ramp)


def _lerp_col(c: torch.Tensor, target: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-image colour lerp: ``c [B,3]``, ``target [3]`` or ``[B,3]``, ``a [B]``."""
    return c + a[:, None] * (target - c)


#: Pixels (images x height x width) per eager CPU work chunk: keeps every temporary around
#: 0.5 MB so the allocator reuses cache-warm memory instead of mapping fresh pages for each op
#: (which halved the throughput).  Results do not depend on it.
CPU_CHUNK_PIXELS = int(os.environ.get("COMFACE_RENDER_CHUNK_PIXELS", 1 << 17))
#: Images per call of the compiled renderer: batches are cut into (and the last one padded to)
#: this many images, so each (internal size, output size) is compiled once.
COMPILED_CHUNK_IMAGES = 32


def bilinear_taps(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-tap bilinear resampling along one axis (``align_corners=False``, as ``F.interpolate``).

    Returns ``(i0 LongTensor[size_out], i1 LongTensor[size_out], w1 FloatTensor[size_out])``:
    output ``k`` is ``a[i0] + w1 * (a[i1] - a[i0])``.  The weights are computed once in float64
    here, so eager and compiled rendering use the same numbers.
    """
    src = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    w1 = (src - i0).astype(np.float32)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(w1)


def _resize_bilinear(img: torch.Tensor, rows: tuple, cols: tuple) -> torch.Tensor:
    """Separable bilinear resize of ``img [B,3,H,W]`` with :func:`bilinear_taps` for rows and columns."""
    r0, r1, rw = rows
    a, b = img.index_select(2, r0), img.index_select(2, r1)
    img = a + (b - a) * rw.view(1, 1, -1, 1)
    c0, c1, cw = cols
    a, b = img.index_select(3, c0), img.index_select(3, c1)
    return a + (b - a) * cw.view(1, 1, 1, -1)

"""Renderer version 1.1.0 of the embedded generator (kept so ``EmbeddedFaceGenerator(renderer_version="1.1.0")``
reproduces earlier corpora and checkpoints pixel for pixel; the default is version 2, :mod:`.renderer`).

The original description follows.

The embedded generator: a batched, deterministic parametric face renderer in torch.

Why a renderer: StyleGAN weights cannot be fetched in every environment, yet ComFace's
pretraining needs faces whose *identity* is fixed while one attribute changes by a known
amount ``alpha``.  This module draws an identity as a vector of face parameters (shape,
skin, eyes, brows, nose, lips, ears, hair, neck, background, light, pose), applies the
attribute direction (:mod:`.attributes`) scaled by ``alpha`` and renders the face with
signed-distance fields, smooth edges, Lambert-like shading and procedural skin texture.

Determinism (the streaming trainer relies on it): identity parameters come from a
counter-based hash of ``(seed, identity, parameter index)`` (no batch-level RNG), the
per-pixel maths uses only ``+ - * / sqrt floor clamp`` (IEEE exactly rounded, so vectorised
and scalar CPU code paths agree bit for bit; ``sin``/``exp`` are replaced by polynomials and
``sqrt`` goes through float64, see :func:`_sqrt`) and the output is quantised to 8-bit levels.
Hence the same ``(seed, identity, attribute, alpha)`` gives the same pixels in any batch,
batch position or process, and eager and ``torch.compile``d rendering agree bit for bit.

Speed: the eager renderer is ~1,700 small elementwise ops per chunk of faces; with
``compile=True`` inductor fuses them into a few loops (5-8x faster on a 2-core CPU, BENCHMARKS.md).

Version history: 1.1.0 made ``sqrt`` correctly rounded and replaced ``F.interpolate`` by an
explicit two-tap bilinear resize (so compiled and eager rendering agree); about 1e-5 of the
pixel values differ from 1.0.0, by one 8-bit level.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from .attributes import ATTRIBUTE_DIRECTIONS_V1 as ATTRIBUTE_DIRECTIONS
from .attributes import ATTRIBUTE_NAMES
from .render_ops import (  # noqa: F401  (shared with renderer.py; names kept importable from here)
    _HAIR_PALETTE,
    _INV_2PI,
    _IRIS_PALETTE,
    _PRESENCE_SPEC,
    _SKIN_DARK,
    _SKIN_LIGHT,
    _SKIN_MID,
    COMPILED_CHUNK_IMAGES,
    CPU_CHUNK_PIXELS,
    _blend,
    _blend_,
    _bump,
    _cov,
    _ellipse_sdf,
    _hue_rgb,
    _lerp_col,
    _psin,
    _resize_bilinear,
    _rgb,
    _rows,
    _scale_,
    _smooth01,
    _splitmix64,
    _sqrt,
    bilinear_taps,
    hash_uniform,
)

MIN_IMAGE_SIZE = 32

# ----------------------------------------------------------------------------------------
# Identity parameters
# ----------------------------------------------------------------------------------------
# (name, low, high): uniform draw.  Presence features are drawn separately below.
_UNIFORM_SPEC = [
    ("face_w", 0.40, 0.46), ("face_h", 0.54, 0.60), ("jaw", 0.30, 0.48), ("cheek", 0.0, 0.25),
    ("dchin", 0.0, 0.1), ("cheekbone", 0.1, 0.4), ("cheek_raise", -0.1, 0.1),
    ("eye_open", 0.62, 0.8), ("eye_w", 0.072, 0.086), ("eye_sep", 0.16, 0.185),
    ("eye_y", -0.07, -0.03), ("gaze", -0.15, 0.15), ("socket", 0.25, 0.45),
    ("brow_thick", 0.014, 0.022), ("brow_arch", 0.01, 0.035), ("brow_gap", 0.075, 0.09),
    ("brow_dark", 0.5, 0.85), ("nose_scale", 0.9, 1.1), ("nose_point", 0.0, 0.4),
    ("nose_len", 0.17, 0.2), ("mouth_w", 0.115, 0.14), ("mouth_y", 0.29, 0.32),
    ("lip_full", 0.02, 0.027), ("smile", -0.01, 0.03), ("mouth_open", -0.02, 0.004),
    ("lip_red", 0.0, 0.3), ("ear_size", 0.085, 0.1), ("neck_w", 0.15, 0.19),
    ("hairline", -0.42, -0.33), ("hair_vol", 0.05, 0.1), ("hair_len", 0.0, 1.0),
    ("recede", 0.0, 0.1), ("wavy", 0.0, 0.5), ("grey", 0.0, 0.1), ("skin_tone", 0.0, 1.0),
    ("rosy", 0.0, 0.25), ("age", 0.1, 0.45), ("bags", 0.0, 0.2), ("male", 0.0, 1.0),
    ("makeup", 0.0, 0.2), ("collar", 0.35, 0.45), ("shirt_l", 0.3, 0.9), ("yaw", -0.5, 0.5),
    ("roll", -0.06, 0.06), ("tx", -0.04, 0.04), ("ty", -0.03, 0.03), ("scale", 0.95, 1.05),
    ("light_x", -0.6, 0.6), ("light_y", -0.7, -0.2), ("bg_hue", 0.0, 1.0), ("bg_l", 0.35, 0.85),
    ("hair_hue", 0.0, 1.0), ("iris_hue", 0.0, 1.0), ("cloth_hue", 0.0, 1.0), ("hat_hue", 0.0, 1.0),
    ("tex0", 0.0, 6.2832), ("tex1", 0.0, 6.2832), ("tex2", 0.0, 6.2832), ("tex3", 0.0, 6.2832),
]
# Parameters that start at zero for every identity and only move with an edit.
_ZERO_SPEC = ["pale", "smooth", "blur", "hair_dark", "hair_blond", "hair_brown", "bald"]
PARAM_NAMES: List[str] = (
    [n for n, _, _ in _UNIFORM_SPEC] + _ZERO_SPEC + [n for n, _, _ in _PRESENCE_SPEC]
)
_PINDEX = {n: i for i, n in enumerate(PARAM_NAMES)}


def identity_params(seed: int, identities: Sequence[int]) -> torch.Tensor:
    """Neutral face parameters of each identity: ``FloatTensor[B, len(PARAM_NAMES)]`` on CPU."""
    ids = np.asarray(identities, dtype=np.int64).reshape(-1)
    u = hash_uniform(seed, ids, len(_UNIFORM_SPEC) + 2 * len(_PRESENCE_SPEC))
    out = np.zeros((len(ids), len(PARAM_NAMES)), dtype=np.float64)
    for k, (name, lo, hi) in enumerate(_UNIFORM_SPEC):
        out[:, _PINDEX[name]] = lo + (hi - lo) * u[:, k]
    male = out[:, _PINDEX["male"]]
    base = len(_UNIFORM_SPEC)
    for k, (name, prob, by_male) in enumerate(_PRESENCE_SPEC):
        p = prob * (male * 1.6 - 0.3).clip(0, 1) if by_male else prob
        present = u[:, base + 2 * k] < p
        # Present features get a strength in [0.7, 1] so identities differ even here.
        out[:, _PINDEX[name]] = present * (0.7 + 0.3 * u[:, base + 2 * k + 1])
    return torch.from_numpy(out.astype(np.float32))


def direction_matrix(attribute_names: Sequence[str] = ATTRIBUTE_NAMES) -> torch.Tensor:
    """``FloatTensor[num_attributes, num_params]``: parameter change per unit ``t = alpha/5``."""
    mat = torch.zeros(len(attribute_names), len(PARAM_NAMES))
    for a, name in enumerate(attribute_names):
        for p, v in ATTRIBUTE_DIRECTIONS[name].items():
            mat[a, _PINDEX[p]] = v
    return mat


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def render_images(params: torch.Tensor, internal_size: int, taps: Optional[tuple] = None) -> torch.Tensor:
    """Render, resize and quantise one chunk of faces: the whole per-image pipeline.

    Args:
        params: ``FloatTensor[B, len(PARAM_NAMES)]`` (edited parameters) on the target device.
        internal_size: resolution the signed-distance fields are evaluated at.
        taps: ``(row_taps, col_taps)`` from :func:`bilinear_taps` on the target device, or
            ``None`` when the output size is ``internal_size``.

    Returns:
        ``FloatTensor[B, 3, S, S]`` in ``[0, 1]``, multiples of 1/255 (so it round-trips through PNG).
    """
    img = _render_params(params, internal_size)
    if taps is not None:
        img = _resize_bilinear(img, *taps)
    return torch.round(img.clamp(0.0, 1.0) * 255.0) / 255.0


def _render_params(params: torch.Tensor, size: int) -> torch.Tensor:
    dev = params.device
    B = params.shape[0]
    P = {n: params[:, i] for n, i in _PINDEX.items()}
    S = lambda n: P[n].view(B, 1, 1)  # noqa: E731  per-image scalar broadcast over [B,H,W]

    def C(c: torch.Tensor) -> torch.Tensor:  # [B,3] or [3] -> [B,3,1,1]
        return c.to(dev).expand(B, 3).reshape(B, 3, 1, 1)

    relu = torch.relu
    # Pixel grid in [-1, 1] (y down), then pose: roll, translation and scale.
    g = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    gx, gy = g.view(1, 1, size), g.view(1, size, 1)
    cr = 1.0 - 0.5 * S("roll") * S("roll")  # cos/sin by Taylor: roll is small
    sr = S("roll")
    x0, y0 = (gx - S("tx")), (gy - S("ty"))
    # Zoom 1.3: the face fills ~2/3 of the frame like an aligned face crop.
    u = (cr * x0 + sr * y0) / (1.3 * S("scale"))
    v = (cr * y0 - sr * x0) / (1.3 * S("scale")) + 0.06
    blur = S("blur")
    # Edge width ~1.3 px; the Blurry attribute widens it (and negative blur sharpens).
    ew = (2.6 / size) * (1.0 + 0.9 * blur).clamp(min=0.25) + 0.012 * relu(blur)
    ew = ew * torch.ones_like(v[:, :1, :1])
    detail = (1.0 - 0.6 * blur).clamp(min=0.0)  # texture amplitude

    # ---------------- colours --------------------------------------------------------
    tone = P["skin_tone"]
    skin = torch.where(
        (tone < 0.6)[:, None],
        _SKIN_LIGHT.to(dev) + (tone / 0.6)[:, None] * (_SKIN_MID - _SKIN_LIGHT).to(dev),
        _SKIN_MID.to(dev) + ((tone - 0.6) / 0.4)[:, None] * (_SKIN_DARK - _SKIN_MID).to(dev),
    )
    age = P["age"]
    skin = skin * (1.0 - 0.12 * age)[:, None]  # older skin: slightly darker, linear in age
    pale = P["pale"]
    skin = _lerp_col(skin, torch.where((pale > 0)[:, None], _rgb(0.98, 0.93, 0.9).to(dev), _rgb(0.55, 0.36, 0.24).to(dev)), 0.45 * pale.abs())
    hidx = (P["hair_hue"] * len(_HAIR_PALETTE)).long().clamp(max=len(_HAIR_PALETTE) - 1)
    hair = _HAIR_PALETTE.to(dev)[hidx]
    hd, hb, hbr = P["hair_dark"], P["hair_blond"], P["hair_brown"]
    hair = _lerp_col(hair, torch.where((hd > 0)[:, None], _rgb(0.03, 0.025, 0.025).to(dev), _rgb(0.75, 0.6, 0.45).to(dev)), 0.55 * hd.abs())
    hair = _lerp_col(hair, torch.where((hb > 0)[:, None], _rgb(0.92, 0.78, 0.5).to(dev), _rgb(0.1, 0.07, 0.05).to(dev)), 0.55 * hb.abs())
    hair = _lerp_col(hair, torch.where((hbr > 0)[:, None], _rgb(0.42, 0.25, 0.12).to(dev), _rgb(0.78, 0.74, 0.66).to(dev)), 0.55 * hbr.abs())
    grey = P["grey"] + 0.8 * relu(age - 0.6)  # hair greys past middle age
    hair = _lerp_col(hair, torch.where((grey > 0)[:, None], _rgb(0.78, 0.78, 0.78).to(dev), hair * 0.6), 0.6 * grey.abs())
    brow_col = hair * (1.15 - 0.7 * P["brow_dark"].clamp(0.0, 1.2))[:, None]
    iris = _IRIS_PALETTE.to(dev)[(P["iris_hue"] * len(_IRIS_PALETTE)).long().clamp(max=len(_IRIS_PALETTE) - 1)]
    bg_top = _hue_rgb(P["bg_hue"], 0.35, P["bg_l"])
    bg_bot = bg_top * 0.75
    cloth = _hue_rgb(P["cloth_hue"], 0.6, 0.25 + 0.5 * P["shirt_l"].clamp(0.0, 1.0)) * (0.7 + 0.3 * P["shirt_l"])[:, None]

    # ---------------- background --------------------------------------------------
    t_y = (gy + 1.0) * 0.5
    img = C(bg_top) + t_y.unsqueeze(1) * C(bg_bot - bg_top) + 0.0 * u.unsqueeze(1)
    vign = 1.0 - 0.18 * (gx * gx + gy * gy) * (1.0 + 0.0 * u)
    img = img * vign.unsqueeze(1)

    fw, fh = S("face_w"), S("face_h")
    fy = -0.02  # face centre
    lx, ly = S("light_x"), S("light_y")
    lz = _sqrt((1.0 - lx * lx - ly * ly).clamp(min=0.05))
    yaw = S("yaw") * 0.06
    uf = u - yaw  # feature coordinate: yaw shifts the inner face sideways
    ua = uf.abs()  # mirrored coordinate: symmetric features are computed once for both sides

    # ---------------- back hair (long hair behind the head) -----------------------
    hv = S("hair_vol") * (1.0 - 0.6 * S("bald")) + 0.02
    hat = S("hat").clamp(0.0, 1.0)
    hair_len = S("hair_len").clamp(0.0, 1.2)
    back_bottom = fy - 0.1 + hair_len * 0.85
    d_back = torch.maximum(
        ua - (fw + hv + 0.03 * hair_len),
        v - back_bottom,
    )
    d_back = torch.minimum(d_back, _ellipse_sdf(u, v - fy + 0.04, fw + hv, fh + hv))
    back_cov = _cov(d_back, ew) * (1.0 - 0.85 * S("bald").clamp(0.0, 1.0) * (v < fy).float())
    strands = _psin(u * 45.0 + S("wavy") * 3.0 * _psin(v * 22.0) + S("tex0")) * 0.6 + 0.4 * _psin(u * 97.0 + v * 11.0 + S("tex1"))
    hair_tex = (0.85 + 0.07 * strands * detail - 0.25 * relu(v - fy) * 0.5).unsqueeze(1)
    img = _blend_(img, back_cov * 0.97, lambda sl: C(hair) * hair_tex[:, :, sl] * 0.8)

    # ---------------- shoulders, clothes, neck -------------------------------------
    d_sh = _ellipse_sdf(u, v - 1.22, 0.95, 0.5)
    sh_cov = _cov(d_sh, ew)
    img = _blend_(img, sh_cov, lambda sl: C(cloth) * (1.0 - 0.25 * (v[:, sl] - 0.8)).clamp(0.6, 1.1).unsqueeze(1))
    nw = S("neck_w")
    d_neck = torch.maximum(ua - nw - 0.02 * relu(v - 0.7), (v - 0.1).neg())
    collar = S("collar")
    # Neckline: a V/round opening in the clothes whose depth the Necklace direction moves.
    d_neck = torch.maximum(d_neck, v - (collar + 0.25 - 0.5 * ua))
    neck_shade = 0.72 + 0.12 * (v - 0.3)
    img = _blend_(img, _cov(d_neck, ew), lambda sl: C(skin) * neck_shade[:, sl].clamp(0.6, 0.95).unsqueeze(1))
    # Necklace: a thin beaded arc on the chest.
    nl = S("necklace").clamp(0.0, 1.0)
    arc = (_sqrt(u * u / 0.05 + (v - 0.2).clamp(min=0.0) ** 2) - (collar + 0.05)).abs() - 0.012
    beads = 0.75 + 0.25 * _psin(u * 160.0)
    img = _blend_(img, _cov(arc, ew) * nl * (v > 0.2).float(), lambda sl: C(_rgb(0.95, 0.82, 0.45)) * beads[:, sl].unsqueeze(1))
    # Necktie: knot + blade below the collar.
    nt = S("necktie").clamp(0.0, 1.0)
    tie_top = collar + 0.17
    d_tie = torch.maximum(ua - (0.03 + 0.07 * (v - tie_top).clamp(0.0, 0.4)), tie_top - v)
    img = _blend_(img, _cov(d_tie, ew) * nt, C(_hue_rgb(P["hat_hue"], 0.8, torch.full_like(P["hat_hue"], 0.55))))

    # ---------------- ears + earrings ----------------------------------------------
    ear_s = S("ear_size")
    ey = S("eye_y")
    ex = ua - (fw * 0.98 + 0.02)
    d_ear = _ellipse_sdf(ex, v - (ey + 0.08), 0.055, ear_s)
    ear_sh = 0.82 + 0.15 * _bump(ex + 0.01, v - (ey + 0.08), 0.05, ear_s)
    img = _blend_(img, _cov(d_ear, ew), lambda sl: C(skin) * ear_sh[:, sl].unsqueeze(1))
    er = S("earrings").clamp(0.0, 1.0)
    d_ring = _ellipse_sdf(ex, v - (ey + 0.08 + ear_s + 0.025), 0.018, 0.018)
    img = _blend_(img, _cov(d_ring, ew) * er, C(_rgb(0.98, 0.85, 0.4)))

    # ---------------- face shape -----------------------------------------------------
    yy = (v - fy) / fh
    ageS = S("age")
    cheek = S("cheek")
    jaw = S("jaw") + 0.25 * relu(ageS - 0.6)  # sagging jowls narrow the chin line
    widen = 1.0 + 0.22 * cheek * _bump(0.0, yy - 0.35, 1.0, 0.65)
    half_w = fw * widen * (1.0 - jaw * relu(yy) * relu(yy))
    nx = u / half_w
    r2 = nx * nx + yy * yy
    d_face = (_sqrt(r2) - 1.0) * fw
    # Double chin: an extra soft lobe under the chin (signed: negative tightens the jawline).
    dchin = S("dchin")
    dc = relu(dchin)
    d_dc = _ellipse_sdf(u, v - (fy + fh * 0.97), 0.16 + 0.1 * dc, 0.015 + 0.07 * dc)
    d_face = torch.minimum(d_face, d_dc + 0.02 * (1.0 - dc.clamp(max=1.0)))
    face_cov = _cov(d_face, ew)
    # Lambert shading from a pseudo-3D ellipsoid normal.
    nz = _sqrt((1.0 - r2).clamp(min=0.02))
    lam = (nx * lx + yy * ly + nz * lz).clamp(min=0.0)
    shade = 0.62 + 0.45 * lam
    # Under-jaw shadow on the neck, darker for a tight jawline (negative double chin).
    shade = shade - 0.12 * relu(-dchin) * _bump(u, v - (fy + fh + 0.05), fw, 0.1)
    # Cheeks: fullness and the AU6 raise move a highlight; cheekbones add highlight + hollow.
    raise_ = S("cheek_raise")
    cx, cyb = ua - (S("eye_sep") + 0.03), v - (ey + 0.2 - 0.07 * raise_)
    cb = _bump(cx, cyb, 0.13, 0.1 + 0.02 * cheek)
    shade = shade + (0.06 + 0.06 * raise_ + 0.05 * cheek) * cb
    cbone = S("cheekbone")
    shade = shade + 0.1 * cbone * _bump(ua - (S("eye_sep") + 0.06), v - (ey + 0.12), 0.1, 0.05)
    shade = shade - 0.12 * cbone * _bump(ua - (fw * 0.7), v - (ey + 0.27), 0.07, 0.09)
    shade = shade - (0.22 * dc) * _bump(u, v - (fy + fh * 0.93), 0.17 + 0.05 * dc, 0.02)  # chin crease
    # Procedural skin texture: sums of sinusoids with per-identity phases.
    smooth = S("smooth")
    tex = (
        _psin(u * 23.0 + v * 7.0 + S("tex0")) + _psin(v * 29.0 - u * 11.0 + S("tex1"))
        + 0.5 * _psin(u * 61.0 + v * 47.0 + S("tex2")) + 0.5 * _psin(v * 71.0 - u * 37.0 + S("tex3"))
    )
    shade = shade + (0.012 * (1.0 - 0.6 * smooth) + 0.02 * relu(ageS - 0.3)) * detail * tex
    # Age: forehead lines, crow's feet, nasolabial folds (piecewise-linear in the age parameter).
    wr = relu(ageS - 0.15) * detail
    fore = _bump(u, v - (S("hairline") + ey) * 0.5, fw * 0.7, 0.09)
    shade = shade - 0.07 * wr * fore * (0.5 + 0.5 * _psin(v * 95.0 + 0.3 * _psin(u * 9.0)))
    crow = _bump(ua - (S("eye_sep") + S("eye_w") * 1.45), v - ey, 0.04, 0.045)
    shade = shade - 0.1 * wr * crow * (0.5 + 0.5 * _psin((v - ey) * 140.0 + ua * 40.0))
    smile = S("smile")
    mouth_y = S("mouth_y")
    mw = S("mouth_w") * (1.0 + 0.8 * relu(smile))
    # Nasolabial fold: distance to a line from the nose wing to beyond the mouth corner.
    nlx = ua - (0.07 + 0.012 * relu(raise_)) - (v - (ey + 0.2)) * (0.45 + 0.5 * smile)
    nl_mask = _bump(0.0, v - (mouth_y - 0.06), 1.0, 0.13)
    fold = (0.04 + 0.16 * relu(ageS - 0.2) + 0.35 * relu(smile) + 0.06 * relu(raise_)) * nl_mask * _cov(nlx.abs() - 0.006, ew * 2.0)
    shade = shade - fold
    # Bags under the eyes: signed, negative brightens the area (concealer-like).
    bags = S("bags") + 0.3 * relu(ageS - 0.5)
    bag = _bump(ua - S("eye_sep"), v - (ey + S("eye_w") * 0.75), S("eye_w") * 1.05, 0.03)
    shade = shade - 0.16 * bags * bag
    # Eye sockets: soft darkening around the eyes (depth is an identity trait).
    shade = shade - 0.16 * S("socket") * _bump(ua - S("eye_sep"), v - ey + 0.01, S("eye_w") * 1.8, 0.08)
    face_col = C(skin) * shade.unsqueeze(1)
    # Rosy cheeks / blush: red tint on the cheek bumps (signed, negative desaturates).
    rosy = S("rosy") + 0.5 * S("makeup")
    red = (rosy * cb * 0.5).unsqueeze(1)
    face_col = face_col + red * (C(_rgb(0.85, 0.25, 0.3)) - face_col) * 0.6
    # Beard-area darkening: stubble is signed (negative = freshly shaven, lighter skin).
    beard_y = mouth_y - 0.05 - 0.16 * (ua / fw) * (ua / fw)
    beard_area = _smooth01((v - beard_y) / 0.05) * _smooth01((fw * 1.05 - ua) / 0.04)
    stub = S("stubble")
    grain = 0.75 + 0.25 * _psin(u * 150.0 + _psin(v * 90.0) * 2.0)
    face_col = face_col * (1.0 - (0.28 * stub * beard_area * grain).unsqueeze(1))
    img = _blend_(img, face_cov, face_col)

    # Facial hair (signed: negative values lighten the region instead of adding hair).
    def facial_hair(img: torch.Tensor, amount: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        a = amount.clamp(0.0, 1.0) * region * face_cov
        img = _blend_(img, 0.92 * a, lambda sl: C(hair) * hair_shade[:, sl].unsqueeze(1))
        light = 0.15 * relu(-amount) * region * face_cov
        return _scale_(img, light, 1.0)

    hair_shade = (0.8 + 0.2 * grain) * (0.9 + 0.15 * _psin(u * 90.0 + v * 40.0))
    beard_region = _smooth01((v - beard_y - 0.02) / 0.04)
    img = facial_hair(img, S("beard"), beard_region)
    d_sb = torch.maximum(torch.maximum(fw * 0.8 - ua, v - (ey + 0.22)), (ey - 0.02) - v)
    img = facial_hair(img, S("sideburn"), _cov(d_sb, ew))
    d_goat = _ellipse_sdf(u, v - (mouth_y + 0.13), 0.075, 0.09)
    img = facial_hair(img, S("goatee"), _cov(d_goat, ew))

    # ---------------- eyes -------------------------------------------------------------
    ew_ = S("eye_w")
    ex = (ua - S("eye_sep")) / ew_
    eyl = (v - ey) / ew_
    ex2 = (1.0 - ex * ex)
    squint = 1.0 - 0.25 * relu(raise_)
    eo = (S("eye_open") * squint).clamp(min=0.08)
    y_up = -0.55 * eo * ex2 - 0.05 * ex
    y_lo = 0.32 * eo * ex2 * (1.0 + 0.15 * relu(raise_))
    d_eye = torch.maximum(y_up - eyl, eyl - y_lo) * ew_ * 0.7
    eye_cov = _cov(d_eye, ew)
    gaze = S("gaze")
    ix = ex - gaze * 0.4
    ir = _sqrt(ix * ix + eyl * eyl)

    img = _blend_(img, eye_cov, lambda sl: C(_rgb(0.93, 0.9, 0.87)) * (0.8 + 0.2 * ex2[:, sl].clamp(0.0, 1.0)).unsqueeze(1))
    img = _blend_(img, eye_cov * _cov((ir - 0.42) * ew_, ew), lambda sl: C(iris) * (0.65 + 0.55 * ir[:, sl].clamp(max=1.0)).unsqueeze(1))
    img = _blend_(img, eye_cov * _cov((ir - 0.17) * ew_, ew), C(_rgb(0.03, 0.02, 0.02)))
    hl = _bump(ix + 0.15, eyl + 0.15, 0.12, 0.12)
    img = _blend_(img, eye_cov * hl, C(_rgb(1.0, 1.0, 1.0)))
    # Upper lid line + lashes, lid crease and eye shadow (Heavy_Makeup, signed).
    lid = _cov(((eyl - y_up).abs() * ew_ - 0.008 - 0.004 * relu(S("makeup"))), ew) * (ex.abs() < 1.08).float()
    img = _blend_(img, lid * 0.85, C(_rgb(0.08, 0.05, 0.05)))
    shadow_zone = _bump(ex, eyl - y_up + 0.45, 1.1, 0.45) * (1.0 - eye_cov)
    mk = S("makeup")
    img = _blend_(img, (relu(mk) * 0.55 * shadow_zone), C(_rgb(0.35, 0.2, 0.35)))
    img = _scale_(img, 0.12 * relu(-mk) * shadow_zone, 1.0)

    # ---------------- eyebrows ---------------------------------------------------------
    bx = (ua - S("eye_sep") - 0.01) / (ew_ * 1.35)
    by = ey - S("brow_gap") - S("brow_arch") * (1.0 - bx * bx) + 0.015 * bx
    th = S("brow_thick") * (1.0 - 0.45 * relu(bx))
    d_brow = torch.maximum((v - by).abs() - th, (bx.abs() - 1.0) * ew_)
    brow_tex = 0.85 + 0.15 * _psin(ua * 220.0 + v * 60.0)
    img = _blend_(img, _cov(d_brow, ew) * face_cov * 0.95, lambda sl: C(brow_col) * brow_tex[:, sl].unsqueeze(1))

    # ---------------- nose --------------------------------------------------------------
    ns = S("nose_scale")
    npt = S("nose_point")
    nwid = 0.055 * ns * (1.0 - 0.25 * npt)
    tip_y = ey + S("nose_len") * (0.9 + 0.1 * ns) + 0.02 * npt
    # Bridge: side shadows along the nose, and a highlight on the ridge.
    along = _smooth01((v - ey) / 0.06) * _smooth01((tip_y - v) / 0.04 + 1.0)
    side = _bump(ua - nwid * 0.75, 0.0, 0.025, 1.0)
    img = _scale_(img, 0.12 * side * along, -1.0)
    ridge = _bump(uf + 0.01 * lx, 0.0, 0.018 * (1.0 - 0.4 * npt), 1.0) * along
    img = _scale_(img, (0.06 + 0.1 * npt) * ridge, 1.0)
    tip = _bump(uf, v - tip_y, nwid * 0.85, nwid * (0.65 + 0.5 * npt))
    img = _scale_(img, (0.06 + 0.1 * npt) * tip, 1.0)
    wing = _bump((ua - nwid * 0.85), v - tip_y - 0.005, nwid * 0.45, nwid * 0.5)
    img = _scale_(img, 0.12 * wing, -1.0)
    d_nos = _ellipse_sdf(ua - nwid * 0.42, v - (tip_y + nwid * 0.42), nwid * 0.3, nwid * 0.16)
    img = _blend_(img, _cov(d_nos, ew) * 0.75, C(skin) * 0.25)
    under = _bump(uf, v - (tip_y + nwid * 0.75), nwid * 1.1, 0.02)
    img = _scale_(img, 0.1 * under, -1.0)

    # ---------------- mouth ------------------------------------------------------------
    mx = ua / mw
    mx2 = 1.0 - mx * mx
    y_m = mouth_y - smile * mx * mx * 0.9 + 0.01 * mx2
    lf = S("lip_full")
    mo = S("mouth_open")
    op = relu(mo)
    pressed = relu(-mo)  # negative opening presses the lips thinner
    lf_eff = (lf - 0.15 * pressed).clamp(min=0.004)
    cupid = 1.0 - 0.35 * _bump(ua, 0.0, 0.03, 1.0)
    y_gt = y_m - 0.5 * op * mx2
    y_gb = y_m + 0.5 * op * mx2
    y_u = y_gt - lf_eff * 0.8 * _sqrt(mx2.clamp(min=0.0)) * cupid
    y_l = y_gb + lf_eff * 1.15 * _sqrt(mx2.clamp(min=0.0))
    d_lips = torch.maximum(y_u - v, v - y_l)
    d_lips = torch.maximum(d_lips, (mx.abs() - 1.0) * mw)
    lip_base = skin * _rgb(0.86, 0.62, 0.6).to(dev)
    lr = P["lip_red"] + 0.5 * P["makeup"]
    lip_col = _lerp_col(lip_base, torch.where((lr > 0)[:, None], _rgb(0.72, 0.08, 0.16).to(dev), skin * 0.95), 0.7 * lr.abs().clamp(max=1.4))
    lip_sh = 0.8 + 0.25 * _bump(ua, v - (y_gb + lf_eff * 0.5), mw * 0.6, lf_eff * 0.8)
    img = _blend_(img, _cov(d_lips, ew), lambda sl: C(lip_col) * lip_sh[:, sl].unsqueeze(1))
    d_gap = torch.maximum(torch.maximum(y_gt - v, v - y_gb), (mx.abs() - 0.97) * mw)
    gap_cov = _cov(d_gap, ew * 0.7)
    teeth = _smooth01((y_gt + 0.025 - v) / 0.01 + 0.5)
    img = _blend_(img, gap_cov, lambda sl: C(_rgb(0.25, 0.06, 0.06)) + teeth[:, sl].unsqueeze(1) * C(_rgb(0.62, 0.8, 0.8)))
    line = _cov((v - y_m).abs() - 0.003, ew) * (mx.abs() < 1.02).float() * (1.0 - gap_cov)
    img = _scale_(img, ((0.45 + 4.0 * pressed) * line).clamp(max=0.9), -1.0)
    corner = _bump(ua - mw * 1.02, v - y_m + 0.005, 0.014, 0.014)
    img = _scale_(img, (0.08 + 0.4 * relu(smile)) * corner, -1.0)
    # Moustache above the upper lip.
    d_mous = torch.maximum((v - (y_u - 0.022)).abs() - 0.02 + 0.012 * mx.abs(), (mx.abs() - 1.15) * mw)
    img = facial_hair(img, S("moustache"), _cov(d_mous, ew))

    # ---------------- front hair, bangs, hat ----------------------------------------------
    bald = S("bald")
    recede = S("recede")
    q = ua / fw
    hl_y = (
        S("hairline") - 0.12 * bald - 0.06 * recede + 0.5 * q * q * q * q
        - 0.22 * recede * _bump(q - 0.55, 0.0, 0.35, 1.0)
    )
    bangs = S("bangs")
    hl_y = hl_y - 0.1 * relu(-bangs)  # negative bangs: a higher, open forehead
    hl_y = hl_y + relu(bangs).clamp(max=1.3) * (0.2 + 0.015 * _psin(u * 60.0)) * _smooth01((fw * 0.85 - ua) / 0.1)
    d_cap = torch.maximum(_ellipse_sdf(u, v - fy + 0.03, fw + hv, fh + hv), v - hl_y)
    top_op = (1.0 - bald).clamp(0.0, 1.0) + 0.0 * v
    cap_cov = _cov(d_cap, ew) * top_op
    cap_sh = (0.78 + 0.3 * _bump(u + 0.2 * lx, v - fy + fh * 0.9, fw, 0.35) + 0.07 * strands * detail)
    img = _blend_(img, cap_cov, lambda sl: C(hair) * cap_sh[:, sl].unsqueeze(1))
    # Scalp shine grows with baldness (the Bald direction keeps acting once hair is gone).
    shine = relu(bald) * _bump(u + 0.15, v - fy + fh * 0.85, fw * 0.45, 0.15) * face_cov
    img = _scale_(img, 0.22 * shine, 1.0)
    # Hat: crown above the hairline plus a brim.
    hat_col = _hue_rgb(P["hat_hue"], 0.7, torch.full_like(P["hat_hue"], 0.5))
    d_hat = torch.maximum(_ellipse_sdf(u, v - fy + 0.06, fw + hv + 0.04, fh + hv + 0.06), v - (S("hairline") + 0.02))
    d_brim = torch.maximum(ua - (fw + hv + 0.12), ((v - (S("hairline") + 0.0)).abs() - 0.035))
    hat_sh = 0.75 + 0.3 * _bump(u + 0.2, v - fy + fh, fw, 0.4)
    img = _blend_(img, _cov(torch.minimum(d_hat, d_brim), ew) * hat, lambda sl: C(hat_col) * hat_sh[:, sl].unsqueeze(1))

    # ---------------- eyeglasses ----------------------------------------------------------
    gl = S("glasses").clamp(0.0, 1.0)
    gx_ = ua - S("eye_sep")
    gy_ = v - ey + 0.005
    bw, bh = ew_ * 1.55, ew_ * 1.1
    qx = (gx_.abs() - bw + 0.03).clamp(min=0.0)
    qy = (gy_.abs() - bh + 0.03).clamp(min=0.0)
    d_box = _sqrt(qx * qx + qy * qy) - 0.03
    rim = _cov(d_box.abs() - 0.004 - 0.004 * S("glasses").clamp(0.0, 2.0), ew)
    bridge = _cov(torch.maximum((v - ey + 0.02).abs() - 0.006, ua - (S("eye_sep") - bw + 0.01)), ew)
    temple = _cov(torch.maximum((v - ey + 0.03).abs() - 0.006, (S("eye_sep") + bw - 0.01) - ua), ew) * (ua < fw + 0.02).float()
    img = _scale_(img, 0.1 * gl * _cov(d_box, ew), -1.0)  # lens tint
    img = _blend_(img, gl * torch.maximum(torch.maximum(rim, bridge), temple), C(_rgb(0.08, 0.07, 0.07)))

    # Blurry also lowers contrast (signed: negative raises it).
    img = 0.5 + (img - 0.5) * (1.0 - 0.12 * blur).unsqueeze(1)
    return img.clamp(0.0, 1.0)



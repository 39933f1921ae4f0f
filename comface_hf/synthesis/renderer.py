"""The embedded generator: a batched, deterministic parametric face renderer in torch (renderer version 2).

Why a renderer: StyleGAN weights cannot be fetched in every environment, yet ComFace's pretraining needs faces whose
*identity* is fixed while one attribute changes by a known amount ``alpha``. An identity is a vector of face
parameters (shape, skin, eyes, brows, nose, lips, ears, hair, neck, background, light, pose); an edit adds the
attribute's direction (:mod:`.attributes`) scaled by ``alpha / 5``; the face is rendered with signed-distance fields.

Version 2 (the default) is built for transfer to real photographs:

* **The canonical frame** (:mod:`comface_hf.face_frame`): every face is drawn in the square the FFHQ rule puts
  around its own eye centres and mouth centre (after pose and edits), up to a small per-image jitter that mimics a
  landmark detector's error; :meth:`EmbeddedFaceGenerator.key_points` returns those three points per image.
* **Shading from a height field**: a face height map (skull dome, brow ridge, eye sockets, nose, cheeks, lips,
  chin, nasolabial folds, jowls) is differentiated on the pixel grid; its normals are lit by a per-image light
  direction and colour (Lambert + ambient + a Blinn specular sheen), over procedural skin texture.
* **Pose**: yaw and pitch shift the inner face against the outline in proportion to a depth profile; roll turns the
  head in the frame (small: the frame's rule removes most roll, as alignment does for photos).
* **Anatomy of the edits**:
  - smile = AU12 (lip corners up and back, lips parted over the upper teeth, deeper nasolabial folds) + AU6 (cheek
    mass raised, lower lids pushed up, crow's feet); FACS, Ekman & Friesen (1978);
  - age = craniofacial growth below 18 years by the cardioidal-strain model of head growth (Todd, Mark, Shaw &
    Pittenger 1980: ``R' = R (1 + k (1 - cos theta))`` about the head's centre, theta from the vertex; a child has
    k < 0 relative to the adult template, -0.125 at 2 years: the lower face is ~25% shorter and the eyes sit low
    in the head), larger
    eyes, smaller nose and fuller cheeks in children; then adult ageing from 18 on (wrinkles, sagging jowls and
    lids, thinner lips, darker skin; greying from 40);
  - weight = facial adiposity (buccal and jowl fat, softer jaw line, double chin, neck);
  - optional expressions AU1+2, AU4, AU15, AU26 (:data:`.attributes.EXPRESSION_ATTRIBUTES`).
* **Backgrounds**: a gradient plus low-frequency texture per image.

Photographic capture effects (exposure, white balance, grain, blur, JPEG, greyscale, faded scans) are not drawn here
but applied per image by :mod:`comface_hf.synthesis.photographic`, so a pair's two images can be different "photos".

Determinism: identity parameters come from a counter-based hash of ``(seed, identity, parameter index)``; the pixel
maths uses only ``+ - * / sqrt floor clamp`` (exactly rounded; ``sin`` is a polynomial, ``sqrt`` goes through
float64), so the same ``(seed, identity, attribute, alpha)`` gives the same pixels in any batch or process, and
eager and ``torch.compile``d rendering agree bit for bit (tested).

Version 2.1.0 (the default) is version 2.0.0 with a broader smile (the lips part over the upper teeth, the eyes narrow;
:data:`.attributes.ATTRIBUTE_DIRECTIONS_V2_1`); ``renderer_version="2.0.0"`` renders 2.0.0's pixels exactly.
``EmbeddedFaceGenerator(renderer_version="1.1.0")`` renders with the previous renderer (:mod:`.renderer_v1`), pixel
for pixel as before, with its 43 attributes.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from . import renderer_v1
from .attributes import (
    ALL_ATTRIBUTE_NAMES,
    ATTRIBUTE_DIRECTIONS,
    ATTRIBUTE_DIRECTIONS_V2_1,
    ATTRIBUTE_NAMES,
    resolve_attribute,
)
from .render_ops import (  # noqa: F401  (re-exported: the deterministic helpers renderer_v1 shares)
    _HAIR_PALETTE,
    _IRIS_PALETTE,
    _PRESENCE_SPEC,
    _SKIN_DARK,
    _SKIN_LIGHT,
    _SKIN_MID,
    COMPILED_CHUNK_IMAGES,
    CPU_CHUNK_PIXELS,
    _blend_,
    _bump,
    _cov,
    _ellipse_sdf,
    _hue_rgb,
    _lerp_col,
    _psin,
    _resize_bilinear,
    _rgb,
    _scale_,
    _smooth01,
    _sqrt,
    bilinear_taps,
    hash_uniform,
)

MIN_IMAGE_SIZE = 32
RENDERER_VERSIONS = ("2.1.0", "2.0.0", "1.1.0")
DEFAULT_RENDERER_VERSION = "2.1.0"

# ----------------------------------------------------------------------------------------
# Identity parameters (version 2)
# ----------------------------------------------------------------------------------------
_UNIFORM_SPEC = [
    ("face_w", 0.37, 0.42), ("face_h", 0.54, 0.60), ("jaw", 0.30, 0.48), ("cheek", 0.0, 0.25),
    ("dchin", 0.0, 0.1), ("cheekbone", 0.1, 0.4), ("cheek_raise", -0.1, 0.1),
    ("eye_open", 0.62, 0.8), ("eye_w", 0.072, 0.086), ("eye_sep", 0.16, 0.185),
    ("eye_y", -0.07, -0.03), ("gaze", -0.15, 0.15), ("socket", 0.25, 0.45),
    ("brow_thick", 0.014, 0.022), ("brow_arch", 0.01, 0.035), ("brow_gap", 0.075, 0.09),
    ("brow_dark", 0.5, 0.85), ("nose_scale", 0.9, 1.1), ("nose_point", 0.0, 0.4),
    ("nose_len", 0.17, 0.2), ("mouth_w", 0.115, 0.14), ("mouth_y", 0.29, 0.32),
    ("lip_full", 0.02, 0.027), ("smile", -0.1, 0.15), ("mouth_open", -0.02, 0.004),
    ("lip_red", 0.0, 0.3), ("ear_size", 0.085, 0.1), ("neck_w", 0.15, 0.19),
    ("hairline", -0.42, -0.33), ("hair_vol", 0.05, 0.1), ("hair_len", 0.0, 1.0),
    ("recede", 0.0, 0.1), ("wavy", 0.0, 0.5), ("grey", 0.0, 0.1), ("skin_tone", 0.0, 1.0),
    ("rosy", 0.0, 0.25), ("age", 0.06, 1.3), ("bags", 0.0, 0.2), ("male", 0.0, 1.0),
    ("makeup", 0.0, 0.2), ("collar", 0.35, 0.45), ("shirt_l", 0.3, 0.9),
    ("yaw", -1.0, 1.0), ("pitch", -1.0, 1.0), ("roll", -0.05, 0.05),
    ("jx", -0.015, 0.015), ("jy", -0.015, 0.015), ("js", -0.03, 0.03),
    ("light_x", -0.7, 0.7), ("light_y", -0.7, -0.1), ("light_warm", -1.0, 1.0), ("ambient", 0.3, 0.55),
    ("sheen", 0.0, 1.0), ("bg_hue", 0.0, 1.0), ("bg_l", 0.25, 0.85), ("bg_tex", 0.0, 1.0),
    ("hair_hue", 0.0, 1.0), ("iris_hue", 0.0, 1.0), ("cloth_hue", 0.0, 1.0), ("hat_hue", 0.0, 1.0),
    ("tex0", 0.0, 6.2832), ("tex1", 0.0, 6.2832), ("tex2", 0.0, 6.2832), ("tex3", 0.0, 6.2832),
]
_ZERO_SPEC = ["pale", "smooth", "blur", "hair_dark", "hair_blond", "hair_brown", "bald",
              "brow_raise", "brow_lower", "lip_depress", "jaw_drop", "teeth_show",
              # 1 switches childhood morphology off (the growth ablation: EmbeddedFaceGenerator(craniofacial_growth=False)).
              # Last, and drawn by no hash stream, so every face of the default is unchanged.
              "no_growth"]
PARAM_NAMES: List[str] = [n for n, _, _ in _UNIFORM_SPEC] + _ZERO_SPEC + [n for n, _, _ in _PRESENCE_SPEC]
_PINDEX = {n: i for i, n in enumerate(PARAM_NAMES)}

# Years of growth and ageing: the `age` parameter is years / 50.
_YEARS = 50.0


def identity_params(seed: int, identities: Sequence[int]) -> torch.Tensor:
    """Neutral face parameters of each identity: ``FloatTensor[B, len(PARAM_NAMES)]`` on CPU."""
    ids = np.asarray(identities, dtype=np.int64).reshape(-1)
    u = hash_uniform(seed, ids, len(_UNIFORM_SPEC) + 2 * len(_PRESENCE_SPEC), stream=2)
    out = np.zeros((len(ids), len(PARAM_NAMES)), dtype=np.float64)
    for k, (name, lo, hi) in enumerate(_UNIFORM_SPEC):
        out[:, _PINDEX[name]] = lo + (hi - lo) * u[:, k]
    # Ages: a third of the identities are children (2-18 years; most real longitudinal photos are of children),
    # the rest adults up to 65.
    a = u[:, [n for n, _, _ in _UNIFORM_SPEC].index("age")]
    out[:, _PINDEX["age"]] = np.where(a < 1 / 3, 2.0 + 48.0 * a, 18.0 + (a - 1 / 3) * 1.5 * 47.0) / _YEARS
    male = out[:, _PINDEX["male"]]
    base = len(_UNIFORM_SPEC)
    child = out[:, _PINDEX["age"]] * _YEARS < 16
    for k, (name, prob, by_male) in enumerate(_PRESENCE_SPEC):
        p = prob * (male * 1.6 - 0.3).clip(0, 1) if by_male else prob
        if by_male and name != "necktie":
            p = np.where(child, 0.0, p)  # no beards on children
        present = u[:, base + 2 * k] < p
        out[:, _PINDEX[name]] = present * (0.7 + 0.3 * u[:, base + 2 * k + 1])
    return torch.from_numpy(out.astype(np.float32))


#: The attribute directions of each version drawn by this module: 2.0.0 and 2.1.0 share the renderer and differ only
#: here (2.1.0's broader smile).
DIRECTIONS_BY_VERSION: dict[str, dict] = {
    "2.0.0": dict(ATTRIBUTE_DIRECTIONS),
    "2.1.0": {**ATTRIBUTE_DIRECTIONS, **ATTRIBUTE_DIRECTIONS_V2_1},
}
assert set(DIRECTIONS_BY_VERSION) | {"1.1.0"} == set(RENDERER_VERSIONS)  # 1.1.0 lives in renderer_v1


def direction_matrix(attribute_names: Sequence[str] = ALL_ATTRIBUTE_NAMES, version: str = DEFAULT_RENDERER_VERSION) -> torch.Tensor:
    """``FloatTensor[num_attributes, num_params]``: parameter change per unit ``t = alpha/5`` (``version``: a key of
    :data:`DIRECTIONS_BY_VERSION`)."""
    table = DIRECTIONS_BY_VERSION[version]
    mat = torch.zeros(len(attribute_names), len(PARAM_NAMES))
    for a, name in enumerate(attribute_names):
        for p, v in table[name].items():
            mat[a, _PINDEX[p]] = v
    return mat


# ----------------------------------------------------------------------------------------
# Geometry shared by the renderer and key_points(): growth, pose, the frame
# ----------------------------------------------------------------------------------------
def _growth(age: torch.Tensor, no_growth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, childness)`` per image: the cardioidal strain of the head relative to the adult template, and a 0..1
    measure of how young the face is (0 from 18 years). Strictly monotonic below 18 years, never saturating.
    ``no_growth`` = 1 gives every age the adult head (no strain, no child proportions)."""
    d = torch.relu(18.0 - age * _YEARS)
    childness = d / (d + 12.0) * (1.0 - no_growth)
    return -0.22 * childness, childness


_STRAIN_CENTRE = -0.02  # the head's centre (template v, about ear level) that the strain acts around


def _strain_forward(u: torch.Tensor, v: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Template (adult) point -> grown head point: ``R' = R (1 + k (1 - cos theta))``, theta from the vertex."""
    dv = v - _STRAIN_CENTRE
    r = _sqrt(u * u + dv * dv + 1e-8)
    f = 1.0 + k * (1.0 + dv / r)
    return u * f, _STRAIN_CENTRE + dv * f


def _strain_inverse(u: torch.Tensor, v: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head point -> template point (the strain is radial, so theta is kept and the inverse is exact)."""
    dv = v - _STRAIN_CENTRE
    r = _sqrt(u * u + dv * dv + 1e-8)
    f = 1.0 / (1.0 + k * (1.0 + dv / r))
    return u * f, _STRAIN_CENTRE + dv * f


def _depth_profile(u: torch.Tensor, v: torch.Tensor, fw: torch.Tensor) -> torch.Tensor:
    """How far a template point stands out of the face plane (1 at the nose, 0 at the outline): scales yaw/pitch."""
    a = u / (fw * 1.1)
    b = (v - 0.05) / 0.62
    return (1.0 - a * a - b * b).clamp(min=0.0)


def _template_key_points(P: dict) -> torch.Tensor:
    """``[B, 3, 2]`` template eye centres and mouth centre (midpoint of the corners), with the smile/AU15/AU26 moves."""
    ey = P["eye_y"]
    sep = P["eye_sep"]
    y_corner = P["mouth_y"] - 0.06 * P["smile"] + 0.035 * P["lip_depress"] + 0.012 * P["jaw_drop"]
    zero = torch.zeros_like(ey)
    return torch.stack([torch.stack([-sep, ey], -1), torch.stack([sep, ey], -1), torch.stack([zero, y_corner], -1)], 1)


def _pose_shift(P: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.07 * P["yaw"], 0.05 * P["pitch"]


def scene_key_points(params: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 2]`` key points in scene coordinates (template -> pose shift -> growth -> roll)."""
    P = {n: params[:, i] for n, i in _PINDEX.items()}
    kp = _template_key_points(P)
    ys, ps = _pose_shift(P)
    prof = _depth_profile(kp[..., 0], kp[..., 1], P["face_w"][:, None])
    u = kp[..., 0] + ys[:, None] * prof
    v = kp[..., 1] + ps[:, None] * prof
    k, _ = _growth(P["age"], P["no_growth"])
    u, v = _strain_forward(u, v, k[:, None])
    r = P["roll"][:, None]
    cr, sr = 1.0 - 0.5 * r * r, r
    return torch.stack([cr * u - sr * v, sr * u + cr * v], -1)


def frame_from_key_points(kp: torch.Tensor, P: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The FFHQ square (:func:`comface_hf.face_frame.frame_quad`) in torch: centre ``c``, half-axes ``X``, ``Y``
    (``[B, 2]`` each); frame coordinate ``(gx, gy)`` in ``[-1, 1]`` is the scene point ``c + gx X + gy Y``.
    With ``P`` the per-image jitter (``jx``, ``jy``, ``js``) is applied."""
    el, er, m = kp[:, 0], kp[:, 1], kp[:, 2]
    eye_avg = (el + er) * 0.5
    ee = er - el
    em = m - eye_avg
    x = torch.stack([ee[:, 0] + em[:, 1], ee[:, 1] - em[:, 0]], -1)
    norm = _sqrt((x * x).sum(-1))
    half = torch.maximum(_sqrt((ee * ee).sum(-1)) * 2.0, _sqrt((em * em).sum(-1)) * 1.8)
    X = x * (half / norm)[:, None]
    Y = torch.stack([-X[:, 1], X[:, 0]], -1)
    c = eye_avg + em * 0.1
    if P is not None:
        c = c + P["jx"][:, None] * X + P["jy"][:, None] * Y
        X = X * (1.0 + P["js"])[:, None]
        Y = Y * (1.0 + P["js"])[:, None]
    return c, X, Y


def frame_key_points(params: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 3, 2]`` image-left eye, image-right eye and mouth centre in pixel-INDEX coordinates of a ``size`` px
    render (pixel ``i``'s centre is at ``i``), as the aligner's ``landmarks`` take them (scheme ``three_point``)."""
    P = {n: params[:, i] for n, i in _PINDEX.items()}
    kp = scene_key_points(params)
    c, X, Y = frame_from_key_points(kp, P)
    d = kp - c[:, None]
    h2 = (X * X).sum(-1)[:, None]
    gx = (d * X[:, None]).sum(-1) / h2
    gy = (d * Y[:, None]).sum(-1) / h2
    return torch.stack([(gx + 1.0) * 0.5 * size - 0.5, (gy + 1.0) * 0.5 * size - 0.5], -1)


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def render_images(params: torch.Tensor, internal_size: int, taps: Optional[tuple] = None) -> torch.Tensor:
    """Render, resize and quantise one chunk of faces (version 2): ``FloatTensor[B, 3, S, S]`` in multiples of 1/255."""
    img = _render_params(params, internal_size)
    if taps is not None:
        img = _resize_bilinear(img, *taps)
    return torch.round(img.clamp(0.0, 1.0) * 255.0) / 255.0


def _grad(h: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``h [B,H,W]`` along x and y (one-sided at the border), divided by ``2 * step``."""
    hx = torch.cat([h[:, :, 1:2] - h[:, :, 0:1], h[:, :, 2:] - h[:, :, :-2], h[:, :, -1:] - h[:, :, -2:-1]], 2)
    hy = torch.cat([h[:, 1:2] - h[:, 0:1], h[:, 2:] - h[:, :-2], h[:, -1:] - h[:, -2:-1]], 1)
    return hx * (0.5 / step), hy * (0.5 / step)


def _render_params(params: torch.Tensor, size: int) -> torch.Tensor:  # noqa: C901  (one readable pass, top to bottom)
    dev = params.device
    B = params.shape[0]
    P = {n: params[:, i] for n, i in _PINDEX.items()}
    S = lambda n: P[n].view(B, 1, 1)  # noqa: E731  per-image scalar broadcast over [B,H,W]

    def C(c: torch.Tensor) -> torch.Tensor:  # [B,3] or [3] -> [B,3,1,1]
        return c.to(dev).expand(B, 3).reshape(B, 3, 1, 1)

    def V(x: torch.Tensor) -> torch.Tensor:  # [B] -> [B,1,1]
        return x.view(B, 1, 1)

    relu = torch.relu
    # ---------------- frame -> scene -> head -> template coordinates -----------------------
    g = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    gx, gy = g.view(1, 1, size), g.view(1, size, 1)
    c, X, Y = frame_from_key_points(scene_key_points(params), P)
    sx = V(c[:, 0]) + gx * V(X[:, 0]) + gy * V(Y[:, 0])
    sy = V(c[:, 1]) + gx * V(X[:, 1]) + gy * V(Y[:, 1])
    r = S("roll")
    cr, sr = 1.0 - 0.5 * r * r, r
    hu, hv_ = cr * sx + sr * sy, cr * sy - sr * sx  # undo the roll
    k, child = _growth(P["age"], P["no_growth"])
    u, v = _strain_inverse(hu, hv_, V(k))
    px_step = _sqrt((X * X).sum(-1)) * (2.0 / size)  # scene units per pixel
    step_t = V(px_step)
    childS = V(child)
    blur = S("blur")
    ew = step_t * 1.3 * (1.0 + 0.9 * blur).clamp(min=0.25) + 0.012 * relu(blur)
    detail = (1.0 - 0.6 * blur).clamp(min=0.0)

    fw, fh = S("face_w"), S("face_h")
    fy = -0.02
    ys, ps = _pose_shift(P)
    prof = _depth_profile(u, v, fw)
    uf = u - V(ys) * prof  # feature coordinates: the inner face moves with yaw/pitch, the outline less
    vf = v - V(ps) * prof
    uo = u - 0.35 * V(ys)
    ua = uf.abs()

    # ---------------- colours --------------------------------------------------------
    tone = P["skin_tone"]
    skin = torch.where(
        (tone < 0.6)[:, None],
        _SKIN_LIGHT.to(dev) + (tone / 0.6)[:, None] * (_SKIN_MID - _SKIN_LIGHT).to(dev),
        _SKIN_MID.to(dev) + ((tone - 0.6) / 0.4)[:, None] * (_SKIN_DARK - _SKIN_MID).to(dev),
    )
    age = P["age"]
    years = age * _YEARS
    older = relu(years - 18.0) / 47.0  # adult ageing: from 0 at 18 to 1 at 65 (and on)
    skin = skin * (1.0 - 0.1 * older - 0.002 * (years - 30.0) / 35.0)[:, None]  # and a faint linear term
    skin = skin + child[:, None] * _rgb(0.02, 0.0, -0.01).to(dev)  # children: a little pinker
    pale = P["pale"]
    skin = _lerp_col(skin, torch.where((pale > 0)[:, None], _rgb(0.98, 0.93, 0.9).to(dev), _rgb(0.55, 0.36, 0.24).to(dev)), 0.45 * pale.abs())
    hidx = (P["hair_hue"] * len(_HAIR_PALETTE)).long().clamp(max=len(_HAIR_PALETTE) - 1)
    hair = _HAIR_PALETTE.to(dev)[hidx]
    hd, hb, hbr = P["hair_dark"], P["hair_blond"], P["hair_brown"]
    hair = _lerp_col(hair, torch.where((hd > 0)[:, None], _rgb(0.03, 0.025, 0.025).to(dev), _rgb(0.75, 0.6, 0.45).to(dev)), 0.55 * hd.abs())
    hair = _lerp_col(hair, torch.where((hb > 0)[:, None], _rgb(0.92, 0.78, 0.5).to(dev), _rgb(0.1, 0.07, 0.05).to(dev)), 0.55 * hb.abs())
    hair = _lerp_col(hair, torch.where((hbr > 0)[:, None], _rgb(0.42, 0.25, 0.12).to(dev), _rgb(0.78, 0.74, 0.66).to(dev)), 0.55 * hbr.abs())
    grey = P["grey"] + 0.9 * relu(years - 40.0) / 30.0  # hair greys from 40
    hair = _lerp_col(hair, torch.where((grey > 0)[:, None], _rgb(0.78, 0.78, 0.78).to(dev), hair * 0.6), (0.6 * grey.abs()).clamp(max=0.9))
    brow_col = hair * (1.15 - 0.7 * P["brow_dark"].clamp(0.0, 1.2) * (1.0 - 0.4 * child))[:, None]
    iris = _IRIS_PALETTE.to(dev)[(P["iris_hue"] * len(_IRIS_PALETTE)).long().clamp(max=len(_IRIS_PALETTE) - 1)]
    bg_top = _hue_rgb(P["bg_hue"], 0.3, P["bg_l"])
    bg_bot = bg_top * 0.7
    cloth = _hue_rgb(P["cloth_hue"], 0.6, 0.25 + 0.5 * P["shirt_l"].clamp(0.0, 1.0)) * (0.7 + 0.3 * P["shirt_l"])[:, None]
    warm = P["light_warm"]
    light_col = torch.stack([1.0 + 0.12 * warm, torch.ones_like(warm), 1.0 - 0.14 * warm], 1)
    amb = S("ambient")

    # ---------------- background: gradient + low-frequency texture -------------------------
    t_y = (gy + 1.0) * 0.5
    bgt = S("bg_tex") * (_psin(gx * 4.0 + gy * 1.5 + S("tex2")) * _psin(gy * 3.0 - gx * 2.0 + S("tex3")))
    img = (C(bg_top) + t_y.unsqueeze(1) * C(bg_bot - bg_top)) * (1.0 + 0.18 * bgt + 0.0 * u).unsqueeze(1)
    img = img * (1.0 - 0.2 * (gx * gx + gy * gy) * (1.0 + 0.0 * u)).unsqueeze(1)

    # ---------------- back hair ------------------------------------------------------------
    hv = S("hair_vol") * (1.0 - 0.6 * S("bald")) + 0.02
    hat = S("hat").clamp(0.0, 1.0)
    hair_len = S("hair_len").clamp(0.0, 1.2)
    back_bottom = fy - 0.1 + hair_len * 0.85
    d_back = torch.maximum(uo.abs() - (fw + hv + 0.03 * hair_len), v - back_bottom)
    d_back = torch.minimum(d_back, _ellipse_sdf(uo, v - fy + 0.04, fw + hv, fh + hv))
    back_cov = _cov(d_back, ew) * (1.0 - 0.85 * S("bald").clamp(0.0, 1.0) * (v < fy).float())
    strands = _psin(u * 45.0 + S("wavy") * 3.0 * _psin(v * 22.0) + S("tex0")) * 0.6 + 0.4 * _psin(u * 97.0 + v * 11.0 + S("tex1"))
    hair_lit = 0.75 + 0.35 * relu(-(u / (fw + hv)) * S("light_x") - (v - fy) / (fh + hv) * S("light_y"))
    hair_tex = ((0.8 + 0.1 * strands * detail - 0.12 * relu(v - fy)) * hair_lit).unsqueeze(1)
    img = _blend_(img, back_cov * 0.97, lambda sl: C(hair * light_col) * hair_tex[:, :, sl] * 0.8)

    # ---------------- shoulders, clothes, neck -------------------------------------------
    d_sh = _ellipse_sdf(u, v - 1.22, 0.95, 0.5)
    img = _blend_(img, _cov(d_sh, ew), lambda sl: C(cloth * light_col) * (1.0 - 0.25 * (v[:, sl] - 0.8)).clamp(0.6, 1.1).unsqueeze(1))
    nw = S("neck_w") * (1.0 - 0.25 * childS)
    d_neck = torch.maximum(u.abs() - nw - 0.02 * relu(v - 0.7), (v - 0.1).neg())
    collar = S("collar")
    d_neck = torch.maximum(d_neck, v - (collar + 0.25 - 0.5 * u.abs()))
    neck_shade = (0.62 + 0.12 * (v - 0.3)) * (1.0 + 0.3 * relu(u * S("light_x").neg() / 0.2))
    img = _blend_(img, _cov(d_neck, ew), lambda sl: C(skin * light_col) * neck_shade[:, sl].clamp(0.5, 0.95).unsqueeze(1))
    nl = S("necklace").clamp(0.0, 1.0)
    arc = (_sqrt(u * u / 0.05 + (v - 0.2).clamp(min=0.0) ** 2) - (collar + 0.05)).abs() - 0.012
    beads = 0.75 + 0.25 * _psin(u * 160.0)
    img = _blend_(img, _cov(arc, ew) * nl * (v > 0.2).float(), lambda sl: C(_rgb(0.95, 0.82, 0.45)) * beads[:, sl].unsqueeze(1))
    nt = S("necktie").clamp(0.0, 1.0)
    tie_top = collar + 0.17
    d_tie = torch.maximum(u.abs() - (0.03 + 0.07 * (v - tie_top).clamp(0.0, 0.4)), tie_top - v)
    img = _blend_(img, _cov(d_tie, ew) * nt, C(_hue_rgb(P["hat_hue"], 0.8, torch.full_like(P["hat_hue"], 0.55))))

    # ---------------- ears + earrings ----------------------------------------------------
    ear_s = S("ear_size")
    ey = S("eye_y")
    exr = uo.abs() - (fw * 0.98 + 0.02)
    d_ear = _ellipse_sdf(exr, v - (ey + 0.08), 0.055, ear_s)
    ear_sh = 0.7 + 0.2 * _bump(exr + 0.01, v - (ey + 0.08), 0.05, ear_s)
    img = _blend_(img, _cov(d_ear, ew), lambda sl: C(skin * light_col) * ear_sh[:, sl].unsqueeze(1))
    er = S("earrings").clamp(0.0, 1.0)
    d_ring = _ellipse_sdf(exr, v - (ey + 0.08 + ear_s + 0.025), 0.018, 0.018)
    img = _blend_(img, _cov(d_ring, ew) * er, C(_rgb(0.98, 0.85, 0.4)))

    # ---------------- face outline ----------------------------------------------------------
    yy = (v - fy) / fh
    cheek = S("cheek") + 0.25 * childS  # buccal fat pads: full in children, adiposity in adults
    jd = S("jaw_drop")
    olderS = V(older)
    jaw = S("jaw") + 0.2 * olderS  # sagging jowls narrow the chin line
    widen = 1.0 + (0.22 * cheek + 0.05 * relu(S("smile"))) * _bump(0.0, yy - 0.35, 1.0, 0.65) + 0.05 * olderS * _bump(0.0, yy - 0.6, 1.0, 0.3)
    yl = yy / (1.0 + 0.08 * relu(jd) * relu(yy))  # jaw drop lengthens the lower face
    half_w = fw * widen * (1.0 - jaw * relu(yl) * relu(yl))
    nx = uo / half_w
    r2 = nx * nx + yl * yl
    d_face = (_sqrt(r2) - 1.0) * fw
    dchin = S("dchin")
    dc = relu(dchin)
    d_dc = _ellipse_sdf(uo, v - (fy + fh * 0.97), 0.16 + 0.1 * dc, 0.015 + 0.07 * dc)
    d_face = torch.minimum(d_face, d_dc + 0.02 * (1.0 - dc.clamp(max=1.0)))
    face_cov = _cov(d_face, ew)

    # ---------------- the height field and its lighting -----------------------------------
    smile = S("smile")
    sm = relu(smile)
    raise_ = S("cheek_raise")
    rz = relu(raise_)
    sep = S("eye_sep")
    ew_ = S("eye_w") * (1.0 + 0.18 * childS)  # eyes are near adult size early: relatively larger in children
    mouth_y = S("mouth_y")
    h = 0.3 * _sqrt((1.0 - r2).clamp(min=0.0) + 0.0004)  # skull and face dome
    ns = S("nose_scale") * (1.0 - 0.3 * childS)
    npt = S("nose_point")
    nwid = 0.055 * ns * (1.0 - 0.25 * npt)
    nose_len = S("nose_len") * (1.0 - 0.15 * childS)
    tip_y = ey + nose_len * (0.9 + 0.1 * ns) + 0.02 * npt
    along = _smooth01((vf - ey) / 0.06) * _smooth01((tip_y - vf) / 0.04 + 1.0)
    h = h + (0.05 + 0.04 * npt) * ns * _bump(uf, 0.0, nwid * 0.9, 1.0) * along
    h = h + 0.05 * ns * _bump(uf, vf - tip_y, nwid * 1.1, nwid * 0.9)
    h = h + (0.02 + 0.02 * S("male")) * (1.0 - childS) * _bump(ua - sep, vf - (ey - 0.065), 0.12, 0.035)  # brow ridge
    h = h - 0.06 * S("socket") * _bump(ua - sep, vf - ey + 0.005, ew_ * 1.7, 0.065)
    # Cheeks: malar fat raised by AU6 (and by the AU12 pull), fuller with adiposity, lower with age (ptosis).
    cyb = vf - (ey + 0.2 - 0.075 * raise_ - 0.03 * sm + 0.04 * olderS)
    cb = _bump(ua - (sep + 0.03), cyb, 0.13, 0.1 + 0.02 * cheek)
    h = h + (0.03 + 0.09 * rz + 0.04 * cheek + 0.07 * sm) * cb
    cbone = S("cheekbone")
    h = h + 0.03 * cbone * _bump(ua - (sep + 0.06), vf - (ey + 0.12), 0.1, 0.05)
    h = h - 0.03 * cbone * _bump(ua - fw * 0.7, vf - (ey + 0.27), 0.07, 0.09)
    # Nasolabial fold: the cheek mass lateral to the line from the nose wing past the mouth corner stands higher.
    nlx = ua - (0.07 + 0.015 * rz + 0.01 * sm) - (vf - (ey + 0.2)) * (0.42 + 0.25 * smile)
    nl_mask = _bump(0.0, vf - (mouth_y - 0.06), 1.0, 0.13)
    fold_depth = 0.008 + 0.02 * olderS + 0.06 * sm + 0.015 * rz + 0.008 * cheek
    h = h + fold_depth * _smooth01(nlx / 0.025 + 0.5) * nl_mask
    h = h + 0.025 * _bump(uf, vf - (fy + fh * 0.82), 0.08, 0.06)  # chin boss
    h = h + 0.02 * _bump(uf, vf - mouth_y, S("mouth_w") * 1.1, 0.04)  # lips over the teeth
    h = h - 0.02 * olderS * _bump(ua - fw * 0.75, vf - (fy + fh * 0.7), 0.08, 0.08)  # pre-jowl sulcus
    h = h + 0.025 * (dc + olderS * 0.5) * _bump(uo, v - (fy + fh * 0.95), 0.17 + 0.05 * dc, 0.04)  # double chin
    hx, hy = _grad(h, 2.0 / size)
    hx = hx / step_t * (2.0 / size)
    hy = hy / step_t * (2.0 / size)
    nrm = 1.0 / _sqrt(hx * hx + hy * hy + 1.0)
    lx, ly = S("light_x"), S("light_y")
    lz = _sqrt((1.0 - lx * lx - ly * ly).clamp(min=0.05))
    ndl = (-hx * lx - hy * ly + lz) * nrm
    diffuse = relu(ndl)
    # Blinn sheen with the viewer along +z: half vector of l and v.
    hl_n = 1.0 / _sqrt(lx * lx + ly * ly + (lz + 1.0) * (lz + 1.0))
    ndh = relu((-hx * lx - hy * ly + (lz + 1.0)) * nrm * hl_n)
    spec = ndh * ndh
    spec = spec * spec
    spec = spec * spec
    spec = spec * spec  # ^16
    shade = amb + (1.0 - amb) * diffuse * 1.1
    shade = shade - 0.15 * relu(-S("dchin")) * _bump(uo, v - (fy + fh * 0.98), fw, 0.08)  # tight jaw: under-jaw shadow
    # Skin texture and wrinkles (age: forehead lines and crow's feet from 30; smile: crow's feet of AU6).
    smooth = S("smooth")
    tex = (
        _psin(u * 23.0 + v * 7.0 + S("tex0")) + _psin(v * 29.0 - u * 11.0 + S("tex1"))
        + 0.5 * _psin(u * 61.0 + v * 47.0 + S("tex2")) + 0.5 * _psin(v * 71.0 - u * 37.0 + S("tex3"))
    )
    shade = shade + (0.012 * (1.0 - 0.6 * smooth) * (1.0 - 0.7 * childS) + 0.025 * olderS) * detail * tex
    br = S("brow_raise")
    bl = S("brow_lower")
    fore = _bump(uf, vf - (S("hairline") + ey) * 0.5, fw * 0.7, 0.09)
    shade = shade - (0.08 * olderS + 0.07 * relu(br)) * detail * fore * (0.5 + 0.5 * _psin(vf * 95.0 + 0.3 * _psin(uf * 9.0)))
    glab = _bump(uf, vf - (ey - 0.06), 0.05, 0.05)
    shade = shade - 0.12 * relu(bl) * detail * glab * (0.5 + 0.5 * _psin(uf * 120.0))
    crow = _bump(ua - (sep + ew_ * 1.5), vf - ey, 0.045, 0.05)
    shade = shade - (0.1 * olderS + 0.18 * rz) * detail * crow * (0.5 + 0.5 * _psin((vf - ey) * 140.0 + ua * 40.0))
    fold_line = _cov(nlx.abs() - 0.004, ew * 1.5) * nl_mask
    shade = shade - (0.03 + 0.1 * olderS + 0.3 * sm + 0.05 * rz) * fold_line
    bags = S("bags") + 0.3 * olderS
    ylid = vf - (ey + ew_ * 0.75 - 0.02 * rz)
    shade = shade - 0.14 * bags * _bump(ua - sep, ylid, ew_ * 1.05, 0.03)
    shade = shade - 0.12 * S("socket") * _bump(ua - sep, vf - ey + 0.01, ew_ * 1.8, 0.08)
    chin_w = relu(S("lip_depress")) * _bump(uf, vf - (fy + fh * 0.82), 0.07, 0.05)
    shade = shade - 0.12 * chin_w * detail * (0.5 + 0.5 * _psin(uf * 130.0 + vf * 70.0))
    face_col = C(skin * light_col) * shade.unsqueeze(1) + (0.25 * S("sheen") * spec).unsqueeze(1) * C(light_col)
    rosy = S("rosy") + 0.5 * S("makeup") + 0.15 * childS
    red = (rosy * cb * 0.5).unsqueeze(1)
    face_col = face_col + red * (C(_rgb(0.85, 0.25, 0.3)) - face_col) * 0.6
    beard_y = mouth_y - 0.05 - 0.16 * (ua / fw) * (ua / fw)
    beard_area = _smooth01((vf - beard_y) / 0.05) * _smooth01((fw * 1.05 - ua) / 0.04)
    stub = S("stubble")
    grain = 0.75 + 0.25 * _psin(u * 150.0 + _psin(v * 90.0) * 2.0)
    face_col = face_col * (1.0 - (0.28 * stub * beard_area * grain).unsqueeze(1))
    img = _blend_(img, face_cov, face_col)
    shade_hair = (0.55 + 0.6 * diffuse) * (0.8 + 0.2 * grain) * (0.9 + 0.15 * _psin(u * 90.0 + v * 40.0))

    def facial_hair(img: torch.Tensor, amount: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        a = amount.clamp(0.0, 1.0) * region * face_cov
        img = _blend_(img, 0.92 * a, lambda sl: C(hair * light_col) * shade_hair[:, sl].unsqueeze(1))
        return _scale_(img, 0.15 * relu(-amount) * region * face_cov, 1.0)

    beard_region = _smooth01((vf - beard_y - 0.02) / 0.04)
    img = facial_hair(img, S("beard"), beard_region)
    d_sb = torch.maximum(torch.maximum(fw * 0.8 - uo.abs(), v - (ey + 0.22)), (ey - 0.02) - v)
    img = facial_hair(img, S("sideburn"), _cov(d_sb, ew))
    d_goat = _ellipse_sdf(uf, vf - (mouth_y + 0.13), 0.075, 0.09)
    img = facial_hair(img, S("goatee"), _cov(d_goat, ew))

    # ---------------- eyes: sclera, iris, pupil, lids ----------------------------------------
    ex = (ua - sep) / ew_
    eyl = (vf - ey) / ew_
    ex2 = 1.0 - ex * ex
    eo = (S("eye_open") * (1.0 - 0.15 * rz) * (1.0 - 0.12 * olderS) * (1.0 + 0.2 * relu(br)) * (1.0 - 0.15 * relu(bl))).clamp(min=0.08)
    y_up = -0.55 * eo * ex2 - 0.05 * ex
    y_lo = 0.32 * eo * ex2 * (1.0 - 0.45 * rz) + 0.02  # AU6 pushes the lower lid up
    d_eye = torch.maximum(y_up - eyl, eyl - y_lo) * ew_ * 0.7
    eye_cov = _cov(d_eye, ew)
    ix = ex - S("gaze") * 0.4
    ir = _sqrt(ix * ix + eyl * eyl)
    eye_light = (amb + (1.0 - amb) * 0.8).unsqueeze(1)  # [B,1,1,1]: the eyeball is lit like the face
    img = _blend_(img, eye_cov, lambda sl: C(_rgb(0.93, 0.9, 0.87).to(dev) * light_col) * eye_light
                  * (0.75 + 0.2 * ex2[:, sl].clamp(0.0, 1.0)).unsqueeze(1))
    img = _blend_(img, eye_cov * _cov((ir - 0.42) * ew_, ew), lambda sl: C(iris) * (0.6 + 0.55 * ir[:, sl].clamp(max=1.0)).unsqueeze(1))
    img = _blend_(img, eye_cov * _cov((ir - 0.17) * ew_, ew), C(_rgb(0.03, 0.02, 0.02)))
    img = _blend_(img, eye_cov * _bump(ix + 0.15, eyl + 0.15, 0.12, 0.12), C(_rgb(1.0, 1.0, 1.0)))
    lid_shadow = _bump(ex, eyl - y_up - 0.12, 1.0, 0.15) * eye_cov  # the upper lid shades the eyeball
    img = _scale_(img, 0.3 * lid_shadow, -1.0)
    lid = _cov(((eyl - y_up).abs() * ew_ - 0.008 - 0.004 * relu(S("makeup"))), ew) * (ex.abs() < 1.08).float()
    img = _blend_(img, lid * 0.85, C(_rgb(0.08, 0.05, 0.05)))
    low_lid = _cov(((eyl - y_lo).abs() * ew_ - 0.003), ew) * (ex.abs() < 1.0).float()
    img = _scale_(img, 0.25 * low_lid, -1.0)
    crease = _cov(((eyl - (y_up - 0.35 - 0.15 * relu(br))).abs() * ew_ - 0.003), ew) * (ex.abs() < 0.95).float()
    img = _scale_(img, 0.2 * crease * (1.0 - eye_cov), -1.0)
    shadow_zone = _bump(ex, eyl - y_up + 0.45, 1.1, 0.45) * (1.0 - eye_cov)
    mk = S("makeup")
    img = _blend_(img, relu(mk) * 0.55 * shadow_zone, C(_rgb(0.35, 0.2, 0.35)))
    img = _scale_(img, 0.12 * relu(-mk) * shadow_zone, 1.0)

    # ---------------- eyebrows (AU1+2 raise them, AU4 lowers and draws them together) -------
    bx = (ua - sep - 0.01 + 0.02 * relu(bl)) / (ew_ * 1.35)
    by = (ey - S("brow_gap") - S("brow_arch") * (1.0 - bx * bx) + 0.015 * bx - 0.035 * br * (1.0 - 0.3 * bx)
          + 0.025 * bl * (1.0 - 0.5 * bx) + 0.01 * olderS)
    th = S("brow_thick") * (1.0 - 0.45 * relu(bx)) * (1.0 - 0.3 * childS)
    d_brow = torch.maximum((vf - by).abs() - th, (bx.abs() - 1.0) * ew_)
    brow_tex = 0.85 + 0.15 * _psin(ua * 220.0 + vf * 60.0)
    img = _blend_(img, _cov(d_brow, ew) * face_cov * 0.95, lambda sl: C(brow_col) * brow_tex[:, sl].unsqueeze(1))

    # ---------------- nostrils ---------------------------------------------------------------
    d_nos = _ellipse_sdf(ua - nwid * 0.42, vf - (tip_y + nwid * 0.42), nwid * 0.3, nwid * 0.16)
    img = _scale_(img, 0.7 * _cov(d_nos, ew), -1.0)

    # ---------------- mouth: lips, teeth (AU12 pulls the corners up and back and parts the lips) --
    mw = S("mouth_w") * (1.0 + 0.4 * sm - 0.05 * relu(-smile) + 0.1 * relu(jd))
    mx = uf / mw
    mx2 = 1.0 - mx * mx
    lift = 0.06 * smile - 0.035 * S("lip_depress")
    y_m = mouth_y + 0.012 * jd - lift * mx * mx + 0.01 * mx2
    lf = S("lip_full") * (1.0 - 0.3 * olderS) * (1.0 - 0.25 * sm)
    mo = S("mouth_open")
    op = relu(mo) + 0.04 * sm + 0.05 * relu(jd)
    pressed = relu(-mo)
    lf_eff = (lf - 0.15 * pressed).clamp(min=0.004)
    cupid = 1.0 - 0.35 * _bump(uf, 0.0, 0.03, 1.0)
    sq = _sqrt(mx2.clamp(min=0.0))
    y_gt = y_m - 0.35 * op * sq
    y_gb = y_m + 0.65 * op * sq
    y_u = y_gt - lf_eff * 0.8 * sq * cupid
    y_l = y_gb + lf_eff * 1.15 * sq
    d_lips = torch.maximum(torch.maximum(y_u - vf, vf - y_l), (mx.abs() - 1.0) * mw)
    lip_base = skin * _rgb(0.86, 0.62, 0.6).to(dev)
    lr = P["lip_red"] + 0.5 * P["makeup"]
    lip_col = _lerp_col(lip_base, torch.where((lr > 0)[:, None], _rgb(0.72, 0.08, 0.16).to(dev), skin * 0.95), 0.7 * lr.abs().clamp(max=1.4))
    lip_sh = (0.55 + 0.5 * diffuse) * (0.85 + 0.2 * _bump(uf, vf - (y_gb + lf_eff * 0.5), mw * 0.6, lf_eff * 0.8))
    img = _blend_(img, _cov(d_lips, ew), lambda sl: C(lip_col * light_col) * lip_sh[:, sl].unsqueeze(1))
    d_gap = torch.maximum(torch.maximum(y_gt - vf, vf - y_gb), (mx.abs() - 0.97) * mw)
    gap_cov = _cov(d_gap, ew * 0.7)
    # teeth_show (0 for every identity; renderer 2.1.0's smile raises it): in a broad smile the upper teeth fill most
    # of the parted lips, so the white band grows with the opening instead of staying a fixed strip.
    teeth_h = 0.022 * (1.0 - 0.3 * childS) + 0.8 * relu(S("teeth_show")).clamp(max=1.0) * op * sq
    teeth = _smooth01((y_gt + teeth_h - vf) / 0.008 + 0.5) * (1.0 - 0.5 * _smooth01((mx.abs() - 0.55) / 0.3))
    lower_teeth = relu(jd).clamp(max=1.0) * _smooth01((vf - (y_gb - 0.012)) / 0.008 + 0.5)
    tooth_gaps = 1.0 - 0.12 * _smooth01(_psin(mx * 18.0) * 4.0 - 3.0)
    teeth_all = (teeth + lower_teeth).clamp(max=1.0) * tooth_gaps
    img = _blend_(img, gap_cov, lambda sl: C(_rgb(0.22, 0.05, 0.05)) + teeth_all[:, sl].unsqueeze(1) * C(_rgb(0.66, 0.66, 0.6).to(dev) * light_col))
    line = _cov((vf - y_m).abs() - 0.003, ew) * (mx.abs() < 1.02).float() * (1.0 - gap_cov)
    img = _scale_(img, ((0.45 + 4.0 * pressed) * line).clamp(max=0.9), -1.0)
    corner = _bump(ua - mw * 1.02, vf - (y_m + 0.005), 0.016, 0.016)
    img = _scale_(img, ((0.1 + 0.35 * sm + 0.2 * relu(S("lip_depress"))) * corner).clamp(max=0.9), -1.0)
    d_mous = torch.maximum((vf - (y_u - 0.022)).abs() - 0.02 + 0.012 * mx.abs(), (mx.abs() - 1.15) * mw)
    img = facial_hair(img, S("moustache"), _cov(d_mous, ew))

    # ---------------- front hair, bangs, hat ------------------------------------------------
    bald = S("bald")
    recede = S("recede")
    q = uo / fw
    hl_y = (
        S("hairline") - 0.12 * bald - 0.06 * recede + 0.5 * q * q * q * q
        - 0.22 * recede * _bump(q.abs() - 0.55, 0.0, 0.35, 1.0)
    )
    bangs = S("bangs")
    hl_y = hl_y - 0.1 * relu(-bangs)
    hl_y = hl_y + relu(bangs).clamp(max=1.3) * (0.2 + 0.015 * _psin(u * 60.0)) * _smooth01((fw * 0.85 - uo.abs()) / 0.1)
    d_cap = torch.maximum(_ellipse_sdf(uo, v - fy + 0.03, fw + hv, fh + hv), v - hl_y)
    top_op = (1.0 - bald).clamp(0.0, 1.0) + 0.0 * v
    cap_cov = _cov(d_cap, ew) * top_op
    cap_sh = (0.72 + 0.3 * _bump(uo + 0.2 * lx, v - fy + fh * 0.9, fw, 0.35) + 0.08 * strands * detail) * hair_lit
    img = _blend_(img, cap_cov, lambda sl: C(hair * light_col) * cap_sh[:, sl].unsqueeze(1))
    shine = relu(bald) * _bump(uo + 0.15, v - fy + fh * 0.85, fw * 0.45, 0.15) * face_cov
    img = _scale_(img, 0.22 * shine, 1.0)
    hat_col = _hue_rgb(P["hat_hue"], 0.7, torch.full_like(P["hat_hue"], 0.5))
    d_hat = torch.maximum(_ellipse_sdf(uo, v - fy + 0.06, fw + hv + 0.04, fh + hv + 0.06), v - (S("hairline") + 0.02))
    d_brim = torch.maximum(uo.abs() - (fw + hv + 0.12), ((v - S("hairline")).abs() - 0.035))
    hat_sh = 0.75 + 0.3 * _bump(uo + 0.2, v - fy + fh, fw, 0.4)
    img = _blend_(img, _cov(torch.minimum(d_hat, d_brim), ew) * hat, lambda sl: C(hat_col * light_col) * hat_sh[:, sl].unsqueeze(1))

    # ---------------- eyeglasses ------------------------------------------------------------
    gl = S("glasses").clamp(0.0, 1.0)
    gx_ = ua - sep
    gy_ = vf - ey + 0.005
    bw, bh = ew_ * 1.55, ew_ * 1.1
    qx = (gx_.abs() - bw + 0.03).clamp(min=0.0)
    qy = (gy_.abs() - bh + 0.03).clamp(min=0.0)
    d_box = _sqrt(qx * qx + qy * qy) - 0.03
    rim = _cov(d_box.abs() - 0.004 - 0.004 * S("glasses").clamp(0.0, 2.0), ew)
    bridge = _cov(torch.maximum((vf - ey + 0.02).abs() - 0.006, ua - (sep - bw + 0.01)), ew)
    temple = _cov(torch.maximum((vf - ey + 0.03).abs() - 0.006, (sep + bw - 0.01) - ua), ew) * (ua < fw + 0.02).float()
    img = _scale_(img, 0.1 * gl * _cov(d_box, ew), -1.0)
    img = _blend_(img, gl * torch.maximum(torch.maximum(rim, bridge), temple), C(_rgb(0.08, 0.07, 0.07)))

    img = 0.5 + (img - 0.5) * (1.0 - 0.12 * blur).unsqueeze(1)
    return img.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------
# Shared input validation (also used by the latent-edit generator)
# ----------------------------------------------------------------------------------------
def alpha_grid(alpha_min: float = -5.0, alpha_max: float = 5.0, step: float = 0.1) -> torch.Tensor:
    """The paper's alpha values ``{-5.0, -4.9, ..., 5.0}``: ``FloatTensor[N]`` rounded to 1e-6.

    Computed from integer counts (not ``arange`` on floats) so that 0.0 and the end points
    are exact and the default has exactly 101 values (rounded to one decimal).
    """
    if step <= 0:
        raise ValueError(f"alpha step must be > 0, got {step}")
    if alpha_max < alpha_min:
        raise ValueError(f"alpha_max ({alpha_max}) must be >= alpha_min ({alpha_min})")
    n = int(round((alpha_max - alpha_min) / step)) + 1
    vals = np.round(alpha_min + step * np.arange(n), 6)
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    vals = np.round(vals, decimals)
    return torch.tensor(vals, dtype=torch.float32)


def validate_render_inputs(
    identities: torch.Tensor,
    attributes: torch.Tensor,
    alphas: torch.Tensor,
    num_attributes: int,
    alpha_range: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check and normalise ``render`` inputs; returns CPU ``(int64[B], int64[B], float32[B])``."""
    identities = torch.as_tensor(identities).reshape(-1)
    attributes = torch.as_tensor(attributes).reshape(-1)
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
    if not (len(identities) == len(attributes) == len(alphas)):
        raise ValueError(
            "identities, attributes and alphas must have the same length (one entry per image), "
            f"got {len(identities)}, {len(attributes)} and {len(alphas)}"
        )
    if identities.is_floating_point() or attributes.is_floating_point():
        raise TypeError("identities and attributes must be integer tensors (torch.long)")
    if len(attributes) and (int(attributes.min()) < 0 or int(attributes.max()) >= num_attributes):
        bad = attributes[(attributes < 0) | (attributes >= num_attributes)][0].item()
        raise IndexError(
            f"attribute index {bad} out of range: valid indices are 0..{num_attributes - 1} "
            "(use gen.attribute_index(name) to look one up)"
        )
    if len(identities) and int(identities.min()) < 0:
        raise ValueError("identity indices must be >= 0")
    lo, hi = alpha_range
    if len(alphas) and (not torch.isfinite(alphas).all() or float(alphas.min()) < lo - 1e-4 or float(alphas.max()) > hi + 1e-4):
        raise ValueError(
            f"alpha out of range: got values in [{float(alphas.min()):g}, {float(alphas.max()):g}], "
            f"the generator's alpha grid range is [{lo:g}, {hi:g}]"
        )
    return identities.cpu().long(), attributes.cpu().long(), alphas.cpu()


class _V2:
    """This module's renderer behind the same three functions as :mod:`.renderer_v1`."""

    identity_params = staticmethod(identity_params)
    direction_matrix = staticmethod(direction_matrix)
    render_images = staticmethod(render_images)


class EmbeddedFaceGenerator:
    """Parametric face renderer with the ComFace attribute-edit interface.

    Args:
        image_size: output resolution (>= 32).
        seed: corpus seed; identity ``i`` of seed ``s`` is always the same face.
        device: torch device to render on (CPU or CUDA).
        alpha_min / alpha_max: accepted alpha range (the paper's grid is [-5, 5]).
        internal_size: resolution the SDFs are evaluated at before a bilinear resize to
            ``image_size``; defaults to 64 for outputs up to 128 px and 96 above (the faces are
            soft, so this costs little detail and keeps rendering cheap); pass
            ``internal_size=image_size`` for full-resolution SDFs.
        renderer_version: ``"2.1.0"`` (default; ``"2.0.0"`` is the same renderer with a narrower smile: shading from a height field, pose, growth, the canonical frame,
            47 attributes incl. the 4 expression attributes) or ``"1.1.0"`` (the previous renderer, pixel for pixel,
            43 attributes; :mod:`.renderer_v1`).
        craniofacial_growth: ``False`` draws every age with the adult head and proportions (age is then adult
            ageing only: greying, wrinkles, sagging, skin); an ablation of renderer 2's childhood growth.
        compile: render with ``torch.compile``d kernels (fused, 5-8x faster on CPU; the first
            call at a new size compiles for 30-45 s, then inductor's on-disk cache serves it).
            Eager and compiled rendering give the same pixels, bit for bit (tested), so this is
            a speed choice only; if compilation fails (no C++ compiler) rendering warns once
            and continues eagerly.

    Example:
        >>> gen = EmbeddedFaceGenerator(image_size=112)
        >>> a = gen.attribute_index("smile")
        >>> x = gen.render(torch.tensor([0, 0]), torch.tensor([a, a]), torch.tensor([0.0, 5.0]))
        >>> x.shape
        torch.Size([2, 3, 112, 112])
        >>> gen.key_points(torch.tensor([0]), torch.tensor([a]), torch.tensor([5.0])).shape  # eyes, mouth
        torch.Size([1, 3, 2])
    """

    name = "comface-embedded"

    def __init__(
        self,
        image_size: int = 112,
        seed: int = 0,
        device: Union[str, torch.device] = "cpu",
        alpha_min: float = -5.0,
        alpha_max: float = 5.0,
        internal_size: Optional[int] = None,
        compile: bool = False,
        renderer_version: str = DEFAULT_RENDERER_VERSION,
        craniofacial_growth: bool = True,
    ) -> None:
        if renderer_version not in RENDERER_VERSIONS:
            raise ValueError(f"unknown renderer_version {renderer_version!r}; choose one of {', '.join(RENDERER_VERSIONS)}")
        self.version = renderer_version
        if not craniofacial_growth and renderer_version == "1.1.0":
            raise ValueError("craniofacial_growth=False needs renderer 2 (renderer 1.1.0 has no growth to switch off)")
        self.craniofacial_growth = bool(craniofacial_growth)
        self._impl = renderer_v1 if renderer_version == "1.1.0" else _V2
        if int(image_size) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size={image_size} is too small to render a face: the minimum is "
                f"{MIN_IMAGE_SIZE} pixels (render larger and downsample if you need less)"
            )
        self.image_size = int(image_size)
        self.internal_size = int(internal_size or min(self.image_size, 64 if self.image_size <= 128 else 96))
        if self.internal_size < MIN_IMAGE_SIZE:
            raise ValueError(f"internal_size must be >= {MIN_IMAGE_SIZE}, got {self.internal_size}")
        self.seed = int(seed)
        self.device = torch.device(device)
        self.alpha_range = (float(alpha_min), float(alpha_max))
        self.attribute_names: List[str] = list(ATTRIBUTE_NAMES if self.version == "1.1.0" else ALL_ATTRIBUTE_NAMES)
        self._directions = (renderer_v1.direction_matrix(self.attribute_names) if self.version == "1.1.0"
                            else direction_matrix(self.attribute_names, self.version))
        self._taps = None
        if self.internal_size != self.image_size:
            taps = bilinear_taps(self.internal_size, self.image_size)
            self._taps = (tuple(t.to(self.device) for t in taps),) * 2
        self.compile = bool(compile)
        self._compiled = self._compile_renderer()

    def _compile_renderer(self):
        return torch.compile(self._impl.render_images, dynamic=False, fullgraph=True) if self.compile else None

    def __getstate__(self) -> dict:
        # A compiled function does not pickle (DataLoader workers under "spawn"); each process compiles its own.
        return {k: v for k, v in self.__dict__.items() if k not in ("_compiled", "_impl")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._impl = renderer_v1 if self.version == "1.1.0" else _V2
        self._compiled = self._compile_renderer()

    def attribute_index(self, name: str) -> int:
        """Index of ``name`` in :attr:`attribute_names` (KeyError listing valid names)."""
        return resolve_attribute(name, self.attribute_names)

    def edited_params(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """``p + (alpha / 5) * n_m`` on CPU: ``FloatTensor[B, len(PARAM_NAMES)]``."""
        base = self._impl.identity_params(self.seed, identities.numpy())
        t = alphas / 5.0
        params = base + t[:, None] * self._directions[attributes]
        if not self.craniofacial_growth:
            params[:, _PINDEX["no_growth"]] = 1.0
        return params

    @torch.no_grad()
    def render(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Render one image per ``(identity, attribute, alpha)`` triple.

        Args:
            identities: ``LongTensor[B]`` identity indices (>= 0).
            attributes: ``LongTensor[B]`` indices into :attr:`attribute_names`.
            alphas: ``FloatTensor[B]`` edit strengths inside the alpha range.

        Returns:
            ``FloatTensor[B, 3, image_size, image_size]`` in ``[0, 1]`` on :attr:`device`,
            quantised to multiples of 1/255 (so it round-trips through PNG exactly).
        """
        ids, attrs, alphas = validate_render_inputs(identities, attributes, alphas, len(self.attribute_names), self.alpha_range)
        if len(ids) == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size, device=self.device)
        params = self.edited_params(ids, attrs, alphas).to(self.device)
        if self._compiled is not None:
            return self._render_compiled(params)
        return self._render_eager(params)

    @torch.no_grad()
    def key_points(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Where each rendered face's image-left eye centre, image-right eye centre and mouth centre (midpoint of the
        corners) lie: ``FloatTensor[B, 3, 2]`` in pixel-INDEX coordinates of the ``image_size`` render, after pose,
        growth and the edit (so ``FaceAligner.align(render, landmarks=kp, scheme="three_point")`` re-frames it).

        The frame's rule (:mod:`comface_hf.face_frame`) is applied to exactly these points, up to a per-image jitter
        of about 1.5% of the side (a detector's error), so they lie near :data:`CANONICAL_KEY_POINTS`.
        Renderer 1.1.0 did not draw in the frame and has no key points (``NotImplementedError``).
        """
        if self.version == "1.1.0":
            raise NotImplementedError("renderer 1.1.0 does not draw faces in the canonical frame; use renderer_version='2.1.0'")
        ids, attrs, alphas = validate_render_inputs(identities, attributes, alphas, len(self.attribute_names), self.alpha_range)
        return frame_key_points(self.edited_params(ids, attrs, alphas), self.image_size)

    def _render_eager(self, params: torch.Tensor) -> torch.Tensor:
        chunk = max(1, CPU_CHUNK_PIXELS // self.internal_size ** 2) if self.device.type == "cpu" else len(params)
        return torch.cat([self._impl.render_images(params[i:i + chunk], self.internal_size, self._taps)
                          for i in range(0, len(params), chunk)])

    def _render_compiled(self, params: torch.Tensor) -> torch.Tensor:
        n = len(params)
        pad = -n % COMPILED_CHUNK_IMAGES  # one fixed shape: no recompilation for a short last chunk
        if pad:
            params = torch.cat([params, params[-1:].expand(pad, -1)])
        out = []
        for i in range(0, len(params), COMPILED_CHUNK_IMAGES):
            chunk = params[i:i + COMPILED_CHUNK_IMAGES]
            try:
                out.append(self._compiled(chunk, self.internal_size, self._taps))
            except Exception as err:  # e.g. no C++ compiler: same pixels eagerly, only slower
                warnings.warn(f"EmbeddedFaceGenerator(compile=True) could not compile the renderer "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                              "rendering eagerly (same pixels, slower). Install a C++ compiler "
                              "(or triton on GPU) to use compile=True.")
                self._compiled = None
                return self._render_eager(params[:n])
        return torch.cat(out)[:n]

    def __repr__(self) -> str:
        return (f"EmbeddedFaceGenerator(image_size={self.image_size}, seed={self.seed}, "
                f"device='{self.device}', compile={self.compile}, version='{self.version}')")

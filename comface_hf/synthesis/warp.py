"""Landmark-driven warps: a second kind of edit, for changes a linear latent direction cannot carry (issue 24).

A GAN trained on adults has no direction that turns an adult into a child, and a DCGAN's "weight" boundary moves
what its labeller measured, not the shape change adiposity is. These edits move the *geometry* of a generated face
instead: a face's 68 landmarks (the generator's mean face, :func:`measure_face_template`) are displaced by a rule
from the face-perception literature, scaled by alpha, and the image is resampled through the smooth map those
displacements define.

* ``growth``: craniofacial growth as Pittenger & Shaw's cardioidal strain (Todd et al., Sci. Am. 1980): in polar
  coordinates about a centre above the eyes, ``R' = R (1 + k (1 - cos theta))`` with theta from the upward vertical,
  so the cranium stays and the lower face lengthens and widens. Followed by the similarity that puts the eye centres
  back where they were: aligned real photos are scaled by the eyes, so the edit must change the face's proportions,
  not its size. ``k = 0.06 alpha`` (alpha 5 is roughly child -> adult in the strain-perception studies, k ~ 0.3).
  Exact: the strain keeps theta, so its inverse is ``R = R' / (1 + k (1 - cos theta))``.
* ``adiposity``: facial adiposity as it tracks BMI in the perception literature (Coetzee et al., Perception 2009:
  face width to height, cheek-to-jaw width): the jaw contour (points 1-15) widens about the midline, by up to 20% at
  the chin's depth at alpha 5 (less higher up), and the chin (8) drops 0.08 IOD; eyes, brows, nose and mouth stay. Thin-plate spline through those points and the fixed image border.
* ``smile_warp``: the lip-corner puller's geometry (AU12, with AU6's lower-lid raise): the mouth 30% wider at its
  corners (48, 54, 60, 64) and the corners 0.12 IOD higher at alpha 5, the lips' outer points part of that, lower lids
  (40, 41, 46, 47) up 0.03 IOD;
  negative alpha pulls the corners in and down. A warp cannot show teeth; the DCGAN's own smile direction can.

Alpha > 0 means more (older, heavier, more smiling), as for every attribute. Grids depend only on
``(warp, alpha, size)`` and are cached: alpha takes 101 values on the paper's grid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ComFaceInputError
from .attributes import resolve_attribute
from .mixture import routing_inputs

#: File name of a generator's mean-face landmarks, beside its boundaries (``comface directions`` writes it).
FACE_TEMPLATE_FILE = "face_template.json"
#: Strain per unit alpha of ``growth``; the others' sizes at alpha 5 (displacements in inter-ocular distances, IOD).
GROWTH_PER_ALPHA = 0.06
#: relative widening of the lower face (jaw contour about the midline) at alpha 5, at the chin's depth
ADIPOSITY_WIDTH = 0.2
ADIPOSITY_CHIN_IOD = 0.08
#: relative widening of the mouth at alpha 5 (AU12 stretches it ~30%), its corners' lift and the lower lids' raise
SMILE_WIDTH, SMILE_CORNER_UP_IOD, SMILE_LID_UP_IOD = 0.3, 0.12, 0.03
#: Growth's strain centre: on the face's midline this many IODs above the eye line (about the head's centre in a
#: frontal view: the cardioidal strain's origin sits near the ear canal in profile).
GROWTH_CENTRE_ABOVE_EYES_IOD = 0.6


def _eyes(points: np.ndarray) -> tuple:
    left, right = points[36:42].mean(0), points[42:48].mean(0)
    return left, right, float(np.linalg.norm(right - left))


def _growth_strain(k: float, points: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Inverse map (output position -> source position) of the eye-normalised cardioidal strain ``k``."""
    left, right, iod = _eyes(points)
    mid = (left + right) / 2
    up = np.array([0.0, -1.0])  # image y grows downwards
    centre = mid + GROWTH_CENTRE_ABOVE_EYES_IOD * iod * up

    def strain(q: np.ndarray, invert: bool = False) -> np.ndarray:
        """The strain, or its inverse: theta is kept, so R is multiplied or divided by the same factor."""
        d = q - centre
        r = np.linalg.norm(d, axis=-1, keepdims=True)
        cos = np.where(r > 0, (d @ up)[..., None] / np.maximum(r, 1e-12), 1.0)
        factor = 1 + k * (1 - cos)
        return centre + (d / factor if invert else d * factor)

    # the similarity that takes the strained eyes back: eyes are symmetric about the strain's vertical axis only
    # approximately, so fit it on both eye centres (a scale about the strained mid-eye point plus a shift)
    sl, sr = strain(left[None])[0], strain(right[None])[0]
    smid, scale = (sl + sr) / 2, float(np.linalg.norm(sr - sl)) / iod

    def inverse(q: np.ndarray) -> np.ndarray:  # output = mid + (strain(p) - smid) / scale  =>  p = strain^-1(...)
        return strain(smid + (q - mid) * scale, invert=True)

    return inverse


def _adiposity_targets(points: np.ndarray, alpha: float) -> np.ndarray:
    left, right, iod = _eyes(points)
    mid = (left + right) / 2
    chin = points[8]
    depth = np.clip((points[:, 1] - mid[1]) / max(chin[1] - mid[1], 1e-6), 0.0, 1.0)
    moved = points.copy()
    jaw = np.arange(1, 16)
    # a widening of the lower face about the midline, growing with depth below the eyes (a scaling keeps the
    # contour's order: a shift of every point would pile the chin's points up and fold the map)
    moved[jaw, 0] += (points[jaw, 0] - mid[0]) * ADIPOSITY_WIDTH * (alpha / 5.0) * np.sqrt(depth[jaw])
    moved[8, 1] += ADIPOSITY_CHIN_IOD * iod * (alpha / 5.0)
    return moved


def _smile_targets(points: np.ndarray, alpha: float) -> np.ndarray:
    left, right, iod = _eyes(points)
    mid_x = (left[0] + right[0]) / 2
    t = alpha / 5.0
    moved = points.copy()
    for index, share in ((48, 1.0), (54, 1.0), (60, 1.0), (64, 1.0), (49, 0.4), (53, 0.4), (59, 0.5), (55, 0.5),
                         (61, 0.4), (63, 0.4), (67, 0.5), (65, 0.5)):
        moved[index, 0] += (points[index, 0] - mid_x) * SMILE_WIDTH * t * share  # wider about the midline
        moved[index, 1] -= SMILE_CORNER_UP_IOD * iod * t * share
    moved[[40, 41, 46, 47], 1] -= SMILE_LID_UP_IOD * iod * t
    return moved


#: warp name -> (what it models, its landmark targets; None: a closed-form map)
WARPS: Dict[str, tuple] = {
    "growth": ("craniofacial growth: cardioidal strain about the head's centre, eyes kept in place", None),
    "adiposity": ("facial adiposity: jaw contour out from the midline, chin down (face width to height)",
                  _adiposity_targets),
    "smile_warp": ("AU12 (+AU6) geometry: mouth corners out and up, lower lids up", _smile_targets),
}


#: Fixed points on a square this far out (the image is [-1, 1]): far enough that a face filling the frame (the DCGAN's
#: chin sits at y ~1.03) never has a moved landmark next to a fixed one, which folds the map.
ANCHOR_RING = 1.6


def _border(n: int = 6) -> np.ndarray:
    """Fixed points on a square around the image (:data:`ANCHOR_RING`): the background far from the face stays."""
    s = np.linspace(-ANCHOR_RING, ANCHOR_RING, n)
    ones = np.full_like(s, ANCHOR_RING)
    return np.concatenate([np.stack([s, -ones], 1), np.stack([s, ones], 1), np.stack([-ones, s], 1)[1:-1],
                           np.stack([ones, s], 1)[1:-1]])


def warp_grid(name: str, alpha: float, points: np.ndarray, size: int) -> torch.Tensor:
    """The ``grid_sample`` grid ``[size, size, 2]`` (x, y in [-1, 1], ``align_corners=False``) of warp ``name`` at
    ``alpha`` for a face whose landmarks are ``points`` ``[68, 2]`` in the same normalised coordinates."""
    if name not in WARPS:
        raise ComFaceInputError(f"unknown warp {name!r}; warps: {', '.join(WARPS)}")
    centres = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres, align_corners=False
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    out = np.stack([gx, gy], -1).reshape(-1, 2)
    if alpha == 0:
        source = out
    elif WARPS[name][1] is None:
        source = _growth_strain(GROWTH_PER_ALPHA * alpha, points)(out)
    else:
        from scipy.interpolate import RBFInterpolator

        target = WARPS[name][1](points, alpha)
        anchors = _border()
        dest = np.concatenate([target, anchors])
        src = np.concatenate([points, anchors])
        # backward map: for each output pixel, where in the unedited face to read (thin-plate spline dest -> src)
        source = out + RBFInterpolator(dest, src - dest, kernel="thin_plate_spline")(out)
    return torch.from_numpy(source.reshape(size, size, 2).astype(np.float32))


def frame_grid(points: np.ndarray, size: int) -> torch.Tensor:
    """The ``grid_sample`` grid ``[size, size, 2]`` that resamples a generated image into the canonical face frame
    (:mod:`comface_hf.face_frame`, FFHQ's rule), placed by the mean face's eyes and mouth: the frame every real photo
    is aligned into. A generator that crops tighter (the DCGAN's face is ~1.24x the frame's size, chin at the edge)
    otherwise trains on larger faces than it is later shown."""
    from ..face_frame import frame_quad

    left, right, _ = _eyes(points)
    top_left, bottom_left, _, top_right = frame_quad(left, right, (points[48] + points[54]) / 2)
    t = (np.arange(size) + 0.5) / size  # pixel centres along the frame's side, align_corners=False
    v, u = np.meshgrid(t, t, indexing="ij")
    source = top_left + u[..., None] * (top_right - top_left) + v[..., None] * (bottom_left - top_left)
    return torch.from_numpy(source.astype(np.float32))


def load_face_template(path: Union[str, os.PathLike]) -> np.ndarray:
    """A generator's mean-face landmarks ``[68, 2]`` in normalised image coordinates ([-1, 1], x right, y down)."""
    path = Path(path)
    if path.is_dir():
        path = path / FACE_TEMPLATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No face template at {path}: a warp needs the generator's mean-face landmarks. Write one with "
            "comface_hf.synthesis.warp.measure_face_template (comface directions writes it beside the boundaries), "
            "or pass face_template in the generator's spec.")
    data = json.loads(path.read_text())
    points = np.asarray(data.get("landmarks"), dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all() or np.abs(points).max() > 1.5:
        raise ComFaceInputError(f"{path}: 'landmarks' must be 68 finite (x, y) points in [-1, 1] image coordinates.")
    return points


@torch.no_grad()
def measure_face_template(generator: Any, samples: int = 256, first_identity: int = 10_000_000,
                          detect_size: int = 128, batch_size: int = 64) -> dict:
    """The mean 68 landmarks of ``generator``'s unedited faces (dlib, as the direction labeller finds them).

    Identities from ``first_identity`` on (never a training identity of a run with fewer identities); faces dlib does not
    find are left out and counted. Returns ``{"landmarks": [[x, y] * 68], "found": n, "samples": samples, ...}`` in
    normalised image coordinates ([-1, 1]).
    """
    from PIL import Image

    from ..face_alignment import DlibFaceDetector

    detector = DlibFaceDetector(upsample=(0,))
    found = []
    for start in range(0, samples, batch_size):
        ids = torch.arange(start, min(samples, start + batch_size)) + first_identity
        images = generator.render(ids, torch.zeros_like(ids), torch.zeros(len(ids)))
        pixels = (images.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        for array in pixels:
            pil = Image.fromarray(array).resize((detect_size, detect_size), Image.BICUBIC)
            faces = detector.detect(np.asarray(pil))
            if faces:
                found.append(np.asarray(faces[0].landmarks, dtype=np.float64) / detect_size * 2 - 1)
    if len(found) < 8:
        raise ComFaceInputError(f"dlib found a face in {len(found)} of {samples} unedited samples: too few for a mean "
                                "face; is this a face generator at a resolution dlib can read?")
    stack = np.stack(found)
    return {"landmarks": stack.mean(0).round(5).tolist(), "spread": float(stack.std(0).mean().round(5)),
            "found": len(found), "samples": int(samples), "detect_size": int(detect_size),
            "coordinates": "normalised image coordinates in [-1, 1], x right, y down (grid_sample, align_corners=False)",
            "landmark_scheme": "iBUG 68 (dlib)"}


class WarpEditGenerator:
    """A generator plus landmark-driven warp attributes: ``attribute_names`` = the base's, then the warps'.

    A warp attribute renders the identity's unedited face from the base (alpha 0 on its first attribute) and
    resamples it through :func:`warp_grid`; the base's own attributes render as before. With ``canonical_frame``
    every image is then resampled into the canonical face frame (:func:`frame_grid`). Same ``render`` contract.

    Args:
        generator: any generator (``render``, ``attribute_names``).
        warps: names from :data:`WARPS` (each a new attribute), or ``"<attribute>+<warp>"`` to apply the warp at the
            same alpha on top of one of the base's own edits (e.g. ``"age+growth"``: the latent age edit, and the
            face's proportions growing with it).
        template: the base's mean-face landmarks ``[68, 2]`` (:func:`load_face_template`).
    """

    name = "comface-warp-edit"
    version = "1.1.0"

    def __init__(self, generator: Any, warps: Sequence[str], template: np.ndarray,
                 canonical_frame: bool = False) -> None:
        names = [w.strip() for w in warps if w.strip()]
        self.coupled: Dict[int, str] = {}  # base attribute index -> warp applied with it
        new = []
        for name in names:
            attribute, _, warp = name.rpartition("+")
            if warp not in WARPS:
                raise ComFaceInputError(f"unknown warp {warp!r} in {name!r}; warps: {', '.join(WARPS)}")
            if not attribute:
                new.append(warp)
                continue
            if attribute not in generator.attribute_names:
                raise ComFaceInputError(f"{name!r}: the generator has no attribute {attribute!r} to couple {warp!r} "
                                        f"with; it has {', '.join(generator.attribute_names)}")
            index = list(generator.attribute_names).index(attribute)
            if index in self.coupled:
                raise ComFaceInputError(f"{attribute!r} is coupled with two warps; keep one")
            self.coupled[index] = warp
        clash = [w for w in new if w in generator.attribute_names]
        if clash or len(set(new)) != len(new):
            raise ComFaceInputError(f"warp names must be new, distinct attributes; {clash or new} repeat")
        self.generator = generator
        self.warps = new
        self.template = np.asarray(template, dtype=np.float64).reshape(68, 2)
        self.base_count = len(generator.attribute_names)
        self.attribute_names = list(generator.attribute_names) + self.warps
        self.alpha_range = getattr(generator, "alpha_range", (-5.0, 5.0))
        self.canonical_frame = bool(canonical_frame)
        self._grids: Dict[tuple, torch.Tensor] = {}

    def __getattr__(self, name: str) -> Any:  # G, latent_space, device ... of the base (describe, data terms)
        if name.startswith("_") or name in ("generator",):
            raise AttributeError(name)
        return getattr(self.generator, name)

    def attribute_index(self, name: str) -> int:
        return resolve_attribute(name, self.attribute_names)

    def grid(self, warp: str, alpha: float, size: int) -> torch.Tensor:
        key = (warp, round(float(alpha), 4), int(size))
        if key not in self._grids:
            self._grids[key] = warp_grid(warp, key[1], self.template, size)
        return self._grids[key]

    def _framed(self, images: torch.Tensor) -> torch.Tensor:
        if not self.canonical_frame:
            return images
        key = ("frame", int(images.shape[-1]))
        if key not in self._grids:
            self._grids[key] = frame_grid(self.template, key[1])
        grid = self._grids[key].to(images.device).expand(len(images), -1, -1, -1)
        # the frame reaches past a tight crop: mirror the image's edge (hair, background) rather than smear it
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False).clamp(0.0, 1.0)

    @torch.no_grad()
    def render(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        identities, attributes, alphas = routing_inputs(identities, attributes, alphas, len(self.attribute_names))
        warped = attributes >= self.base_count
        base_rows = (~warped).nonzero().flatten()
        warp_rows = warped.nonzero().flatten()
        out = None
        if len(base_rows):
            images = self.generator.render(identities[base_rows], attributes[base_rows], alphas[base_rows])
            if self.coupled:  # a base edit with its warp at the same alpha
                images = self._warp(images, [self.coupled.get(int(a)) for a in attributes[base_rows]],
                                    alphas[base_rows])
            out = images.new_empty((len(attributes), *images.shape[1:]))
            out[base_rows.to(out.device)] = images
        if len(warp_rows):
            # each identity's unedited face once (x and y of a warp pair share it)
            unique, inverse = torch.unique(identities[warp_rows], return_inverse=True)
            plain = self.generator.render(unique, torch.zeros_like(unique), torch.zeros(len(unique)))
            edited = self._warp(plain[inverse.to(plain.device)],
                                [self.warps[int(a) - self.base_count] for a in attributes[warp_rows]],
                                alphas[warp_rows])
            if out is None:
                out = edited.new_empty((len(attributes), *edited.shape[1:]))
            out[warp_rows.to(out.device)] = edited
        if out is None:
            raise ValueError("render needs at least one (identity, attribute, alpha).")
        return self._framed(out)

    def _warp(self, images: torch.Tensor, warps: Sequence[Optional[str]], alphas: torch.Tensor) -> torch.Tensor:
        """Each image through its warp at its alpha (None: unchanged)."""
        rows = [i for i, w in enumerate(warps) if w is not None]
        if not rows:
            return images
        size = images.shape[-1]
        grids = torch.stack([self.grid(warps[i], float(alphas[i]), size) for i in rows]).to(images.device)
        images = images.clone()
        index = torch.tensor(rows, device=images.device)
        images[index] = F.grid_sample(images[index], grids, mode="bilinear", padding_mode="border",
                                      align_corners=False).clamp(0.0, 1.0)
        return images

    def describe(self) -> dict:
        base = self.generator.describe() if hasattr(self.generator, "describe") else {}
        return {**base, "attributes": list(self.attribute_names), "canonical_frame": self.canonical_frame,
                "warps": {**{w: WARPS[w][0] for w in self.warps},
                          **{f"{self.generator.attribute_names[i]}+{w}": WARPS[w][0] for i, w in self.coupled.items()}},
                "warp_version": self.version}


__all__ = ["FACE_TEMPLATE_FILE", "WARPS", "WarpEditGenerator", "frame_grid", "load_face_template",
           "measure_face_template", "warp_grid"]

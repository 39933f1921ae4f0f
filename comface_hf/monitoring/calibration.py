"""The same-person threshold: measured on rendered identities, stored in the model's config with its error rates.

Data: identities the embedded generator has never used in training (indices from :data:`IDENTITY_OFFSET` on; the
pretraining corpus uses ``0 .. num_identities - 1``), each rendered twice with two random attribute edits (random
attribute, random alpha), i.e. the same person after a change. Genuine pairs: the two renders of one identity;
impostor pairs: renders of two different identities. The first half of the identities sets the threshold (the
cosine at which ``target_far`` of impostor pairs are accepted); the second half measures the false-accept and
false-reject rates that are stored and printed with it.

Written into ``config.same_person_threshold / same_person_far / same_person_frr / same_person_calibration``.
``training/pretrain.py`` calls :func:`calibrate_same_person` on the trained model before saving it; an existing folder
is calibrated with ``comface calibrate MODEL``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

#: First identity index used for calibration; far above any pretraining corpus, so never seen in training.
IDENTITY_OFFSET = 50_000_000
DEFAULT_IDENTITIES = 200
DEFAULT_TARGET_FAR = 0.01


def threshold_at_far(impostor: np.ndarray, target_far: float) -> float:
    """The smallest cosine threshold that accepts at most ``target_far`` of the impostor similarities."""
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    if impostor.size == 0:
        raise ValueError("no impostor pairs to set a threshold on")
    k = int(np.floor(target_far * impostor.size))  # impostors allowed at or above the threshold
    return float(np.nextafter(impostor[-1], np.inf)) if k == 0 else float(impostor[impostor.size - k])


def error_rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> dict[str, float]:
    """False-accept rate (impostors >= threshold), false-reject rate (genuine < threshold) and the ROC AUC."""
    from sklearn.metrics import roc_auc_score

    genuine, impostor = np.asarray(genuine, dtype=np.float64), np.asarray(impostor, dtype=np.float64)
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    return {
        "far": float(np.mean(impostor >= threshold)),
        "frr": float(np.mean(genuine < threshold)),
        "auc": float(roc_auc_score(labels, np.r_[genuine, impostor])),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
    }


def render_identity_pairs(
    num_identities: int, image_size: int, generator_seed: int = 0, seed: int = 0, renderer_version: Optional[str] = None,
    generator_spec: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two renders per unseen identity, each with its own random attribute edit: ``uint8 [N, 2, S, S, 3]``, ids.

    ``generator_spec``: the embedded generator the model was pretrained with (a ``GeneratorSpec`` or its dict; its
    size is replaced by ``image_size``); without one, the embedded renderer ``renderer_version`` (default: the
    current one) at ``generator_seed``."""
    from ..synthesis.spec import (
        GeneratorSpec,
        as_spec,
        build_generator,
        embedded_spec_for,
    )

    if generator_spec is None:
        generator_spec = GeneratorSpec(seed=generator_seed,
                                       **({} if renderer_version is None else {"renderer_version": renderer_version}))
    generator = build_generator(embedded_spec_for([as_spec(generator_spec)], image_size))
    rng = np.random.default_rng(seed)
    n = int(num_identities)
    ids = np.repeat(np.arange(IDENTITY_OFFSET, IDENTITY_OFFSET + n), 2)
    attributes = rng.integers(0, len(generator.attribute_names), size=2 * n)
    low, high = generator.alpha_range
    alphas = np.round(rng.uniform(low, high, size=2 * n), 1)
    images = generator.render(torch.as_tensor(ids), torch.as_tensor(attributes),
                              torch.as_tensor(alphas, dtype=torch.float32))
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return array.reshape(n, 2, image_size, image_size, 3), ids[::2]


def similarities(comparer: Any, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Genuine (same identity) and impostor (all pairs of different identities) cosines of g(f(.)) embeddings."""
    n = images.shape[0]
    flat = images.reshape(2 * n, *images.shape[2:])
    embeddings = []
    for start in range(0, len(flat), batch_size):
        crops = [comparer.align_image(image)[0] for image in flat[start:start + batch_size]]
        out = comparer.embed(comparer.pixel_values(crops))
        if "embedding" not in out:
            raise ValueError("this model has no projection head g (a transferred model): nothing to calibrate")
        embeddings.append(out["embedding"].float().cpu())
    e = torch.cat(embeddings).view(n, 2, -1)
    genuine = (e[:, 0] * e[:, 1]).sum(-1).numpy()
    cross = (e[:, 0] @ e[:, 1].t()).numpy()
    impostor = cross[~np.eye(n, dtype=bool)]
    return genuine, impostor


def _calibration_spec(model: Any, generator_spec: Any, generator_seed: Optional[int], renderer_version: Optional[str]):
    """The embedded generator to calibrate with: the given spec, else the model's recorded one, else the default;
    an explicit seed or renderer version wins over either."""
    import dataclasses

    from ..synthesis.spec import (
        GeneratorSpec,
        as_spec,
        embedded_spec_for,
        specs_from_config,
    )

    if generator_spec is not None:
        specs = [as_spec(generator_spec)]
    else:
        specs = specs_from_config(getattr(model.config, "generator_spec", None)) or [GeneratorSpec()]
    spec = embedded_spec_for(specs, int(model.config.image_size))
    overrides = {k: v for k, v in (("seed", generator_seed), ("renderer_version", renderer_version)) if v is not None}
    return dataclasses.replace(spec, **overrides)


def calibrate_same_person(
    model: Any,
    processor: Any = None,
    num_identities: int = DEFAULT_IDENTITIES,
    target_far: float = DEFAULT_TARGET_FAR,
    generator_seed: Optional[int] = None,
    seed: int = 0,
    align: Any = "none",
    renderer_version: Optional[str] = None,
    generator_spec: Any = None,
) -> dict[str, Any]:
    """Measure the same-person threshold of a pretrained model on rendered identities and store it in its config.

    Args:
        model: a ``ComFaceModel`` (it needs g).
        num_identities: unseen identities; half set the threshold, half measure the stored rates.
        target_far: false-accept rate the threshold is set for on the first half.
        align: a word of ``ALIGN_MODES``: ``"none"`` feeds the renders as the model saw them in pretraining;
            ``"auto"`` runs them through the face aligner, as ``comface compare`` does with photos (a missed render
            is used whole; slower: the detector runs on each render). ``False`` / ``True`` are deprecated spellings.
        generator_spec: the generator to render with; default: the one recorded in ``model.config.generator_spec``
            by pretraining (its embedded renderer), else the embedded default. ``generator_seed`` and
            ``renderer_version``, when given, override the spec's.

    Returns:
        the figures (threshold, far, frr, auc on the held-out half, and the same on the first half).
    """
    from ..face_alignment import align_mode
    from ..face_comparison import FaceComparer

    if num_identities < 8:
        raise ValueError(f"num_identities={num_identities} is too few to measure error rates; use at least 8 "
                         "(default 200)")
    spec = _calibration_spec(model, generator_spec, generator_seed, renderer_version)
    recorded = generator_spec is not None or getattr(model.config, "generator_spec", None) is not None
    was_training = model.training
    align = align_mode(align)
    comparer = FaceComparer(model, processor, align=align)
    images, _ = render_identity_pairs(num_identities, int(model.config.image_size), seed=seed, generator_spec=spec)
    half = num_identities // 2
    g_fit, i_fit = similarities(comparer, images[:half])
    g_test, i_test = similarities(comparer, images[half:])
    threshold = threshold_at_far(i_fit, target_far)
    held_out = error_rates(g_test, i_test, threshold)
    fit = error_rates(g_fit, i_fit, threshold)
    description = (
        f"embedded renderer {spec.renderer_version if recorded else renderer_version or 'default'}"
        f"{'' if spec.craniofacial_growth else ' without craniofacial growth'}, generator seed {spec.seed}, "
        f"{num_identities} unseen "
        f"identities (from "
        f"{IDENTITY_OFFSET}), each rendered twice with random attribute edits; threshold set at FAR {target_far:g} on "
        f"{half} identities ({fit['impostor_pairs']} impostor pairs), rates measured on the other "
        f"{num_identities - half} ({held_out['genuine_pairs']} genuine, {held_out['impostor_pairs']} impostor pairs)"
        f"{', renders as the model saw them' if align == 'none' else f', aligned by the face detector ({align})'}"
    )
    model.config.same_person_threshold = round(threshold, 6)
    model.config.same_person_far = round(held_out["far"], 6)
    model.config.same_person_frr = round(held_out["frr"], 6)
    model.config.same_person_calibration = description
    model.train(was_training)
    return {"threshold": threshold, **held_out, "fit": fit, "description": description}


def write_config_atomically(config: Any, folder: str) -> None:
    """Write ``folder/config.json`` through a temporary file and a rename (a crash never leaves half a file)."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        config.save_pretrained(tmp)
        os.replace(Path(tmp) / "config.json", folder / "config.json")


def calibrate_folder(folder: str, out: Optional[str] = None, **kwargs: Any) -> dict[str, Any]:
    """Calibrate a saved pretrained model; writes the config into ``out`` (a copy of the folder) or in place."""
    import shutil

    from ..face_comparison import FaceComparer

    comparer = FaceComparer.from_pretrained(folder, align="none")
    target = Path(out) if out else Path(folder)
    if out:
        if target.exists():
            raise FileExistsError(f"{out!r} exists; choose a new folder for the calibrated copy")
        shutil.copytree(folder, target)
    figures = calibrate_same_person(comparer.model, comparer.processor, **kwargs)
    write_config_atomically(comparer.model.config, str(target))
    tmp = target / "same_person_calibration.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2))
    os.replace(tmp, target / "same_person_calibration.json")
    return figures


def finish_model_folder(folder: str, out: Optional[str] = None, **kwargs: Any) -> dict[str, Any]:
    """What ``training/pretrain.py`` runs on its saved model: measure the same-person threshold (stored in the
    config, with a line in the model card) and make the folder a ``face-change-estimation`` pipeline folder."""
    from ..pipeline_comface import add_pipeline_to_folder

    figures = calibrate_folder(folder, out, **kwargs)
    target = Path(out or folder)
    add_pipeline_to_folder(str(target))
    card = target / "README.md"
    if card.is_file():
        line = (f"\n**Same-person check** (`comface compare`, the `face-change-estimation` pipeline): cosine of "
                f"g(f(.)) >= {figures['threshold']:.4f}; on held-out rendered identities it accepts "
                f"{100 * figures['far']:.1f}% of different-person pairs and rejects {100 * figures['frr']:.1f}% of "
                f"same-person pairs (AUC {figures['auc']:.3f}). Measured on rendered faces only: the embedded "
                "default's check did not separate real people on FG-NET (AUC 0.55, the project's BENCHMARKS.md); for "
                "photos use `comface compare --identity dlib`.\n")
        tmp = card.with_name(".README.md.tmp")
        text = card.read_text()
        text = text.split("\n**Same-person check**")[0].rstrip("\n") + "\n"  # a re-calibration replaces the line
        tmp.write_text(text + line)
        os.replace(tmp, card)
    return figures


__all__ = [
    "calibrate_folder", "calibrate_same_person", "error_rates", "finish_model_folder", "render_identity_pairs",
    "threshold_at_far",
]

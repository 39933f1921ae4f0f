"""Synthetic stand-ins for DISFA / Edema / FG-NET, rendered by the embedded generator from identities pretraining
never sees (so the protocol runs end to end without a research database)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from .schema import change_features

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Synthetic downstream tasks
# ---------------------------------------------------------------------------------------

#: Task -> generator attribute name. ``smile`` stands in for DISFA AU12 (lip corner puller),
#: ``weight`` for the dialysis weight change, ``age`` for FG-NET.
SYNTHETIC_TASK_ATTRIBUTES: dict[str, str] = {"smile": "smile", "weight": "weight", "age": "age"}


def _nuisance(image: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """Per-image capture variation: brightness/contrast jitter and a small translation.

    Pretraining pairs differ in one attribute only; real downstream pairs also differ in
    lighting and framing between sessions. This makes the synthetic tasks less trivial
    without changing the label (the attribute's alpha).
    """
    if strength <= 0:
        return image
    brightness = 1.0 + rng.uniform(-0.15, 0.15) * strength
    contrast = 1.0 + rng.uniform(-0.15, 0.15) * strength
    mean = image.mean()
    image = ((image - mean) * contrast + mean) * brightness
    size = image.shape[-1]
    max_shift = max(0, int(round(0.04 * size * strength)))
    if max_shift:
        dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        # Replicate-pad then crop: a translation without black borders giving the shift away.
        padded = torch.nn.functional.pad(image[None], (max_shift,) * 4, mode="replicate")[0]
        top, left = max_shift + dy, max_shift + dx
        image = padded[:, top : top + image.shape[-2], left : left + size]
    return image.clamp(0.0, 1.0)


def make_synthetic_task(
    task: str,
    num_subjects: int = 40,
    images_per_subject: int = 12,
    image_size: int = 112,
    seed: int = 0,
    identity_offset: int = 10_000_000,
    nuisance: float = 1.0,
    batch_size: int = 64,
    device: str = "cpu",
    generator: Any | None = None,
    generator_spec: Any | None = None,
) -> datasets.Dataset:
    """Render a synthetic downstream task with identities pretraining never saw.

    Since DISFA, Edema and FG-NET cannot be fetched, these tasks exercise the transfer
    pipeline end to end: ``"smile"`` (AU12 stand-in), ``"weight"`` and ``"age"``. Each
    subject is one generator identity ``identity_offset + i`` (pretraining uses identities
    ``0..N`` with ``N`` far below the offset); each image gets an alpha drawn from the
    pretraining grid ``{-5.0, -4.9, ..., 5.0}`` and that alpha is the image's ``value``.

    Nuisance: the generator's ``render`` applies one attribute per image, so a second
    attribute cannot be varied at the same time; instead each image gets small
    brightness/contrast jitter and a translation (``nuisance`` scales them; 0 disables).

    Args:
        task: ``"smile"``, ``"weight"`` or ``"age"``.
        num_subjects / images_per_subject: dataset size.
        image_size: rendered resolution.
        seed: seeds the alphas and the nuisance draws (and the generator when built
            here); same arguments, same dataset.
        identity_offset: first identity index; keep it above pretraining's range.
        nuisance: strength of the per-image capture variation.
        batch_size / device: rendering batch and device.
        generator: an already constructed ``EmbeddedFaceGenerator`` (reused to save the
            construction cost); built from ``generator_spec`` otherwise.
        generator_spec: the embedded generator to render with (a ``GeneratorSpec`` or its dict, e.g. a
            pretrained model's ``config.generator_spec``, so the task's faces come from the renderer the model
            learned on; its size becomes ``image_size``); default: the embedded renderer at ``seed``.

    Returns:
        ``datasets.Dataset`` with features ``image``, ``subject``, ``value`` like the
        real builders (single table; split by subject with :func:`subject_kfold`).
    """
    if task not in SYNTHETIC_TASK_ATTRIBUTES:
        raise ValueError(f"task must be one of {sorted(SYNTHETIC_TASK_ATTRIBUTES)}, got {task!r}")
    if num_subjects < 1 or images_per_subject < 2:
        raise ValueError("need num_subjects >= 1 and images_per_subject >= 2 (pairs are within subjects)")
    if generator is None:
        # Imported lazily: the generator module is heavier and not needed for real data.
        from comface_hf.synthesis.spec import build_generator, embedded_spec_for, specs_from_config

        # the model's renderer (version, growth; the default one without a spec), with the identities this task's
        # seed draws
        spec = embedded_spec_for(specs_from_config(generator_spec), image_size)
        generator = build_generator(dataclasses.replace(spec, seed=seed), device)
    attribute = int(generator.attribute_index(SYNTHETIC_TASK_ATTRIBUTES[task]))

    rng = np.random.default_rng([seed, 0x5EED, list(SYNTHETIC_TASK_ATTRIBUTES).index(task)])
    n = num_subjects * images_per_subject
    identities = np.repeat(np.arange(num_subjects, dtype=np.int64) + int(identity_offset), images_per_subject)
    # Alphas on the pretraining grid (step 0.1) so values are exact decimals.
    alphas = rng.integers(-50, 51, size=n).astype(np.float64) / 10.0

    images: list[Image.Image] = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            batch = generator.render(
                torch.as_tensor(identities[start:stop], dtype=torch.long),
                torch.full((stop - start,), attribute, dtype=torch.long),
                torch.as_tensor(alphas[start:stop], dtype=torch.float32),
            )
            for img in batch.detach().float().cpu():
                img = _nuisance(img, rng, nuisance)
                array = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
                images.append(Image.fromarray(array))
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "subject": [f"syn{int(i)}" for i in identities],
            "value": alphas.astype(np.float32).tolist(),
        },
        features=change_features(),
    )



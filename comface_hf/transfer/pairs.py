"""Same-subject change pairs, subject-disjoint folds and the pair dataset (paper Sec. 4.2).

* :func:`sample_change_pairs`, :func:`save_pairs`, :func:`load_pairs`: random same-subject pairs with about as many
  increases as decreases, saved so every method is evaluated on identical pairs.
* :func:`subject_kfold`: subject-disjoint four-fold cross-validation with 10% of the training subjects held out for
  validation.
* :class:`ChangePairDataset`: a ``torch.utils.data.Dataset`` returning ``{"pixel_values_x", "pixel_values_y", "labels"}``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Pairs (Sec. 4.2)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangePair:
    """One evaluation/training pair: images ``index_x`` and ``index_y`` of ``subject``.

    ``label = value_y - value_x`` is the signed change the model regresses (Sec. 3.4).
    """

    index_x: int
    index_y: int
    subject: str
    value_x: float
    value_y: float
    label: float


_PAIR_FIELDS = [f.name for f in fields(ChangePair)]


def sample_change_pairs(
    subjects: Sequence[Any],
    values: Sequence[float],
    num_pairs_per_subject: int = 100,
    seed: int = 0,
    allow_zero_change: bool = False,
) -> list[ChangePair]:
    """Draw random same-subject image pairs with about as many increases as decreases.

    For each subject, unordered pairs of its images are drawn without replacement (all of
    them when the subject has fewer than ``num_pairs_per_subject`` possible pairs), then
    oriented so half point "up" (``value_y > value_x``) and half "down". Balancing by
    orientation rather than by rejection keeps every drawn pair and makes the label
    distribution symmetric around zero, as in the paper's "approximately the same number
    of samples in the direction of increasing or decreasing changes".

    Args:
        subjects: subject id of every image (row order = image index).
        values: value of every image (same length as ``subjects``).
        num_pairs_per_subject: pairs to draw per subject (fewer if not that many exist).
        seed: makes the draw reproducible; the same inputs and seed give the same pairs.
        allow_zero_change: also draw pairs of equal value (label 0). Off by default since
            such pairs carry no direction; subjects whose images all share one value are
            then skipped with a warning.

    Returns:
        Pairs grouped by subject (subjects in sorted order).
    """
    if len(subjects) != len(values):
        raise ValueError(f"subjects ({len(subjects)}) and values ({len(values)}) must have the same length")
    if num_pairs_per_subject < 1:
        raise ValueError(f"num_pairs_per_subject must be >= 1, got {num_pairs_per_subject}")
    vals = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        bad = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise ValueError(f"values must be finite; index {bad} is {vals[bad]}")

    by_subject: dict[str, list[int]] = defaultdict(list)
    for index, subject in enumerate(subjects):
        by_subject[str(subject)].append(index)

    rng = random.Random(seed)
    pairs: list[ChangePair] = []
    skipped: list[str] = []
    flip_odd = False  # alternates the direction of each subject's odd pair out: global balance
    for subject in sorted(by_subject):
        indices = by_subject[subject]
        unordered = _draw_unordered_pairs(indices, vals, num_pairs_per_subject, rng, allow_zero_change)
        if not unordered:
            skipped.append(subject)
            continue
        rng.shuffle(unordered)
        n_up = len(unordered) // 2 + (1 if len(unordered) % 2 and flip_odd else 0)
        if len(unordered) % 2:
            flip_odd = not flip_odd
        for k, (a, b) in enumerate(unordered):
            lo, hi = (a, b) if vals[a] <= vals[b] else (b, a)
            # With allow_zero_change, equal-value pairs keep a random order (sign is moot).
            if vals[a] == vals[b]:
                lo, hi = (a, b) if rng.random() < 0.5 else (b, a)
            x, y = (lo, hi) if k < n_up else (hi, lo)
            pairs.append(
                ChangePair(
                    index_x=int(x),
                    index_y=int(y),
                    subject=subject,
                    value_x=float(vals[x]),
                    value_y=float(vals[y]),
                    label=float(vals[y] - vals[x]),
                )
            )
    if skipped:
        msg = (
            f"sample_change_pairs: no pair for {len(skipped)} subject(s) (fewer than two images"
            f"{'' if allow_zero_change else ' with different values'}): {', '.join(skipped[:10])}"
        )
        warnings.warn(msg, stacklevel=2)
    return pairs


def _draw_unordered_pairs(
    indices: Sequence[int], vals: np.ndarray, k: int, rng: random.Random, allow_zero: bool
) -> list[tuple[int, int]]:
    """Up to ``k`` distinct unordered pairs from ``indices`` (with differing values unless ``allow_zero``)."""
    n = len(indices)
    if n < 2:
        return []
    total = n * (n - 1) // 2
    if total <= 4 * k:
        # Small subject: enumerate every pair and pick without replacement.
        pool = [
            (indices[i], indices[j])
            for i in range(n)
            for j in range(i + 1, n)
            if allow_zero or vals[indices[i]] != vals[indices[j]]
        ]
        return rng.sample(pool, min(k, len(pool)))
    # Large subject (e.g. thousands of DISFA frames): rejection sampling avoids building
    # the quadratic pool. Bounded tries so a subject with few distinct values terminates.
    chosen: set[tuple[int, int]] = set()
    tries = 0
    while len(chosen) < k and tries < 50 * k:
        tries += 1
        i, j = rng.sample(range(n), 2)
        a, b = indices[min(i, j)], indices[max(i, j)]
        if allow_zero or vals[a] != vals[b]:
            chosen.add((a, b))
    return sorted(chosen)


def pairs_for_subjects(pairs: Iterable[ChangePair], subjects: Iterable[Any]) -> list[ChangePair]:
    """The pairs whose subject is in ``subjects`` (e.g. one fold's train/val/test)."""
    wanted = {str(s) for s in subjects}
    return [p for p in pairs if p.subject in wanted]


def save_pairs(pairs: Iterable[ChangePair], path: str | os.PathLike[str]) -> Path:
    """Save pairs as CSV (``.csv``) or JSON (``.json``) so every method uses identical pairs.

    Floats are written with ``repr`` precision, so :func:`load_pairs` round-trips exactly.
    """
    path = Path(path)
    rows = [asdict(p) for p in pairs]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"fields": _PAIR_FIELDS, "pairs": rows}, indent=0), encoding="utf-8")
    elif path.suffix.lower() == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=_PAIR_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    else:
        raise ValueError(f"save_pairs: use a .csv or .json path, got {str(path)!r}")
    return path


def load_pairs(path: str | os.PathLike[str]) -> list[ChangePair]:
    """Load pairs written by :func:`save_pairs` (CSV or JSON, by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair file {str(path)!r} not found; create it with save_pairs()")
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))["pairs"]
    elif path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        missing = set(_PAIR_FIELDS) - set(rows[0] if rows else _PAIR_FIELDS)
        if missing:
            raise ValueError(f"pair file {str(path)!r} lacks column(s) {sorted(missing)}")
    else:
        raise ValueError(f"load_pairs: use a .csv or .json path, got {str(path)!r}")
    return [
        ChangePair(
            index_x=int(r["index_x"]),
            index_y=int(r["index_y"]),
            subject=str(r["subject"]),
            value_x=float(r["value_x"]),
            value_y=float(r["value_y"]),
            label=float(r["label"]),
        )
        for r in rows
    ]


# ---------------------------------------------------------------------------------------
# Subject-disjoint cross-validation (Sec. 4.2)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold; the three subject lists are disjoint."""

    train: list[str]
    val: list[str]
    test: list[str]


def subject_kfold(
    subjects: Iterable[Any], n_folds: int = 4, seed: int = 0, val_fraction: float = 0.1
) -> list[Fold]:
    """Subject-disjoint k-fold split: test folds partition all subjects (Sec. 4.2).

    Splitting by subject (not by image or pair) evaluates generalisation to new people.
    In every fold, ``val_fraction`` of the remaining (training) subjects, at least one,
    is held out for validation (model selection / early stopping).

    Args:
        subjects: subject ids; duplicates (one entry per image) are fine.
        n_folds: number of folds (4 in the paper).
        seed: shuffles subjects before splitting.
        val_fraction: share of each fold's training subjects used for validation.
    """
    unique = sorted({str(s) for s in subjects})
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    # Each fold needs >= 1 test subject, >= 1 validation subject and >= 1 training subject.
    if len(unique) < n_folds + 2:
        raise ValueError(
            f"subject_kfold needs at least n_folds + 2 = {n_folds + 2} subjects, got {len(unique)}; "
            f"use fewer folds or more subjects"
        )
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    chunks = [list(c) for c in np.array_split(np.array(order, dtype=object), n_folds)]
    folds: list[Fold] = []
    for k, test in enumerate(chunks):
        rest = [s for j, c in enumerate(chunks) if j != k for s in c]
        n_val = max(1, int(round(val_fraction * len(rest))))
        val_idx = set(rng.choice(len(rest), size=n_val, replace=False).tolist())
        val = sorted(s for i, s in enumerate(rest) if i in val_idx)
        train = sorted(s for i, s in enumerate(rest) if i not in val_idx)
        folds.append(Fold(train=train, val=val, test=sorted(test)))
    return folds


# ---------------------------------------------------------------------------------------
# torch Dataset over pairs
# ---------------------------------------------------------------------------------------


def _default_transform(image: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor ``[3, H, W]`` in [0, 1] (no resizing or normalisation)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ChangePairDataset(torch.utils.data.Dataset):
    """Pairs of images of one subject with the signed change as label.

    Args:
        images: an HF ``datasets.Dataset`` with an ``image`` column (as produced by the
            downstream builders or :func:`make_synthetic_task`), or any indexable of PIL
            images / image tensors / file paths.
        pairs: pair table from :func:`sample_change_pairs` or :func:`load_pairs`.
        transform: maps one PIL image to a tensor ``[C, H, W]`` (resize, normalise,
            augment). Defaults to RGB float in [0, 1]. Tensors in ``images`` bypass it only
            when no transform is given.
        image_column: name of the image column when ``images`` is an HF dataset.

    Items are ``{"pixel_values_x", "pixel_values_y", "labels"}`` with ``labels`` a float32
    scalar ``value_y - value_x``.
    """

    def __init__(
        self,
        images: Any,
        pairs: Sequence[ChangePair],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        image_column: str = "image",
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        # Select the column once: indexing an HF dataset row would also decode other columns.
        if isinstance(images, datasets.Dataset):
            if image_column not in images.column_names:
                raise ValueError(
                    f"dataset has no {image_column!r} column (columns: {images.column_names})"
                )
            self.images = images.select_columns([image_column])
            self._column: str | None = image_column
        else:
            self.images = images
            self._column = None
        n = len(self.images)
        for p in self.pairs:
            if not (0 <= p.index_x < n and 0 <= p.index_y < n):
                raise IndexError(
                    f"pair {p} refers to an image index outside the {n} images; were the pairs "
                    f"sampled from a different (or differently filtered) dataset?"
                )

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> torch.Tensor:
        item = self.images[index]
        if self._column is not None:
            item = item[self._column]
        if isinstance(item, (str, os.PathLike)):
            item = Image.open(item)
        if isinstance(item, torch.Tensor) and self.transform is None:
            return item.float()
        if isinstance(item, Image.Image):
            item = item.convert("RGB")
        return (self.transform or _default_transform)(item)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.pairs[i]
        return {
            "pixel_values_x": self._load(p.index_x),
            "pixel_values_y": self._load(p.index_y),
            "labels": torch.tensor(p.label, dtype=torch.float32),
        }



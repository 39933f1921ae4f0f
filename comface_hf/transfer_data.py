"""Data side of ComFace transfer learning (paper Sec. 3.4 and 4.2-4.3).

Downstream tasks compare two face images ``x`` and ``y`` of one person and regress the
signed change ``value_y - value_x`` (AU intensity, weight, age). This module holds
everything between "a table of images with subject and value" and "a batch for the
model", plus the evaluation metrics:

* :func:`sample_change_pairs`, :func:`save_pairs`, :func:`load_pairs`: random same-subject
  pairs with about as many increases as decreases, saved so every method is evaluated on
  identical pairs (Sec. 4.2).
* :func:`subject_kfold`: subject-disjoint four-fold cross-validation with 10% of the
  training subjects held out for validation (Sec. 4.2).
* :class:`ChangePairDataset`: a ``torch.utils.data.Dataset`` returning
  ``{"pixel_values_x", "pixel_values_y", "labels"}``.
* :func:`make_synthetic_task`: synthetic stand-ins for DISFA / Edema / FG-NET rendered
  with the embedded generator from identities pretraining never sees.
* :func:`load_change_metrics`, :func:`compute_change_metrics`: MAE, Pearson correlation and
  direction accuracy as ``evaluate`` modules shipped in ``metrics/`` (Sec. 4.3).
* :class:`BuildReport` and :class:`ManualDataBuilder`: shared support for the
  ``dataset_builders/{disfa,fgnet,face_change}`` builders over user-provided files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import datasets
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

__all__ = [
    "BuildReport",
    "ChangePair",
    "ChangePairDataset",
    "Fold",
    "ManualDataBuilder",
    "LANDMARK_MODES",
    "ManualDataConfig",
    "METRICS_DIR",
    "NO_FACE_COLUMNS",
    "SYNTHETIC_TASK_ATTRIBUTES",
    "change_features",
    "compute_change_metrics",
    "face_features",
    "load_change_metrics",
    "load_pairs",
    "make_synthetic_task",
    "pairs_for_subjects",
    "sample_change_pairs",
    "save_pairs",
    "subject_kfold",
]

# ---------------------------------------------------------------------------------------
# Shared support for the downstream dataset builders
# ---------------------------------------------------------------------------------------

#: Report file written next to the Arrow files, so the report survives a cache reload.
BUILD_REPORT_FILENAME = "build_report.json"


#: Where a builder's landmarks come from (``ManualDataConfig.landmarks``).
LANDMARK_MODES: tuple[str, ...] = ("auto", "dataset", "detector", "none")


def face_features() -> dict[str, datasets.features.FeatureType]:
    """The face columns a real-photo builder stores next to each image, so alignment needs no second detection.

    ``landmarks`` ``[N, 2]`` in source pixels (pixel-index coordinates) in the layout ``landmark_scheme`` (see
    ``comface_hf.face_alignment.LANDMARK_SCHEMES``); ``landmark_source`` is ``"dataset"`` (the dataset's or the
    user's points), ``"detector"`` or ``""`` (``landmarks="none"``); ``face_score`` the detector's score (null for
    given landmarks); ``num_faces`` how many faces the detector saw (the largest is used); ``face_frame_side`` the
    side of the face frame in source pixels (how large the face is in the photo).
    """
    return {
        "landmarks": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=2)),
        "landmark_scheme": datasets.Value("string"),
        "landmark_source": datasets.Value("string"),
        "face_score": datasets.Value("float32"),
        "num_faces": datasets.Value("int32"),
        "face_frame_side": datasets.Value("float32"),
    }


#: The face columns of an image stored without landmarks (``landmarks="none"``).
NO_FACE_COLUMNS: dict[str, Any] = {
    "landmarks": [], "landmark_scheme": "", "landmark_source": "", "face_score": None, "num_faces": 0,
    "face_frame_side": None,
}


def change_features(faces: bool = False, **extra: datasets.features.FeatureType) -> datasets.Features:
    """Features shared by every downstream builder: ``image``, ``subject``, ``value``.

    ``faces=True`` adds the :func:`face_features` columns (real photographs; synthetic tasks are rendered in the
    face frame already). Task-specific columns (``frame`` for DISFA, ``timestamp`` for face_change) are passed
    as keyword arguments and appended after the shared ones.
    """
    return datasets.Features(
        {
            "image": datasets.Image(),
            "subject": datasets.Value("string"),
            "value": datasets.Value("float32"),
            **(face_features() if faces else {}),
            **extra,
        }
    )


@dataclass
class BuildReport:
    """What a builder kept and what it left out, available after ``download_and_prepare``.

    Attributes:
        num_candidates: images that passed the task's own filters (e.g. DISFA intensity
            1-5, subsampling) and were checked for readability.
        num_rows: rows written to the dataset.
        bad_images: ``"<file>: <reason>"`` for every unreadable or corrupt image skipped.
        no_face_images: images skipped because no face was found (or, with ``landmarks="dataset"``, none was
            given); they count towards ``max_bad_fraction`` like unreadable ones.
        multi_face_images: images in which the detector saw several faces (the largest was used).
        small_face_images: images whose face is small for ``face_size`` (kept, with a warning).
        single_image_subjects: subjects left out because fewer than two usable images
            remained (no pair can be formed from them).
        landmark_sources: how many kept images took their landmarks from the dataset, the detector, ...
        notes: other things worth knowing (ignored files, frame-count tolerance, ...).
    """

    num_candidates: int = 0
    num_rows: int = 0
    bad_images: list[str] = field(default_factory=list)
    no_face_images: list[str] = field(default_factory=list)
    multi_face_images: list[str] = field(default_factory=list)
    small_face_images: list[str] = field(default_factory=list)
    single_image_subjects: list[str] = field(default_factory=list)
    landmark_sources: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_bad_images(self) -> int:
        """Images left out: unreadable ones and those without a face."""
        return len(self.bad_images) + len(self.no_face_images)

    @property
    def bad_fraction(self) -> float:
        return self.num_bad_images / self.num_candidates if self.num_candidates else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildReport:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        return (
            f"{self.num_rows} rows from {self.num_candidates} candidate images; "
            f"{len(self.bad_images)} unreadable image(s) and {len(self.no_face_images)} without a face skipped; "
            f"{len(self.multi_face_images)} with several faces (largest used); "
            f"{len(self.single_image_subjects)} subject(s) with fewer than 2 images left out"
        )


@dataclass
class ManualDataConfig(datasets.BuilderConfig):
    """Options common to the downstream builders.

    Attributes:
        max_bad_fraction: fail when more than this fraction of candidate images is
            unreadable or shows no face; below it, such images are skipped and reported. A high
            fraction usually means a wrong folder or a broken copy rather than a few bad files.
        landmarks: where each image's face landmarks come from: ``"auto"`` (the dataset's or the
            user's landmarks when an image has them, else the face detector), ``"dataset"`` (only
            those; images without are skipped), ``"detector"`` (always detect) or ``"none"`` (no
            landmarks: images are used whole, as before alignment existed).
        detector: the face detector (``"dlib"``); its results are cached under the ``datasets``
            cache folder (``comface_landmarks/``), so a rebuild does not detect again.
        face_size: the side, in pixels, of the aligned crops these images are meant for (the model's
            input size). Faces whose frame spans fewer than half of it in the photo are kept but counted
            in ``build_report.small_face_images``, with a warning: they will be upsampled and blurred.
    """

    max_bad_fraction: float = 0.1
    landmarks: str = "auto"
    detector: str = "dlib"
    face_size: Optional[int] = None


def check_image_bytes(data: bytes) -> str | None:
    """Return why ``data`` is not a usable image, or ``None`` when it decodes fully.

    ``Image.load()`` decodes the whole image, which catches truncated files that
    ``Image.verify()`` or lazy opening would let through and that would otherwise only
    fail in the middle of training.
    """
    from .face_alignment import MIN_IMAGE_SIDE

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.width < MIN_IMAGE_SIDE or img.height < MIN_IMAGE_SIDE:
                return f"image is only {img.width}x{img.height} px: too small to show a face"
    except UnidentifiedImageError:
        return "not a recognised image format"
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"cannot decode image ({type(exc).__name__}: {exc})"
    return None


def read_checked_image(path: Path) -> tuple[bytes | None, str | None]:
    """Read ``path`` and check it decodes; returns ``(bytes, None)`` or ``(None, reason)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})"
    reason = check_image_bytes(data)
    return (None, reason) if reason else (data, None)


class ManualDataBuilder(datasets.GeneratorBasedBuilder):
    """Base for builders over files the user downloaded under a licence (``data_dir``).

    datasets 5 dropped the old ``manual_download_instructions`` machinery, so this base
    re-creates the useful part: a clear ``FileNotFoundError`` with the instructions when
    ``data_dir`` is missing, a :class:`BuildReport`, and errors from generation re-raised
    as the original ``ValueError``/``FileNotFoundError`` instead of the generic
    ``DatasetGenerationError`` that ``datasets`` wraps them in.
    """

    BUILDER_CONFIG_CLASS = ManualDataConfig
    #: Shown whenever ``data_dir`` is missing or laid out wrongly.
    manual_download_instructions: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._report: BuildReport | None = None
        self._landmark_cache: Any = None
        if self.config.landmarks not in LANDMARK_MODES:
            raise ValueError(
                f"landmarks={self.config.landmarks!r} is not one of {', '.join(LANDMARK_MODES)}: 'auto' uses the "
                "dataset's landmarks and detects the rest, 'dataset' only the dataset's, 'detector' always "
                "detects, 'none' stores no landmarks"
            )

    # -- face landmarks -------------------------------------------------------------

    def _detect_faces(self, data: bytes) -> list[Any]:
        """The detector's faces in one image (largest first), run once per distinct image content (cached)."""
        from .face_alignment import LandmarkCache, get_detector, image_key

        if self._landmark_cache is None:
            folder = os.path.join(self._cache_dir_root, "comface_landmarks")
            self._landmark_cache = LandmarkCache(folder, get_detector(self.config.detector))
        return self._landmark_cache.detect(image_key(data), data)

    def _face_columns(
        self, name: str, data: bytes, given: Any = None, given_scheme: str = "auto",
        detected: Optional[list[Any]] = None,
    ) -> dict[str, Any] | None:
        """The :func:`face_features` columns of one image, or ``None`` (counted in the report) when it has no face.

        ``given`` are landmarks the dataset or the user supplied for this image (used unless
        ``landmarks="detector"``); otherwise the detector runs (or ``detected`` is used when the caller already
        has the detections, e.g. smoothed across a video).
        """
        from .face_alignment import face_columns

        report = self._report
        mode = self.config.landmarks
        if mode == "none":
            return dict(NO_FACE_COLUMNS)
        if given is not None and mode in ("auto", "dataset"):
            columns = face_columns(given, given_scheme, "dataset")
        elif mode == "dataset":
            report.no_face_images.append(f"{name}: no landmarks given (landmarks='dataset')")
            return None
        else:
            faces = self._detect_faces(data) if detected is None else detected
            if not faces:
                report.no_face_images.append(f"{name}: no face found")
                return None
            if len(faces) > 1:
                report.multi_face_images.append(f"{name}: {len(faces)} faces, used the largest")
            columns = face_columns(faces[0].landmarks, faces[0].scheme, "detector", faces[0].score, len(faces))
        source = columns["landmark_source"]
        report.landmark_sources[source] = report.landmark_sources.get(source, 0) + 1
        from .face_alignment import MIN_SOURCE_FRACTION

        size = self.config.face_size
        if size and columns["face_frame_side"] < MIN_SOURCE_FRACTION * size:
            report.small_face_images.append(
                f"{name}: the face spans {columns['face_frame_side']:.0f} px, under half the {size} px crop"
            )
        return columns

    # -- data_dir handling ----------------------------------------------------------

    def _require_data_dir(self, dl_manager: Any) -> Path:
        """The user's ``data_dir`` as an existing path, or a ``FileNotFoundError`` explaining it."""
        manual_dir = getattr(dl_manager, "manual_dir", None) or self.config.data_dir
        if not manual_dir:
            raise FileNotFoundError(
                f"The {self.name!r} dataset cannot be downloaded automatically; pass "
                f"data_dir=<folder with your copy>.\n{self.manual_download_instructions}"
            )
        path = Path(os.path.expanduser(str(manual_dir))).resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"data_dir {str(path)!r} does not exist.\n{self.manual_download_instructions}"
            )
        return path

    # -- reporting ------------------------------------------------------------------

    def _new_report(self) -> BuildReport:
        self._report = BuildReport()
        return self._report

    def _check_bad_fraction(self, report: BuildReport, where: str) -> None:
        """Raise when too many images were unreadable or faceless; otherwise warn about the skipped ones."""
        skipped = report.bad_images + report.no_face_images
        if report.small_face_images:
            warnings.warn(
                f"{self.name}: {len(report.small_face_images)} face(s) are small for {self.config.face_size} px crops "
                f"and will be upsampled (see build_report.small_face_images). First: {report.small_face_images[0]}",
                stacklevel=2,
            )
        if report.multi_face_images:
            warnings.warn(
                f"{self.name}: {len(report.multi_face_images)} image(s) show several faces; the largest was used "
                f"(see build_report.multi_face_images). First: {report.multi_face_images[0]}",
                stacklevel=2,
            )
        if not skipped:
            return
        limit = float(self.config.max_bad_fraction)
        examples = "\n  ".join(skipped[:5])
        what = f"{len(report.bad_images)} unreadable or corrupt and {len(report.no_face_images)} without a face"
        if report.bad_fraction > limit:
            fix = "Check that the copy is complete"
            if report.no_face_images:
                fix += (
                    ", that the images show faces (or give their landmarks, or build with landmarks='none' to use "
                    "them whole)"
                )
            raise ValueError(
                f"{report.num_bad_images} of {report.num_candidates} images under {where} cannot be used ({what}; "
                f"{report.bad_fraction:.1%} > max_bad_fraction={limit:.0%}). First ones:\n  {examples}\n"
                f"{fix}, or raise max_bad_fraction to skip them anyway."
            )
        msg = (
            f"{self.name}: skipped {len(report.bad_images)} unreadable and {len(report.no_face_images)} faceless "
            f"image(s) of {report.num_candidates} under {where}; see builder.build_report. First ones:\n  {examples}"
        )
        # warnings (not logging) so callers and tests can catch it; also in build_report.
        warnings.warn(msg, stacklevel=2)

    def _drop_small_subjects(
        self, report: BuildReport, items_by_subject: dict[str, list[Any]]
    ) -> dict[str, list[Any]]:
        """Leave out subjects with fewer than two images (no pair possible), reporting them."""
        kept = {s: items for s, items in items_by_subject.items() if len(items) >= 2}
        dropped = sorted(s for s in items_by_subject if s not in kept)
        if dropped:
            report.single_image_subjects.extend(dropped)
            msg = (
                f"{self.name}: left out {len(dropped)} subject(s) with fewer than two usable "
                f"images (no same-subject pair possible): {', '.join(dropped[:10])}"
                + (" ..." if len(dropped) > 10 else "")
            )
            warnings.warn(msg, stacklevel=2)
        if not kept:
            raise ValueError(
                f"{self.name}: no subject has two or more usable images, so no change pair can be "
                f"formed. Subjects seen: {', '.join(sorted(items_by_subject)) or 'none'}."
            )
        return kept

    @property
    def build_report(self) -> BuildReport | None:
        """The report of the last build, or the one saved with a cached build; ``None`` if unbuilt."""
        if self._report is not None:
            return self._report
        path = os.path.join(self._output_dir, BUILD_REPORT_FILENAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self._report = BuildReport.from_dict(json.load(f))
        return self._report

    def _download_and_prepare(self, dl_manager: Any, verification_mode: Any, **kwargs: Any) -> None:
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **kwargs)
        except datasets.exceptions.DatasetGenerationError as exc:
            # Our own checks raise ValueError/FileNotFoundError with the fix in the message;
            # surface them instead of datasets' generic "An error occurred" wrapper.
            cause = exc.__cause__
            if isinstance(cause, (ValueError, FileNotFoundError)):
                raise cause from None
            raise
        finally:
            # Detections are kept even when the build stops (e.g. too many faceless images): fixing the data and
            # building again does not detect the same images again.
            if self._landmark_cache is not None:
                self._landmark_cache.save()
        if self._report is not None:
            # _output_dir is the temporary build folder here; it is renamed to the cache
            # folder on success, so the report is found again on a cached reload.
            with open(os.path.join(self._output_dir, BUILD_REPORT_FILENAME), "w", encoding="utf-8") as f:
                json.dump(self._report.to_dict(), f, indent=1)
            logger.info("%s: %s", self.name, self._report.summary())


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
            construction cost); built from ``image_size``/``seed``/``device`` otherwise.

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
        from comface_hf.synthesis import EmbeddedFaceGenerator

        generator = EmbeddedFaceGenerator(image_size=image_size, seed=seed, device=device)
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


# ---------------------------------------------------------------------------------------
# Metrics (Sec. 4.3): evaluate modules shipped in the repository
# ---------------------------------------------------------------------------------------

#: ``metrics/`` next to the package: the repository root for an editable install, site-packages for the wheel
#: (which carries it, see pyproject.toml).
METRICS_DIR: Path = Path(__file__).resolve().parents[1] / "metrics"
_METRIC_NAMES = ("mae", "pearson", "direction_accuracy")


def load_change_metrics(metrics_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load the MAE, Pearson and direction-accuracy ``evaluate`` modules from the repository.

    They are loaded by absolute path, which ``evaluate`` resolves locally without
    contacting the Hub (works with ``HF_HUB_OFFLINE=1``).
    """
    import evaluate  # lazy: only needed for evaluation

    root = Path(metrics_dir) if metrics_dir is not None else METRICS_DIR
    loaded = {}
    for name in _METRIC_NAMES:
        script = root / name / f"{name}.py"
        if not script.is_file():
            raise FileNotFoundError(
                f"metric script {str(script)!r} not found; the metrics ship in the repository's metrics/ "
                f"folder, which `pip install` puts next to comface_hf: reinstall comface_hf, or pass metrics_dir"
            )
        loaded[name] = evaluate.load(str(script.parent.resolve()))
    return loaded


def compute_change_metrics(
    predictions: Sequence[float] | np.ndarray | torch.Tensor,
    references: Sequence[float] | np.ndarray | torch.Tensor,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """``{"mae", "pearson", "direction_accuracy"}`` for predicted vs true changes.

    ``metrics`` may be the result of :func:`load_change_metrics` to avoid reloading.
    """
    metrics = metrics or load_change_metrics()
    preds = np.asarray(torch.as_tensor(predictions).detach().cpu(), dtype=np.float64).reshape(-1)
    refs = np.asarray(torch.as_tensor(references).detach().cpu(), dtype=np.float64).reshape(-1)
    if preds.shape != refs.shape:
        raise ValueError(f"predictions ({preds.size}) and references ({refs.size}) differ in length")
    out: dict[str, float] = {}
    for name in _METRIC_NAMES:
        result = metrics[name].compute(predictions=preds.tolist(), references=refs.tolist())
        out[name] = float(result[name])
    return out

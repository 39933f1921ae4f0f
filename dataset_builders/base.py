"""Shared support for the downstream dataset builders (``dataset_builders/{disfa,fgnet,face_change}``) over
user-provided files: the image/landmark features, the build report, the manual-data config and builder base.

Builders import it by absolute path (``from dataset_builders.base import ...``) because ``datasets`` loads a builder
script as a standalone module.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import datasets
from PIL import Image, UnidentifiedImageError

from comface_hf.face_alignment import ALIGN_MODES, OLD_ALIGN_SPELLINGS, align_mode
from comface_hf.transfer.schema import NO_FACE_COLUMNS, change_features, face_features  # noqa: F401  (re-exported for builders)

logger = logging.getLogger(__name__)


#: Report file written next to the Arrow files, so the report survives a cache reload.
BUILD_REPORT_FILENAME = "build_report.json"


#: Where a builder's landmarks come from (``ManualDataConfig.landmarks``): the package's one alignment vocabulary
#: (``comface_hf.face_alignment.ALIGN_MODES``), which ``--align`` and the image processor's ``align`` use too.
LANDMARK_MODES: tuple[str, ...] = ALIGN_MODES


@dataclass
class BuildReport:
    """What a builder kept and what it left out, available after ``download_and_prepare``.

    Attributes:
        num_candidates: images that passed the task's own filters (e.g. DISFA intensity
            1-5, subsampling) and were checked for readability.
        num_rows: rows written to the dataset.
        bad_images: ``"<file>: <reason>"`` for every unreadable or corrupt image skipped.
        no_face_images: images skipped because no face was found (or, with ``landmarks="landmarks"``, none was
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
        landmarks: where each image's face landmarks come from, in the words of
            ``comface_hf.face_alignment.ALIGN_MODES``: ``"auto"`` (the dataset's or the user's
            landmarks when an image has them, else the face detector; ``"face"`` is the same here:
            an image without a face is skipped either way), ``"landmarks"`` (only those; images
            without are skipped), ``"detector"`` (always detect) or ``"none"`` (no landmarks: images
            are used whole, as before alignment existed). The old ``"dataset"`` means ``"landmarks"``
            (DeprecationWarning).
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
    from comface_hf.image_io import MIN_IMAGE_SIDE

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
        if self.config.landmarks not in LANDMARK_MODES and self.config.landmarks not in OLD_ALIGN_SPELLINGS:
            raise ValueError(
                f"landmarks={self.config.landmarks!r} is not one of {', '.join(LANDMARK_MODES)}: 'auto' (or 'face') "
                "uses the dataset's landmarks and detects the rest, 'landmarks' only the dataset's, 'detector' always "
                "detects, 'none' stores no landmarks"
            )
        # Old spellings ("dataset") warn and become the shared word the builders below test for.
        self.config.landmarks = align_mode(self.config.landmarks, option="landmarks")

    # -- face landmarks -------------------------------------------------------------

    def _detect_faces(self, data: bytes) -> list[Any]:
        """The detector's faces in one image (largest first), run once per distinct image content (cached)."""
        from comface_hf.alignment import LandmarkCache, image_key
        from comface_hf.face_detector import get_detector

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
        from comface_hf.alignment import face_columns
        from comface_hf.face_alignment import landmark_source

        report = self._report
        mode = self.config.landmarks
        # The same rule align_face follows, so "auto", "landmarks" and "detector" pick landmarks alike everywhere.
        source = landmark_source(mode, given is not None)
        if mode == "none":
            return dict(NO_FACE_COLUMNS)
        if source == "given":
            columns = face_columns(given, given_scheme, "dataset")
        elif source is None:  # "landmarks" and this image has none
            report.no_face_images.append(f"{name}: no landmarks given (landmarks='landmarks')")
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
        from comface_hf.face_alignment import MIN_SOURCE_FRACTION

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


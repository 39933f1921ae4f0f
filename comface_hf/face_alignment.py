"""Real photographs in: the one function that brings a face into the canonical face frame, and its one vocabulary.

The frame itself is defined once, in :mod:`comface_hf.face_frame` (the FFHQ alignment rule the paper's StyleGAN
faces follow). How the package is laid out, by concern:

* :mod:`comface_hf.image_io`: :func:`load_image` (any image -> RGB ``PIL.Image``, or a clear ``ImageReadError``).
* :mod:`comface_hf.landmark_schemes`: landmark layouts (:data:`LANDMARK_SCHEMES`: iBUG's and FG-NET's 68 points,
  5-point detector output, eyes and mouth) and the three key points the frame needs (:func:`key_points`).
* :mod:`comface_hf.face_detector`: :class:`DlibFaceDetector` (dlib's HOG detector and 68-point predictor, on the CPU).
* this module: :data:`ALIGN_MODES` (the vocabulary), :func:`align_face` (the one alignment function),
  :class:`FaceAligner` (image + landmarks -> :class:`AlignedFace`) and :func:`warp_to_frame` (FFHQ's warp).
* :mod:`comface_hf.alignment` (dataset side only): ``.pts`` files, the columns a built dataset stores, the landmark
  cache, video smoothing.

The four flat modules above travel with a saved model as remote code (``transformers`` copies the files a pipeline
reaches through flat ``from .x import`` lines), so they import only each other, :mod:`~comface_hf.face_frame` and
:mod:`~comface_hf.errors`; their names stay importable from here. Names that moved to :mod:`comface_hf.alignment`
still import from here, with a ``DeprecationWarning``.

Coordinates: landmarks are in *pixel-index* coordinates (the centre of the top-left pixel is ``(0, 0)``), as dlib,
OpenCV, numpy indices and ``.pts`` files use them; :mod:`comface_hf.face_frame` works in pixel-edge coordinates and
the conversion (+0.5) happens here.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
from PIL import Image

from .errors import ComFaceInputError, ImageReadError, NoFaceError  # noqa: F401 (ImageReadError: re-exported)

# The private names are re-exported for code and tests that reach them here (tests patch the registry _DETECTORS).
from .face_detector import (  # noqa: F401
    _DETECTORS,
    DlibFaceDetector,
    FaceDetection,
    _dlib_model_path,
    get_detector,
)
from .face_frame import apply_matrix, frame_matrix, frame_quad
from .image_io import MIN_IMAGE_SIDE, ImageLike, describe, load_image
from .landmark_schemes import LANDMARK_SCHEMES, LandmarkScheme, guess_scheme, key_points

#: A face whose frame spans fewer source pixels than this fraction of the output size is upsampled by more than
#: 1 / fraction; it is still aligned, but reported as too small for the requested size.
MIN_SOURCE_FRACTION = 0.5

# ---------------------------------------------------------------------------------------------------------------------
# The vocabulary: how an image is brought into the frame, and where its landmarks come from
# ---------------------------------------------------------------------------------------------------------------------

#: The one set of words for alignment, used by ``ComFaceImageProcessor(align=...)``, ``FaceComparer(align=...)``, the
#: pipeline's ``align=``, ``comface compare/track --align``, ``training/transfer.py --align`` and the dataset
#: builders' ``landmarks=`` (see :data:`ALIGN_MODE_HELP`).
ALIGN_MODES: tuple[str, ...] = ("auto", "face", "landmarks", "detector", "none")
#: What each word means. A dataset builder cannot store a face it did not find, so for it "auto" and "face" are the
#: same: an image without a face is skipped and counted in its build report.
ALIGN_MODE_HELP: dict[str, str] = {
    "auto": "the given landmarks, else the face detector; an image with no face found is used whole, with a warning",
    "face": "the given landmarks, else the face detector; every image must show a face",
    "landmarks": "the given (dataset's or user's) landmarks only, never the detector; every image needs them",
    "detector": "always the face detector (given landmarks are ignored); every image must show a face",
    "none": "no alignment: the image is used whole (shorter side resized, centre crop)",
}
#: Spellings of the four vocabularies this one replaced -> the word that means the same (``True``/``False``: the
#: processor's, comparer's and pipeline's ``align``; ``"dataset"``: the builders' ``landmarks``). Accepted with a
#: DeprecationWarning; remove one release after 0.2.0.
OLD_ALIGN_SPELLINGS: dict[Any, str] = {True: "face", False: "none", "dataset": "landmarks"}


def align_mode(value: Any, option: str = "align") -> str:
    """``value`` as a word of :data:`ALIGN_MODES`; an old spelling (:data:`OLD_ALIGN_SPELLINGS`) warns and is
    translated, anything else raises a ``ComFaceInputError`` (a ``ValueError``) listing the words."""
    if isinstance(value, bool) or (isinstance(value, str) and value in OLD_ALIGN_SPELLINGS):
        new = OLD_ALIGN_SPELLINGS[value]
        warnings.warn(f"{option}={value!r} is deprecated: use {option}={new!r} (the alignment words are "
                      f"{', '.join(ALIGN_MODES)})", DeprecationWarning, stacklevel=3)
        return new
    if isinstance(value, str) and value in ALIGN_MODES:
        return value
    raise ComFaceInputError(f"{option} must be one of {', '.join(map(repr, ALIGN_MODES))}, got {value!r}")


def landmark_source(mode: str, has_landmarks: bool) -> Optional[str]:
    """Where one image's landmarks come from under ``mode``: ``"given"``, ``"detector"``, or ``None`` (no alignment:
    ``"none"``, or ``"landmarks"`` for an image without any). The one rule :func:`align_face` and the dataset builders
    (which store landmarks instead of aligning) both follow."""
    if mode == "none":
        return None
    if mode == "detector":
        return "detector"
    if has_landmarks:
        return "given"
    return None if mode == "landmarks" else "detector"


def has_landmarks(landmarks: Any) -> bool:
    """Whether ``landmarks`` holds points (a dataset row without a face stores an empty list)."""
    return landmarks is not None and len(landmarks) > 0


def align_face(
    image: ImageLike, mode: str = "auto", landmarks: Any = None, *, scheme: str = "auto",
    aligner: Optional["FaceAligner"] = None, size: int = 224, detections: Optional[list[FaceDetection]] = None,
) -> Optional["AlignedFace"]:
    """Bring one image into the face frame: the one function every caller aligns through (the image processor, the
    comparer behind ``comface compare/track`` and the pipeline, and the transfer protocol's row transform).

    Args:
        image: anything :func:`load_image` reads.
        mode: a word of :data:`ALIGN_MODES` (old spellings warn).
        landmarks: the face's ``[N, 2]`` landmarks (pixel-index coordinates, any layout of :data:`LANDMARK_SCHEMES`),
            or ``None``/empty.
        scheme: the landmarks' layout, or ``"auto"``.
        aligner: the :class:`FaceAligner` to use (its size, detector and options); one of ``size`` is made if omitted.
        detections: the detector's output for this image when already known (e.g. from a cache).

    Returns:
        the :class:`AlignedFace`, or ``None`` when the image is to be used whole: ``mode="none"``, or ``"auto"`` and no
        face was found (the caller warns; it knows how it names the image).

    Raises:
        NoFaceError: ``"face"``/``"detector"`` and no face found, or ``"landmarks"`` and none given.
    """
    mode = align_mode(mode)
    source = landmark_source(mode, has_landmarks(landmarks))
    if source is None:
        if mode == "landmarks":
            raise NoFaceError(f"no landmarks given for {describe(image)} and align='landmarks' never runs the "
                              "detector; give its landmarks, or use align='face'")
        return None
    aligner = aligner if aligner is not None else FaceAligner(size=size)
    try:
        return aligner.align(image, landmarks if source == "given" else None, scheme, detections=detections)
    except NoFaceError:
        if mode == "auto":
            return None
        raise


# ---------------------------------------------------------------------------------------------------------------------
# Warping into the frame
# ---------------------------------------------------------------------------------------------------------------------


def warp_to_frame(image: Image.Image, key_points_edge: np.ndarray, size: int) -> Image.Image:
    """The ``size x size`` frame cut from ``image`` around three key points in pixel-EDGE coordinates (FFHQ's warp).

    As in FFHQ's script: shrink first (antialiased) when the frame is much larger than the output, crop to the frame
    plus a border, pad by reflection where the frame leaves the photo (blurred and faded towards the median colour so
    the mirror image does not read as a second face), then one bilinear quad transform at 4x the output size and an
    antialiased downscale.
    """
    from scipy.ndimage import gaussian_filter

    quad = frame_quad(*key_points_edge)
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    img = image
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        new_size = (max(1, int(np.rint(img.width / shrink))), max(1, int(np.rint(img.height / shrink))))
        quad = quad * np.array([new_size[0] / img.width, new_size[1] / img.height])
        qsize *= new_size[0] / img.width
        img = img.resize(new_size, Image.LANCZOS)
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width), min(hi[1] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2], dtype=np.float64)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.width + border, 0),
                    max(hi[1] - img.height + border, 0)])
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.asarray(img, dtype=np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        h, w, _ = arr.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        # 0 inside the photo, rising to 1 at the outer edge of the padding.
        mask = np.maximum(
            1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
            1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]),
        )
        blur = qsize * 0.02
        arr += (gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad = quad + pad[:2]
    transform_size = 4 * size
    img = img.transform((transform_size, transform_size), Image.QUAD, tuple(quad.flatten()), Image.BILINEAR)
    return img.resize((size, size), Image.LANCZOS)


# ---------------------------------------------------------------------------------------------------------------------
# The aligner
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class AlignedFace:
    """A face warped into the canonical frame.

    Attributes:
        image: the ``size x size`` RGB crop.
        landmarks: ``[N, 2]`` landmarks in the source image (pixel-index coordinates), in ``scheme``.
        scheme: their layout (see :data:`LANDMARK_SCHEMES`).
        key_points: ``[3, 2]`` image-left eye, image-right eye, mouth centre in the source image (pixel-index).
        matrix: ``[2, 3]`` source pixel-index -> crop pixel-index coordinates.
        source: ``"landmarks"`` (given by a dataset or user) or ``"detector"``.
        score: the detector's score (``None`` for given landmarks).
        num_faces: faces the detector found (the largest was used); 1 for given landmarks.
        frame_side: the frame's side in source pixels (the face's scale in the photo).
        size: the crop's side in pixels.
        already_aligned: the image already was this frame (only resized, not warped).
    """

    image: Image.Image
    landmarks: np.ndarray
    scheme: str
    key_points: np.ndarray
    matrix: np.ndarray
    source: str
    score: Optional[float]
    num_faces: int
    frame_side: float
    size: int
    already_aligned: bool = False

    @property
    def too_small(self) -> bool:
        """The face spans fewer source pixels than :data:`MIN_SOURCE_FRACTION` of the crop: it was upsampled a lot."""
        return self.frame_side < MIN_SOURCE_FRACTION * self.size

    @property
    def crop_landmarks(self) -> np.ndarray:
        """The landmarks in the crop (pixel-index coordinates)."""
        return apply_matrix(self.matrix, self.landmarks)


@dataclass
class AlignmentFailure:
    """An image :meth:`FaceAligner.align_batch` could not align: its position, name and the reason."""

    index: int
    name: str
    reason: str
    error: Exception = field(repr=False, default=None)


def frame_side(key_points_index: np.ndarray) -> float:
    """The side of the face frame, in source pixels, for key points in pixel-index coordinates."""
    quad = frame_quad(*(np.asarray(key_points_index, dtype=np.float64) + 0.5))
    return float(np.hypot(*(quad[3] - quad[0])))


def _edge_matrix_to_index(matrix_edge: np.ndarray) -> np.ndarray:
    """Turn an edge-coordinate affine into the same map between pixel-index coordinates (p_edge = p_index + 0.5)."""
    linear, shift = matrix_edge[:, :2], matrix_edge[:, 2]
    return np.concatenate([linear, (shift + linear @ np.full(2, 0.5) - 0.5)[:, None]], axis=1)


class FaceAligner:
    """Bring photos into the canonical face frame (:mod:`comface_hf.face_frame`).

    Args:
        size: side of the aligned crops in pixels.
        detector: ``"dlib"`` (default), any object with ``detect(uint8[H, W, 3]) -> list[FaceDetection]``, or
            ``None`` (then every image needs landmarks).
        skip_if_aligned: an image that already is the frame (its key points within 2% of the side of where the frame
            puts them) is only resized, not warped again.
        warn_small: warn when a face spans fewer source pixels than half the crop (it is still aligned).

    Example:
        >>> aligner = FaceAligner(size=112)
        >>> face = aligner.align("photo.jpg")          # detector
        >>> face.image, face.score, face.num_faces
        >>> face = aligner.align("001A02.JPG", landmarks=read_pts("001a02.pts"), scheme="fgnet68")
    """

    def __init__(
        self, size: int = 224, detector: Union[str, Any, None] = "dlib", skip_if_aligned: bool = True,
        warn_small: bool = True,
    ):
        if int(size) < MIN_IMAGE_SIDE:
            raise ComFaceInputError(f"aligned crops need at least {MIN_IMAGE_SIDE} px, got size={size}")
        self.size = int(size)
        self.detector = get_detector(detector) if isinstance(detector, str) else detector
        self.skip_if_aligned = skip_if_aligned
        self.warn_small = warn_small

    def detect(self, image: ImageLike) -> list[FaceDetection]:
        """All faces the detector finds in ``image``, largest first."""
        if self.detector is None:
            raise ComFaceInputError("this FaceAligner has no detector (detector=None): pass landmarks")
        return self.detector.detect(np.asarray(load_image(image)))

    def align(
        self, image: ImageLike, landmarks: Optional[Any] = None, scheme: str = "auto",
        detections: Optional[list[FaceDetection]] = None,
    ) -> AlignedFace:
        """Warp one image into the frame.

        Args:
            image: anything :func:`load_image` reads.
            landmarks: ``[N, 2]`` landmarks of the face (pixel-index coordinates) in any known ``scheme``; when
                omitted the detector finds them (the largest face is used).
            scheme: the landmarks' layout, or ``"auto"`` (by their number; 68 points by geometry).
            detections: the detector's output for this image, when already known (e.g. from a cache).

        Raises:
            NoFaceError: no landmarks were given and the detector found no face.
            ImageReadError / FileNotFoundError: see :func:`load_image`.
        """
        name = describe(image)
        pil = load_image(image)
        if landmarks is not None:
            points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
            kp = key_points(points, scheme)
            used_scheme = guess_scheme(points) if scheme == "auto" else scheme
            limit = 0.5 * max(pil.size)
            if np.any(kp < -limit) or np.any(kp[:, 0] > pil.width + limit) or np.any(kp[:, 1] > pil.height + limit):
                raise ComFaceInputError(
                    f"the landmarks given for {name} lie far outside its {pil.width}x{pil.height} pixels; were they "
                    "made for another image or another size?"
                )
            source, score, num_faces = "landmarks", None, 1
        else:
            if detections is None:
                if self.detector is None:
                    raise ComFaceInputError(f"no landmarks for {name} and this aligner has no detector")
                detections = self.detector.detect(np.asarray(pil))
            if not detections:
                raise NoFaceError(
                    f"no face found in {name}; check that it shows a face (frontal, eyes visible, at least ~40 px "
                    "wide), or give its landmarks"
                )
            face = detections[0]
            points, used_scheme = face.landmarks, face.scheme
            kp = key_points(points, used_scheme)
            source, score, num_faces = "detector", face.score, len(detections)
        return self._warp(pil, name, points, used_scheme, kp, source, score, num_faces)

    def _warp(self, pil, name, points, scheme, kp, source, score, num_faces) -> AlignedFace:
        kp_edge = kp + 0.5
        matrix_edge = frame_matrix(*kp_edge, size=self.size)
        side = frame_side(kp)
        already = False
        if self.skip_if_aligned and pil.width == pil.height:
            # Already the frame: the frame's corners land on the image's corners (within 2% of the side).
            corners = np.array([[0, 0], [0, pil.height], [pil.width, pil.height], [pil.width, 0]], dtype=np.float64)
            already = bool(np.abs(frame_quad(*kp_edge) - corners).max() <= 0.02 * pil.width)
        if already:
            crop = pil.resize((self.size, self.size), Image.LANCZOS) if pil.width != self.size else pil.copy()
            scale = self.size / pil.width
            matrix_edge = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
        else:
            crop = warp_to_frame(pil, kp_edge, self.size)
        result = AlignedFace(
            image=crop, landmarks=np.asarray(points, dtype=np.float64), scheme=scheme, key_points=kp,
            matrix=_edge_matrix_to_index(matrix_edge), source=source, score=score, num_faces=num_faces,
            frame_side=side, size=self.size, already_aligned=already,
        )
        if self.warn_small and result.too_small:
            warnings.warn(
                f"the face in {name} spans only {side:.0f} px of the photo, less than half the {self.size} px "
                "crop: it is upsampled and will look blurred; use a larger photo or a smaller model input",
                stacklevel=3,
            )
        return result

    def align_batch(
        self, images: Sequence[ImageLike], landmarks: Optional[Sequence[Optional[Any]]] = None, scheme: str = "auto",
        on_error: str = "raise",
    ) -> list[Union[AlignedFace, AlignmentFailure]]:
        """Align several images (each with optional landmarks); the detector runs once per image.

        ``on_error="skip"`` returns an :class:`AlignmentFailure` (with the image's name and the reason) in place of
        each image that cannot be aligned (no face, unreadable) instead of raising, so the rest are still processed.
        """
        if on_error not in ("raise", "skip"):
            raise ComFaceInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if landmarks is not None and len(landmarks) != len(images):
            raise ComFaceInputError(f"{len(images)} images but {len(landmarks)} landmark entries")
        out: list[Union[AlignedFace, AlignmentFailure]] = []
        for i, image in enumerate(images):
            try:
                out.append(self.align(image, None if landmarks is None else landmarks[i], scheme))
            except (ComFaceInputError, FileNotFoundError) as exc:
                if on_error == "raise":
                    raise
                out.append(AlignmentFailure(i, describe(image), str(exc), exc))
        return out


#: Names that moved to the dataset-side subpackage :mod:`comface_hf.alignment` -> their module there. Looked up
#: lazily (not imported at the top) so that this module's remote-code copy never needs that subpackage.
_MOVED_TO_ALIGNMENT: dict[str, str] = {
    "LandmarkCache": "cache", "image_key": "cache", "face_columns": "landmark_files", "read_pts": "landmark_files",
    "smooth_landmark_tracks": "video",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_ALIGNMENT:
        module = f"comface_hf.alignment.{_MOVED_TO_ALIGNMENT[name]}"
        warnings.warn(f"comface_hf.face_alignment.{name} moved to {module}.{name} (also exported by "
                      "comface_hf.alignment); import it from there", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALIGN_MODES",
    "ALIGN_MODE_HELP",
    "AlignedFace",
    "AlignmentFailure",
    "DlibFaceDetector",
    "FaceAligner",
    "FaceDetection",
    "LANDMARK_SCHEMES",
    "LandmarkScheme",
    "MIN_IMAGE_SIDE",
    "MIN_SOURCE_FRACTION",
    "OLD_ALIGN_SPELLINGS",
    "align_face",
    "align_mode",
    "describe",
    "frame_side",
    "get_detector",
    "guess_scheme",
    "has_landmarks",
    "key_points",
    "landmark_source",
    "load_image",
    "warp_to_frame",
]

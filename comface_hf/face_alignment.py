"""Real photographs in: read any image, find the face and its landmarks, warp it into the canonical face frame.

The frame itself is defined once, in :mod:`comface_hf.face_frame` (the FFHQ alignment rule the paper's StyleGAN
faces follow); this module brings real images into it:

* :func:`load_image`: a path, bytes, PIL image, numpy array or torch tensor -> an RGB ``PIL.Image`` (EXIF orientation
  applied; greyscale, palette, RGBA, 16-bit, float and CMYK images converted), or a clear :class:`ImageReadError`.
* Landmarks, in this order of preference: those a dataset or user provides (any scheme in :data:`LANDMARK_SCHEMES`:
  FG-NET's and iBUG's 68 points, 5-point detector output, or the two eyes and the mouth), else the detector.
* :class:`DlibFaceDetector`: dlib's HOG face detector and its 68-point shape predictor. Both run on the CPU and their
  weights are inside registry packages (the detector in ``dlib-bin`` itself, the predictor in
  ``face-recognition-models``), so nothing is downloaded. Chosen over MediaPipe on measurements (BENCHMARKS.md): on
  FG-NET it found 98.6% of the faces with a normalised landmark error of 0.031 at ~55 images/s on 2 cores;
  MediaPipe's face mesh found 100% (error 0.033) 3x faster, but its last release that ships its weights (0.10.14)
  pins protobuf < 5, which breaks TensorBoard >= 2.20 (measured), and later releases download their models. FFHQ
  itself was aligned with these same dlib landmarks.
* :class:`FaceAligner`: image (+ optional landmarks) -> :class:`AlignedFace` (the crop, landmarks, key points, the
  source-to-crop matrix, the detector's score and the number of faces found); batches with :meth:`FaceAligner.align_batch`.
* :class:`LandmarkCache`: detector results keyed by the image's bytes, kept with a built dataset so a rebuild does
  not detect again; :func:`smooth_landmark_tracks` steadies landmarks across the frames of a video.

Coordinates: landmarks are in *pixel-index* coordinates (the centre of the top-left pixel is ``(0, 0)``), as dlib,
OpenCV, numpy indices and ``.pts`` files use them; :mod:`comface_hf.face_frame` works in pixel-edge coordinates and
the conversion (+0.5) happens here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ComFaceInputError, ImageReadError, NoFaceError
from .face_frame import apply_matrix, frame_matrix, frame_quad

#: Images smaller than this on either side cannot show a face the aligner or a model can use.
MIN_IMAGE_SIDE = 16
#: A face whose frame spans fewer source pixels than this fraction of the output size is upsampled by more than
#: 1 / fraction; it is still aligned, but reported as too small for the requested size.
MIN_SOURCE_FRACTION = 0.5

# ---------------------------------------------------------------------------------------------------------------------
# Reading images
# ---------------------------------------------------------------------------------------------------------------------

ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, Any]


def describe(image: Any) -> str:
    """A short name for an image in messages: its path, or its type and shape."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, dict) and image.get("path"):
        return str(image["path"])
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or f"PIL image {image.size[0]}x{image.size[1]} {image.mode}"
    shape = getattr(image, "shape", None)
    return f"{type(image).__name__} of shape {tuple(shape)}" if shape is not None else type(image).__name__


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """An image array of any common dtype/layout -> ``uint8[H, W, 3|4]`` or ``uint8[H, W]``."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first (torch layout) -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageReadError(
            f"cannot read {name}: expected an image array [H, W], [H, W, C] or [C, H, W] with C in (1, 3, 4), "
            f"got shape {tuple(array.shape)}"
        )
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max(initial=0) > 255):
        # 16-bit scans and TIFFs: scale the full range, do not clip it.
        return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ImageReadError(f"cannot read {name}: the image array holds NaN or infinite values")
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0  # [0, 1] floats, else already 0-255
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    raise ImageReadError(f"cannot read {name}: unsupported array dtype {array.dtype}")


def _pil_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited over white, 16-bit and float images are rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_array_to_uint8(np.asarray(image), name)).convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr, LAB, HSV


def load_image(image: ImageLike, *, min_side: int = MIN_IMAGE_SIDE) -> Image.Image:
    """Read any image into an RGB ``PIL.Image`` with its EXIF orientation applied.

    Accepts a file path, ``bytes``, a ``datasets`` image dict (``{"bytes", "path"}``), a PIL image, a numpy array
    or a torch tensor (``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``; uint8, uint16 or floats in [0, 1]). Greyscale,
    palette, RGBA (over white), 16-bit, float and CMYK images become 8-bit RGB. The whole file is decoded here, so a
    truncated file fails now rather than later.

    Raises:
        FileNotFoundError: a path that does not exist.
        ImageReadError: not an image, truncated or corrupt, an unusable array, or smaller than ``min_side`` pixels.
    """
    name = describe(image)
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            image = image["bytes"]
        elif image.get("path"):
            image = image["path"]
        else:
            raise ImageReadError(f"cannot read {name}: an image dict needs 'bytes' or 'path'")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image {str(path)!r} does not exist; check the path")
        if path.is_dir():
            raise ImageReadError(f"{str(path)!r} is a folder, not an image file")
        try:
            image = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            pil = Image.open(io.BytesIO(bytes(image)))
            pil.load()  # decode everything now: truncated files fail here
        except UnidentifiedImageError:
            raise ImageReadError(f"cannot read {name}: not a recognised image format (is it an image file?)") from None
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise ImageReadError(
                f"cannot read {name}: the file is damaged or truncated ({type(exc).__name__}: {exc}); "
                "re-export or re-copy it"
            ) from None
        image = pil
    if isinstance(image, Image.Image):
        try:
            image = ImageOps.exif_transpose(image)  # phone photos: the pixels are stored sideways
        except Exception:  # a damaged EXIF block must not lose the picture
            pass
        rgb = _pil_to_rgb(image, name)
    elif hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor, without importing torch here
        rgb = Image.fromarray(_array_to_uint8(image.detach().cpu().numpy(), name)).convert("RGB")
    elif isinstance(image, np.ndarray):
        rgb = Image.fromarray(_array_to_uint8(image, name)).convert("RGB")
    else:
        raise ImageReadError(
            f"cannot read {name}: pass a file path, bytes, a PIL image, a numpy array or a torch tensor"
        )
    if min(rgb.size) < min_side:
        raise ImageReadError(
            f"{name} is only {rgb.size[0]}x{rgb.size[1]} pixels: too small to show a face (at least {min_side} px "
            "on each side); pass the original photo"
        )
    return rgb


# ---------------------------------------------------------------------------------------------------------------------
# Landmark schemes: which points are the eyes and the mouth
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandmarkScheme:
    """Where a landmark scheme keeps the points the frame needs.

    The image-left eye's centre is the mean of ``eye_left`` (likewise ``eye_right``); the mouth's centre is the mean
    of ``mouth`` (its two corners, or the centre itself).
    """

    name: str
    num_points: int
    eye_left: tuple[int, ...]
    eye_right: tuple[int, ...]
    mouth: tuple[int, ...]
    description: str


#: Landmark layouts the aligner understands. "left"/"right" are image sides.
LANDMARK_SCHEMES: dict[str, LandmarkScheme] = {
    s.name: s
    for s in (
        LandmarkScheme(
            "ibug68", 68, tuple(range(36, 42)), tuple(range(42, 48)), (48, 54),
            "iBUG 300-W / Multi-PIE 68 points (dlib, face_alignment, OpenFace): eye contours 36-41 and 42-47, "
            "mouth corners 48 and 54",
        ),
        LandmarkScheme(
            "fgnet68", 68, (31,), (36,), (48, 54),
            "FG-NET's own 68-point markup: pupils 31 (image-left) and 36, mouth corners 48 and 54 (not iBUG order)",
        ),
        LandmarkScheme(
            "five_point", 5, (0,), (1,), (3, 4),
            "5 points as MTCNN, RetinaFace and ArcFace give them: left eye, right eye, nose tip, left and right "
            "mouth corners",
        ),
        LandmarkScheme("three_point", 3, (0,), (1,), (2,), "left eye centre, right eye centre, mouth centre"),
    )
}


def _plausible_eyes(points: np.ndarray, scheme: LandmarkScheme, face_width: float) -> bool:
    left, right = points[list(scheme.eye_left)].mean(0), points[list(scheme.eye_right)].mean(0)
    ratio = np.hypot(*(right - left)) / max(face_width, 1e-9)
    return 0.2 <= ratio <= 0.8  # eye centres sit 30-55% of the face width apart in any pose the aligner handles


def guess_scheme(landmarks: np.ndarray) -> str:
    """The scheme of a landmark array by its length.

    68 points are read as iBUG's layout (the common one) when its eyes are plausibly placed, else as FG-NET's
    markup when that fits (FG-NET's points read in iBUG order put both "eyes" on the nose).

    Raises:
        ComFaceInputError: an unknown number of points, or 68 points that fit neither 68-point layout.
    """
    n = len(landmarks)
    if n == 68:
        width = float(np.ptp(landmarks[:, 0]))
        for name in ("ibug68", "fgnet68"):
            if _plausible_eyes(landmarks, LANDMARK_SCHEMES[name], width):
                return name
        raise ComFaceInputError(
            "68 landmarks whose eyes fit neither the iBUG nor the FG-NET layout; check them, or name the scheme "
            "(scheme='ibug68' or 'fgnet68')"
        )
    for scheme in LANDMARK_SCHEMES.values():
        if scheme.num_points == n:
            return scheme.name
    known = ", ".join(f"{s.name} ({s.num_points})" for s in LANDMARK_SCHEMES.values())
    raise ComFaceInputError(f"cannot use {n} landmarks: known layouts are {known}")


def key_points(landmarks, scheme: str = "auto") -> np.ndarray:
    """``float64[3, 2]``: image-left eye centre, image-right eye centre and mouth centre, in the landmarks' coordinates.

    If the scheme's eyes come out mirrored (the mouth on the wrong side of the eye line, as when a layout names eyes
    by the person's side), the two eyes are swapped so the frame is never upside down.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        points = points.reshape(-1, 2) if points.size % 2 == 0 else points
    if points.ndim != 2 or points.shape[1] != 2:
        raise ComFaceInputError(f"landmarks must be pairs of (x, y) coordinates, got shape {np.shape(landmarks)}")
    if not np.all(np.isfinite(points)):
        raise ComFaceInputError("landmarks hold NaN or infinite coordinates; fix or drop them")
    name = guess_scheme(points) if scheme == "auto" else scheme
    if name not in LANDMARK_SCHEMES:
        raise ComFaceInputError(f"unknown landmark scheme {name!r}; known: {', '.join(LANDMARK_SCHEMES)} or 'auto'")
    layout = LANDMARK_SCHEMES[name]
    if len(points) != layout.num_points:
        raise ComFaceInputError(f"scheme {name!r} has {layout.num_points} points, got {len(points)}")
    left = points[list(layout.eye_left)].mean(0)
    right = points[list(layout.eye_right)].mean(0)
    mouth = points[list(layout.mouth)].mean(0)
    eye_to_eye, eye_to_mouth = right - left, mouth - (left + right) / 2
    if eye_to_eye[0] * eye_to_mouth[1] - eye_to_eye[1] * eye_to_mouth[0] < 0:
        left, right = right, left
    return np.stack([left, right, mouth])


def read_pts(path: Union[str, os.PathLike]) -> np.ndarray:
    """Landmarks from a ``.pts`` file (``version: 1``, ``n_points: N``, then ``x y`` lines in braces): ``[N, 2]``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        header, body = text.split("{", 1)
        body = body.split("}", 1)[0]
        values = np.array(body.split(), dtype=np.float64)
        declared = [int(line.split(":")[1]) for line in header.splitlines() if line.strip().startswith("n_points")]
    except (OSError, ValueError, IndexError) as exc:
        raise ComFaceInputError(
            f"cannot read landmarks from {str(path)!r} ({exc}); expected a .pts file: 'version: 1', 'n_points: N', "
            "then N lines 'x y' between '{' and '}'"
        ) from None
    if values.size % 2 or (declared and declared[0] * 2 != values.size):
        raise ComFaceInputError(
            f"{str(path)!r} declares {declared[0] if declared else '?'} points but holds {values.size} numbers"
        )
    return values.reshape(-1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class FaceDetection:
    """One face found by a detector: ``landmarks`` ``[N, 2]`` (pixel-index coordinates), its ``scheme``, the face
    ``box`` ``(x0, y0, x1, y1)`` and the detector's ``score`` (higher is surer)."""

    landmarks: np.ndarray
    scheme: str
    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict[str, Any]:
        return {"landmarks": np.round(self.landmarks, 3).tolist(), "scheme": self.scheme,
                "box": [round(float(v), 3) for v in self.box], "score": float(self.score)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceDetection:
        return cls(np.asarray(data["landmarks"], dtype=np.float64), data["scheme"], tuple(data["box"]), data["score"])


def _dlib_model_path() -> Path:
    """The 68-point predictor inside face-recognition-models, found without importing that package.

    (Its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ships.)
    """
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the face detector needs the package face-recognition-models (the dlib landmark weights): "
            "pip install face-recognition-models"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise ImportError(f"{path} is missing; reinstall face-recognition-models")
    return path


class DlibFaceDetector:
    """dlib's HOG face detector + 68-point shape predictor (iBUG layout), on the CPU, weights from registry packages.

    Args:
        upsample: detection passes, tried in order until a face is found: 0 = the image as it is, 1 = doubled (finds
            faces down to ~40 px, 4x slower). The default tries 0 then 1.
        max_side: images are shrunk to at most this side for *detection* (HOG on a 12-megapixel phone photo takes
            seconds); the landmarks are then placed on the full-resolution image.
        min_score: detections scoring below this are ignored (dlib's default threshold is 0).
        relative_score: detections scoring below this fraction of the best one are ignored too: HOG's false
            positives (a badge, a pattern) score near 0 while faces in one photo score alike, and "the largest
            face" must not be a large false positive.
    """

    name = "dlib-hog-shape68"

    def __init__(
        self, upsample: Sequence[int] = (0, 1), max_side: int = 1024, min_score: float = 0.0, relative_score: float = 0.3
    ):
        self.upsample, self.max_side, self.min_score = tuple(int(u) for u in upsample), int(max_side), float(min_score)
        self.relative_score = float(relative_score)
        self._detector = self._predictor = None

    def __getstate__(self) -> dict:
        # dlib objects do not pickle (DataLoader workers, datasets.map): each process loads its own.
        return {**self.__dict__, "_detector": None, "_predictor": None}

    def _load(self) -> None:
        if self._detector is not None:
            return
        try:
            import dlib
        except ImportError:
            raise ImportError("the face detector needs dlib: pip install dlib-bin face-recognition-models") from None
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(_dlib_model_path()))
        self._rectangle = dlib.rectangle

    @property
    def cache_id(self) -> str:
        """Identifies this detector and its settings in a :class:`LandmarkCache`."""
        import dlib

        return (
            f"{self.name}-{dlib.__version__}-up{''.join(map(str, self.upsample))}-max{self.max_side}"
            f"-min{self.min_score:g}-rel{self.relative_score:g}"
        )

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB ``uint8[H, W, 3]`` image, largest first."""
        self._load()
        image = np.ascontiguousarray(image)
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = image
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        rects, scores = [], []
        for upsample in self.upsample:
            found, found_scores, _ = self._detector.run(small, upsample, self.min_score)
            rects, scores = list(found), list(found_scores)
            if rects:
                break
        faces = []
        best = max(scores, default=0.0)
        for rect, score in zip(rects, scores):
            if score < self.relative_score * best:
                continue
            box = tuple(v / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            full = self._rectangle(*(int(round(v)) for v in box))
            shape = self._predictor(image, full)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(FaceDetection(points, "ibug68", box, float(score)))
        return sorted(faces, key=lambda f: f.area, reverse=True)


_DETECTORS: dict[str, Any] = {}


def get_detector(name: str = "dlib") -> DlibFaceDetector:
    """The shared detector instance for ``name`` (``"dlib"``), loaded on first use."""
    if name not in ("dlib", DlibFaceDetector.name):
        raise ComFaceInputError(f"unknown face detector {name!r}; available: 'dlib'")
    if name not in _DETECTORS:
        _DETECTORS[name] = DlibFaceDetector()
    return _DETECTORS[name]


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


def face_columns(
    landmarks: Any, scheme: str = "auto", source: str = "dataset", score: Optional[float] = None, num_faces: int = 1
) -> dict[str, Any]:
    """A face's landmarks as the columns a dataset stores (``comface_hf.transfer.schema.face_features``); checks them."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    scheme = guess_scheme(points) if scheme == "auto" else scheme
    kp = key_points(points, scheme)
    return {
        "landmarks": points.astype(np.float32).tolist(),
        "landmark_scheme": scheme,
        "landmark_source": source,
        "face_score": None if score is None else float(score),
        "num_faces": int(num_faces),
        "face_frame_side": frame_side(kp),
    }


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


# ---------------------------------------------------------------------------------------------------------------------
# Caching detections with a built dataset, and steadying them across video frames
# ---------------------------------------------------------------------------------------------------------------------


def image_key(data: Union[bytes, np.ndarray]) -> str:
    """A content key for an image: SHA-256 of its file bytes (or of its pixels and shape)."""
    digest = hashlib.sha256()
    if isinstance(data, np.ndarray):
        digest.update(str(data.shape).encode())
        digest.update(np.ascontiguousarray(data).tobytes())
    else:
        digest.update(bytes(data))
    return digest.hexdigest()


class LandmarkCache:
    """Detector results on disk, keyed by image content: a rebuild of a dataset finds them and does not detect again.

    One JSON file per detector setting (``<folder>/<detector.cache_id>.json``), written atomically by :meth:`save`.
    """

    def __init__(self, folder: Union[str, os.PathLike], detector: Any):
        self.detector = detector
        self.path = Path(folder) / f"{getattr(detector, 'cache_id', type(detector).__name__)}.json"
        self._entries: dict[str, list[dict]] = {}
        self._dirty = False
        if self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                warnings.warn(f"ignoring the damaged landmark cache {self.path}; faces will be detected again")
        self.hits = self.misses = 0

    def detect(self, key: str, image: Union[Image.Image, np.ndarray, Any]) -> list[FaceDetection]:
        """The detections for the image with content ``key``: cached, or detected now and remembered."""
        if key in self._entries:
            self.hits += 1
            return [FaceDetection.from_dict(d) for d in self._entries[key]]
        self.misses += 1
        faces = self.detector.detect(np.asarray(load_image(image)))
        self._entries[key] = [f.to_dict() for f in faces]
        self._dirty = True
        return faces

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self._entries), encoding="utf-8")
        os.replace(tmp, self.path)
        self._dirty = False


def smooth_landmark_tracks(
    frame_numbers: Sequence[int], landmarks: Sequence[Optional[np.ndarray]], sigma: float = 2.0
) -> list[Optional[np.ndarray]]:
    """Steady a video's landmarks: a Gaussian-weighted average over neighbouring frames (``sigma`` in frames).

    Detector landmarks jitter by a pixel or two from frame to frame, which a change model would read as change.
    Frames far apart (e.g. after subsampling) get almost no weight from each other, so smoothing never blends
    different moments; a frame with no detection (``None``) takes the average of its neighbours within ``3 sigma``,
    or stays ``None``.
    """
    frames = np.asarray(frame_numbers, dtype=np.float64)
    present = [i for i, lm in enumerate(landmarks) if lm is not None]
    if not present or sigma <= 0:
        return [None if lm is None else np.asarray(lm, dtype=np.float64) for lm in landmarks]
    stack = np.stack([np.asarray(landmarks[i], dtype=np.float64) for i in present])
    out: list[Optional[np.ndarray]] = []
    for f in frames:
        distance = frames[present] - f
        weights = np.exp(-0.5 * (distance / sigma) ** 2) * (np.abs(distance) <= 3 * sigma)
        if weights.sum() <= 0:
            out.append(None)
            continue
        out.append(np.tensordot(weights / weights.sum(), stack, axes=1))
    return out


__all__ = [
    "AlignedFace",
    "AlignmentFailure",
    "DlibFaceDetector",
    "FaceAligner",
    "FaceDetection",
    "LANDMARK_SCHEMES",
    "LandmarkCache",
    "LandmarkScheme",
    "MIN_IMAGE_SIDE",
    "MIN_SOURCE_FRACTION",
    "describe",
    "face_columns",
    "frame_side",
    "get_detector",
    "guess_scheme",
    "image_key",
    "key_points",
    "load_image",
    "read_pts",
    "smooth_landmark_tracks",
    "warp_to_frame",
]

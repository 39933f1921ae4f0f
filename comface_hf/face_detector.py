"""The face detector: dlib's HOG face detector and its 68-point shape predictor, and what it reports per face.

Both run on the CPU and their weights are inside registry packages (the detector in ``dlib-bin`` itself, the
predictor in ``face-recognition-models``), so nothing is downloaded. Chosen over MediaPipe on measurements
(BENCHMARKS.md): on FG-NET it found 98.6% of the faces with a normalised landmark error of 0.031 at ~55 images/s on 2
cores; MediaPipe's face mesh found 100% (error 0.033) 3x faster, but its last release that ships its weights
(0.10.14) pins protobuf < 5, which breaks TensorBoard >= 2.20 (measured), and later releases download their models.
FFHQ itself was aligned with these same dlib landmarks.

A flat module (``from .face_detector import``): the pipeline's remote code detects faces too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import ComFaceInputError


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


__all__ = ["DlibFaceDetector", "FaceDetection", "get_detector"]

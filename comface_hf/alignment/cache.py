"""Detector results kept with a built dataset, keyed by image content, so a rebuild does not detect again."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ..face_detector import FaceDetection
from ..image_io import load_image


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


__all__ = ["LandmarkCache", "image_key"]

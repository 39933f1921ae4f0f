"""Landmarks a dataset brings: ``.pts`` files, and a face's landmarks as the columns a built dataset stores.

Only the dataset builders and benchmarks need these, never a model at inference, so they live outside the flat
modules that travel with saved weights as remote code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import ComFaceInputError
from ..face_alignment import frame_side
from ..landmark_schemes import guess_scheme, key_points


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


__all__ = ["face_columns", "read_pts"]

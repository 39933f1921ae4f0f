"""Landmark schemes: which of a layout's points are the eyes and the mouth, the three key points the face frame needs.

Landmarks are in *pixel-index* coordinates (the centre of the top-left pixel is ``(0, 0)``), as dlib, OpenCV, numpy
indices and ``.pts`` files use them. A flat module (``from .landmark_schemes import``): the pipeline's remote code
needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ComFaceInputError


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


__all__ = ["LANDMARK_SCHEMES", "LandmarkScheme", "guess_scheme", "key_points"]

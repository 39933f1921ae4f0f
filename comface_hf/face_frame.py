"""The canonical face frame: where the eyes and the mouth sit in every ComFace input. The one place that says so.

ComFace pretrains on StyleGAN faces, and StyleGAN's FFHQ faces are aligned with one published rule (Karras et al.,
"A Style-Based Generator Architecture for GANs", 2019; ``ffhq-dataset/download_ffhq.py``): from the two eye centres
and the mouth centre of a face, take the square

* centred at ``c = eye_avg + 0.1 * eye_to_mouth`` (a little below the eyes),
* turned so that its x axis follows ``eye_to_eye - rot90(eye_to_mouth)`` (both the eye line and the face's vertical
  axis vote for the roll),
* of half-side ``max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)`` (the face fills the frame, with hair and some
  background around it).

Every model input in this project is that square, resampled to the model's size: the embedded generator draws its
faces in it (:mod:`comface_hf.synthesis`), and every real photo is warped into it (:mod:`comface_hf.face_alignment`).
For a face whose eye-to-mouth distance equals its eye-to-eye distance (:data:`REFERENCE_EYE_MOUTH_RATIO`) the rule
puts the eyes at ``(0.375, 0.475)`` and ``(0.625, 0.475)`` and the mouth at ``(0.5, 0.725)`` of the side
(:data:`CANONICAL_KEY_POINTS`); faces with other proportions keep the eyes nearly there and the mouth moves with the
face's own eye-to-mouth distance, as in FFHQ.

Coordinates are pixels with the origin at the top-left corner of the top-left pixel (pixel ``i`` covers ``[i, i+1)``,
its centre is ``i + 0.5``); "left" and "right" are image sides (the image-left eye is the person's right eye).
"""

from __future__ import annotations

import numpy as np

#: Half-side of the frame in units of the eye-to-eye distance (FFHQ).
EYE_TO_EYE_SCALE = 2.0
#: Half-side of the frame in units of the eye-to-mouth distance (FFHQ); the larger of the two wins.
EYE_TO_MOUTH_SCALE = 1.8
#: The frame's centre lies this fraction of the eye-to-mouth vector below the eyes' midpoint (FFHQ).
CENTRE_SHIFT = 0.1
#: Eye-to-mouth / eye-to-eye distance of the reference face that :data:`CANONICAL_KEY_POINTS` describe.
REFERENCE_EYE_MOUTH_RATIO = 1.0


def frame_quad(eye_left, eye_right, mouth) -> np.ndarray:
    """The frame's corners in the source image: ``float64[4, 2]`` top-left, bottom-left, bottom-right, top-right.

    Args:
        eye_left, eye_right: centres of the image-left and image-right eye, ``(x, y)`` in source pixels.
        mouth: the mouth's centre (midpoint of the two mouth corners), ``(x, y)``.
    """
    eye_left, eye_right, mouth = (np.asarray(p, dtype=np.float64).reshape(2) for p in (eye_left, eye_right, mouth))
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(
            f"cannot place a face frame on eyes at {eye_left.tolist()} / {eye_right.tolist()} and mouth at "
            f"{mouth.tolist()}: the points are degenerate (coincident or not finite)"
        )
    x = x / norm * max(np.hypot(*eye_to_eye) * EYE_TO_EYE_SCALE, np.hypot(*eye_to_mouth) * EYE_TO_MOUTH_SCALE)
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + eye_to_mouth * CENTRE_SHIFT
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def frame_matrix(eye_left, eye_right, mouth, size: int) -> np.ndarray:
    """The similarity that maps source pixels into the ``size x size`` frame: ``float64[2, 3]`` ``A``.

    A source point ``p`` lands at ``A[:, :2] @ p + A[:, 2]`` in the frame (pixel-edge coordinates, see module doc).
    """
    quad = frame_quad(eye_left, eye_right, mouth)
    top_left, bottom_left, _, top_right = quad
    ex = (top_right - top_left) / size  # source vector of one frame pixel along x
    ey = (bottom_left - top_left) / size
    basis = np.stack([ex, ey], axis=1)  # frame -> source linear part
    inv = np.linalg.inv(basis)
    return np.concatenate([inv, (-inv @ top_left)[:, None]], axis=1)


def apply_matrix(matrix: np.ndarray, points) -> np.ndarray:
    """Points ``[N, 2]`` mapped by an affine ``[2, 3]``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def _canonical_key_points() -> np.ndarray:
    # Derived from the rule itself (not typed in), so the two cannot drift apart.
    ratio = REFERENCE_EYE_MOUTH_RATIO
    eyes_and_mouth = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, ratio]])
    return apply_matrix(frame_matrix(*eyes_and_mouth, size=1), eyes_and_mouth)


#: ``float64[3, 2]``: image-left eye, image-right eye and mouth centre of the reference face, as fractions of the side.
CANONICAL_KEY_POINTS: np.ndarray = _canonical_key_points()
CANONICAL_KEY_POINTS.setflags(write=False)


def canonical_key_points(size: float = 1.0) -> np.ndarray:
    """:data:`CANONICAL_KEY_POINTS` in pixels of a ``size``-pixel frame."""
    return CANONICAL_KEY_POINTS * float(size)


__all__ = [
    "CANONICAL_KEY_POINTS",
    "CENTRE_SHIFT",
    "EYE_TO_EYE_SCALE",
    "EYE_TO_MOUTH_SCALE",
    "REFERENCE_EYE_MOUTH_RATIO",
    "apply_matrix",
    "canonical_key_points",
    "frame_matrix",
    "frame_quad",
]

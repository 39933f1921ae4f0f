"""Steadying detector landmarks across the frames of a video (the DISFA builder's frames)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np


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


__all__ = ["smooth_landmark_tracks"]

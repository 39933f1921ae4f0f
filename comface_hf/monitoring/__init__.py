"""Monitoring one person's face over time: ``comface compare``, ``comface track`` and the same-person calibration.

The numbers come from :mod:`comface_hf.face_comparison` (shared with the ``face-change-estimation`` pipeline and the
demo page ``app.py``).
"""

from .calibration import calibrate_folder, calibrate_same_person, finish_model_folder

__all__ = ["calibrate_folder", "calibrate_same_person", "finish_model_folder"]

"""Your-own-data face change builder (CSV of subject, image, value[, timestamp]). See README.md."""

from .face_change import FaceChange, FaceChangeConfig

__all__ = ["FaceChange", "FaceChangeConfig"]

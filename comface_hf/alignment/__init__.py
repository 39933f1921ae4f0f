"""The dataset side of face alignment: what builders and benchmarks need, never a model at inference.

* :mod:`.landmark_files`: :func:`read_pts` (``.pts`` landmark files) and :func:`face_columns` (a face's landmarks as
  the columns a built dataset stores).
* :mod:`.cache`: :class:`LandmarkCache` and :func:`image_key`: detector results kept with a built dataset.
* :mod:`.video`: :func:`smooth_landmark_tracks`: landmarks steadied across a video's frames.

What inference needs (reading images, landmark schemes, the detector, the warp, :func:`~comface_hf.face_alignment.
align_face`) stays in flat modules of ``comface_hf`` (``image_io``, ``landmark_schemes``, ``face_detector``,
``face_alignment``), because ``transformers`` copies a saved pipeline's remote code by following flat relative
imports only; this subpackage is never among them.
"""

from .cache import LandmarkCache, image_key
from .landmark_files import face_columns, read_pts
from .video import smooth_landmark_tracks

__all__ = ["LandmarkCache", "face_columns", "image_key", "read_pts", "smooth_landmark_tracks"]

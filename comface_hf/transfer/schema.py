"""The columns of a change task's dataset, defined once: what every real-photo builder (``dataset_builders/``) and
the synthetic tasks write, and what the transfer protocol reads."""

from __future__ import annotations

from typing import Any

import datasets


def face_features() -> dict[str, datasets.features.FeatureType]:
    """The face columns a real-photo builder stores next to each image, so alignment needs no second detection.

    ``landmarks`` ``[N, 2]`` in source pixels (pixel-index coordinates) in the layout ``landmark_scheme`` (see
    ``comface_hf.face_alignment.LANDMARK_SCHEMES``); ``landmark_source`` is ``"dataset"`` (the dataset's or the
    user's points), ``"detector"`` or ``""`` (``landmarks="none"``); ``face_score`` the detector's score (null for
    given landmarks); ``num_faces`` how many faces the detector saw (the largest is used); ``face_frame_side`` the
    side of the face frame in source pixels (how large the face is in the photo).
    """
    return {
        "landmarks": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=2)),
        "landmark_scheme": datasets.Value("string"),
        "landmark_source": datasets.Value("string"),
        "face_score": datasets.Value("float32"),
        "num_faces": datasets.Value("int32"),
        "face_frame_side": datasets.Value("float32"),
    }


#: The face columns of an image stored without landmarks (``landmarks="none"``).
NO_FACE_COLUMNS: dict[str, Any] = {
    "landmarks": [], "landmark_scheme": "", "landmark_source": "", "face_score": None, "num_faces": 0,
    "face_frame_side": None,
}


def change_features(faces: bool = False, **extra: datasets.features.FeatureType) -> datasets.Features:
    """Features shared by every downstream builder: ``image``, ``subject``, ``value``.

    ``faces=True`` adds the :func:`face_features` columns (real photographs; synthetic tasks are rendered in the
    face frame already). Task-specific columns (``frame`` for DISFA, ``timestamp`` for face_change) are passed
    as keyword arguments and appended after the shared ones.
    """
    return datasets.Features(
        {
            "image": datasets.Image(),
            "subject": datasets.Value("string"),
            "value": datasets.Value("float32"),
            **(face_features() if faces else {}),
            **extra,
        }
    )

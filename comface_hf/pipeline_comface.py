"""The ``face-change-estimation`` pipeline: two photos of a person in, the change between them out.

    from transformers import pipeline
    pipe = pipeline("face-change-estimation", model="outputs/comface-embedded/model", trust_remote_code=True)
    pipe("before.jpg", "after.jpg")                     # one pair -> dict
    pipe([("a.jpg", "b.jpg"), ("a.jpg", "c.jpg")], batch_size=32)   # a list of pairs -> list of dicts

Each result is :meth:`comface_hf.face_comparison.Comparison.to_dict`: ``change`` (signed, in ``units``),
``distance`` (``l(ReLU(f(after) - f(before)))``), ``similarity`` and ``same_person`` (cosine of ``g(f(.))`` against the
model's calibrated threshold), ``warnings`` and per-image ``faces``.

Registered with ``PIPELINE_REGISTRY`` (custom code) when ``comface_hf`` is imported, and recorded in a saved folder's
``config.json`` (``custom_pipelines``) by :func:`save_with_pipeline`, so the folder works with
``trust_remote_code=True`` on a machine without ``comface_hf``: this file and its flat neighbours travel with the
weights.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import ComFaceInputError
from .face_alignment import align_mode
from .face_comparison import FaceComparer, identity_distance
from .image_io import describe

TASK = "face-change-estimation"


class FaceChangeEstimationPipeline(Pipeline):
    """Compare (before, after) photo pairs with a ComFace model (pretrained or transferred).

    Call with ``(before, after)``, a ``(before, after)`` tuple, a ``{"before": ..., "after": ...}`` dict, or a list of
    these (batched with ``batch_size``). Images are anything ``load_image`` reads: paths, bytes, PIL images, arrays.
    ``align`` is a word of ``ALIGN_MODES`` (:mod:`comface_hf.face_alignment`): ``"face"`` (default) needs a face in
    every photo; ``"auto"`` uses a faceless image as it is, with a warning; ``"none"`` takes already-aligned crops
    (the old ``True``/``False`` still work, with a DeprecationWarning). ``identity="dlib"`` makes the same-person check with dlib's
    face-recognition descriptors instead of the model's g(f(.)) (see :mod:`comface_hf.face_comparison`).
    """

    _load_image_processor = False
    _load_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        processor = self.image_processor
        if processor is None:
            from .image_processing_comface import ComFaceImageProcessor

            try:
                processor = ComFaceImageProcessor.from_pretrained(self.model.name_or_path)
            except (OSError, ValueError):
                processor = ComFaceImageProcessor(crop_size=int(self.model.config.image_size))
        # The collate function wants a feature extractor-like object; the comparer does the real work.
        self.image_processor = processor
        self.comparers: dict[Any, FaceComparer] = {}

    def _comparer(self, align: Any, identity: str = "comface") -> FaceComparer:
        if (align, identity) not in self.comparers:
            self.comparers[align, identity] = FaceComparer(self.model, self.image_processor, align=align,
                                                           identity=identity)
        return self.comparers[align, identity]

    def _sanitize_parameters(self, align: Any = None, identity: Any = None, **kwargs: Any):
        preprocess = {} if align is None else {"align": align}
        if identity is not None:
            preprocess["identity"] = identity
        return preprocess, {}, {}

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any):
        if args:  # pipe(before, after)
            if len(args) != 1:
                raise ComFaceInputError("call the pipeline with (before, after) or a list of (before, after) pairs")
            return super().__call__((inputs, args[0]), **kwargs)
        if isinstance(inputs, list):
            if not inputs:
                raise ComFaceInputError("the list of pairs is empty; pass at least one (before, after) pair")
            return super().__call__(inputs, **kwargs)
        return super().__call__(inputs, **kwargs)

    def preprocess(self, pair: Any, align: Any = "face", identity: str = "comface") -> dict[str, Any]:
        align = align_mode(align)  # once here: postprocess finds the comparer under the same word
        if isinstance(pair, dict):
            if "before" not in pair or "after" not in pair:
                raise ComFaceInputError(f"a pair dict needs 'before' and 'after' keys, got {sorted(pair)}")
            pair = (pair["before"], pair["after"])
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ComFaceInputError(
                f"each input must be a (before, after) pair of images, got {type(pair).__name__}"
                + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else "")
            )
        comparer = self._comparer(align, identity)
        crops, faces, notes = comparer.align_pair(*pair)
        pixels = comparer.pixel_values(crops)
        return {"pixel_values": pixels[:1], "pixel_values_y": pixels[1:],
                "meta": [{"before": describe(pair[0]), "after": describe(pair[1]), "notes": notes, "faces": faces,
                          "align": align, "identity": identity, "identity_distance": identity_distance(*crops)}]}

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        comparer = next(iter(self.comparers.values()))
        x, y = inputs["pixel_values"], inputs["pixel_values_y"]
        features = comparer.embed(torch.cat([x, y]))["features"]
        n = x.shape[0]
        scores = comparer.scores(features[:n], features[n:])
        return {**scores, "meta": inputs["meta"]}

    def postprocess(self, outputs: dict[str, Any]) -> dict[str, Any]:
        meta = outputs["meta"]
        meta = meta[0] if isinstance(meta, list) and len(meta) == 1 and isinstance(meta[0], dict) else meta
        comparer = self._comparer(meta["align"], meta["identity"])
        similarity = outputs.get("similarity")
        result = comparer.result(
            meta["before"], meta["after"], float(outputs["change"].reshape(-1)[0]),
            float(outputs["distance"].reshape(-1)[0]),
            None if similarity is None else float(similarity.reshape(-1)[0]), meta["notes"], meta["faces"],
            identity_distance=meta["identity_distance"],
        )
        return result.to_dict()


def register_pipeline() -> None:
    """Make ``pipeline("face-change-estimation", ...)`` build this class (in this process)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is FaceChangeEstimationPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=FaceChangeEstimationPipeline, pt_model=AutoModel,
                                        type="image")


def save_with_pipeline(model: Any, folder: str, processor: Any = None) -> None:
    """Save ``model`` (and its processor) so that ``pipeline(model=folder, trust_remote_code=True)`` finds the task.

    Writes ``custom_pipelines`` into config.json and copies this file (and its flat imports) next to the weights.
    """
    register_pipeline()
    pipe = FaceChangeEstimationPipeline(model=model, image_processor=processor)
    pipe.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)


def add_pipeline_to_folder(folder: str) -> None:
    """Make an already saved model folder a pipeline folder: ``custom_pipelines`` in its config.json, and this file
    with its flat imports copied next to the weights. Each file is written through a temporary file and a rename."""
    import json
    import os
    import shutil
    from pathlib import Path

    from transformers.dynamic_module_utils import get_relative_import_files

    folder_path = Path(folder)
    config_file = folder_path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder!r} has no config.json; pass a folder written by save_pretrained")
    source = Path(__file__)
    for file in [source, *map(Path, get_relative_import_files(str(source)))]:
        tmp = folder_path / f".{file.name}.tmp"
        shutil.copyfile(file, tmp)
        os.replace(tmp, folder_path / file.name)
    config = json.loads(config_file.read_text())
    config["custom_pipelines"] = {TASK: {"impl": f"{source.stem}.{FaceChangeEstimationPipeline.__name__}",
                                         "pt": ["AutoModel"], "type": "image"}}
    tmp = folder_path / ".config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, config_file)


__all__ = ["FaceChangeEstimationPipeline", "TASK", "add_pipeline_to_folder", "register_pipeline", "save_with_pipeline"]

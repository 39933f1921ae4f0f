"""Change-estimation models for the protocol, from any initialisation: scratch, a ComFace folder, timm weights,
FaceCycle, or a peer (a face tool users already have), with peers optionally fused into the init's features."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from ..image_processing_comface import COMFACE_MEAN, COMFACE_STD, ComFaceImageProcessor
from ..peers import PEERS, get_peer, parse_peer_list
from .tasks import MODES, check_choice

#: Forms of ``init`` understood by :func:`build_change_model`.
INIT_FORMS: str = (
    "'scratch' (random f, see --backbone), a ComFace checkpoint folder or Hub id, "
    "'timm:<backbone>:<weights file>' (e.g. ImageNet or face-recognition weights), 'facecycle:<folder>', or a peer "
    "(a face tool users already have, linear only: " + ", ".join(PEERS) + ")"
)
#: Input size of a scratch model when none is given: the embedded pretraining default (64 px).
DEFAULT_SCRATCH_IMAGE_SIZE = 64
#: Input size of a timm-weights model when none is given: what ImageNet weights are trained at.
DEFAULT_TIMM_IMAGE_SIZE = 224


@dataclass
class ChangeModelSpec:
    """A change-estimation model with the input pipeline its initialisation requires.

    Attributes:
        model: ``ComFaceForChangeEstimation`` or ``FaceCycleForChangeEstimation`` (forward(pixel_values_x,
            pixel_values_y, labels) -> ``ChangeEstimationOutput``).
        image_size: input side S in pixels.
        image_mean, image_std: per-channel normalisation of [0, 1] images the initialisation was trained with.
        init_kind: ``scratch``, ``comface``, ``timm`` or ``facecycle``.
        method: a short name for tables (e.g. ``ComFace (model)``).
    """

    model: nn.Module
    image_size: int
    image_mean: list[float]
    image_std: list[float]
    init_kind: str
    method: str

    def image_processor(self) -> ComFaceImageProcessor:
        """Resize, centre-crop and normalise any image to what :attr:`model` expects."""
        return ComFaceImageProcessor(crop_size=self.image_size, image_mean=self.image_mean, image_std=self.image_std)


def _fixed_size(init: str, pretrained_size: int, requested: Optional[int]) -> int:
    """The init's own input size; a different explicit request is an error, not a silent resize."""
    if requested is not None and int(requested) != int(pretrained_size):
        raise ValueError(
            f"--image_size {requested} conflicts with init {init!r}, which was pretrained at {pretrained_size} px "
            f"(its config.image_size). Drop --image_size or pass --image_size {pretrained_size}."
        )
    return int(pretrained_size)


def _processor_stats(folder: str, default_mean: list[float], default_std: list[float]) -> tuple[list[float], list[float]]:
    """Normalisation saved with a checkpoint (preprocessor_config.json), else the method's default."""
    path = Path(folder) / "preprocessor_config.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("do_normalize", True) is False:
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        return list(saved.get("image_mean", default_mean)), list(saved.get("image_std", default_std))
    return list(default_mean), list(default_std)


def _config_model_type(init: str) -> Optional[str]:
    config = Path(init) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return None


def build_change_model(
    init: str,
    mode: str,
    image_size: Optional[int] = None,
    backbone: str = "resnet18",
    symmetric_change: bool = False,
    extra_features: Sequence[str] = (),
) -> ChangeModelSpec:
    """A change-estimation model initialised from ``init`` and prepared for ``mode``.

    Args:
        init: see :data:`INIT_FORMS`. A ComFace folder may come from any pretraining variant (both losses, intra-only,
            inter-only): f and l are transferred and g is dropped. A folder whose config says ``facecycle`` is loaded as
            FaceCycle even without the ``facecycle:`` prefix.
        mode: ``linear`` (freeze f, re-initialise l) or ``finetune`` (train f and l from the initial weights).
        image_size: input side; must match a pretrained checkpoint's ``config.image_size`` (error otherwise). Defaults
            to the checkpoint's size, :data:`DEFAULT_SCRATCH_IMAGE_SIZE` for scratch, :data:`DEFAULT_TIMM_IMAGE_SIZE`
            for timm weights.
        backbone: timm architecture for ``scratch``.
        symmetric_change: ComFace models: predict (d(x, y) - d(y, x)) / 2 (sign flips exactly when x, y swap).
        extra_features: peers (:data:`comface_hf.peers.PEERS`) whose per-image vectors are appended to f's features
            (fusion): the model becomes a :class:`~comface_hf.modeling_change_estimator.ChangeEstimator` taking
            aligned crops in [0, 1] at the largest size any part needs (f sees them resized to its own size).

    Returns:
        :class:`ChangeModelSpec`.
    """
    from ..configuration_comface import ComFaceConfig
    from ..modeling_comface import ComFaceForChangeEstimation
    from ..modeling_facecycle import FaceCycleForChangeEstimation

    check_choice("mode", mode, MODES)
    if not isinstance(init, str) or not init:
        raise ValueError(f"--init is required: {INIT_FORMS}.")

    extra_features = parse_peer_list(extra_features)
    if init in PEERS:
        return _peer_spec([init, *[p for p in extra_features if p != init]], mode, init)
    if init == "scratch":
        size = int(image_size or DEFAULT_SCRATCH_IMAGE_SIZE)
        model = ComFaceForChangeEstimation(
            ComFaceConfig(backbone=backbone, image_size=size, symmetric_change=symmetric_change)
        )
        spec = ChangeModelSpec(model, size, list(COMFACE_MEAN), list(COMFACE_STD), "scratch", f"Scratch ({backbone})")
    elif init.startswith("timm:"):
        parts = init.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ValueError(f"--init {init!r}: write timm weights as 'timm:<backbone>:<weights file>'.")
        _, timm_name, weights = parts
        size = int(image_size or DEFAULT_TIMM_IMAGE_SIZE)
        model = ComFaceForChangeEstimation.from_timm_weights(
            timm_name, weights, image_size=size, symmetric_change=symmetric_change
        )
        # General pre-training expects its own normalisation (e.g. ImageNet mean/std), which timm records.
        from timm.data import resolve_data_config

        data_config = resolve_data_config({}, model=model.backbone)
        mean, std = list(data_config["mean"]), list(data_config["std"])
        spec = ChangeModelSpec(model, size, mean, std, "timm", f"{timm_name} ({Path(weights).stem})")
    elif init.startswith("facecycle:") or _config_model_type(init) == "facecycle":
        folder = init.removeprefix("facecycle:")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--init {init!r}: FaceCycle folder {folder!r} does not exist.")
        model = FaceCycleForChangeEstimation.from_facecycle(folder)
        size = _fixed_size(init, model.config.image_size, image_size)
        # FaceCycle is trained on faces in [0, 1] unless its folder saved another normalisation.
        mean, std = _processor_stats(folder, [0.0] * 3, [1.0] * 3)
        spec = ChangeModelSpec(model, size, mean, std, "facecycle", f"FaceCycle ({Path(folder).name})")
    else:
        if os.path.exists(init) and not os.path.isdir(init):
            raise ValueError(f"--init {init!r} is a file, not a checkpoint folder. Valid forms: {INIT_FORMS}.")
        model_type = _config_model_type(init)
        if model_type not in (None, "comface"):
            raise ValueError(f"--init {init!r} holds a {model_type!r} model, not ComFace. Valid forms: {INIT_FORMS}.")
        try:
            model = ComFaceForChangeEstimation.from_pretrained(init, symmetric_change=symmetric_change)
        except OSError as exc:
            if os.path.isdir(init):
                raise
            raise OSError(
                f"--init {init!r} is neither a local folder nor a Hub checkpoint that can be loaded ({exc}). "
                f"Valid forms: {INIT_FORMS}. Offline (HF_HUB_OFFLINE=1) only cached Hub ids load."
            ) from exc
        size = _fixed_size(init, model.config.image_size, image_size)
        mean, std = _processor_stats(init, COMFACE_MEAN, COMFACE_STD) if os.path.isdir(init) else (COMFACE_MEAN, COMFACE_STD)
        spec = ChangeModelSpec(model, size, list(mean), list(std), "comface", f"ComFace ({Path(init).name})")

    if extra_features:
        if spec.init_kind == "facecycle":
            raise ValueError("--extra_features applies to ComFace, scratch and timm inits, not FaceCycle's model.")
        from ..modeling_change_estimator import ChangeEstimator

        model = ChangeEstimator.from_parts(
            spec.model, extra_features, backbone_image_size=spec.image_size, backbone_mean=spec.image_mean,
            backbone_std=spec.image_std, init=init,
        )
        spec = ChangeModelSpec(model, model.config.image_size, [0.0] * 3, [1.0] * 3, spec.init_kind,
                               f"{spec.method} + {' + '.join(extra_features)}")
    if mode == "linear":
        spec.model.prepare_linear_evaluation()
    return spec


def _peer_spec(peers: list[str], mode: str, init: str) -> ChangeModelSpec:
    """A peer (with any further peers fused) as an init: no learned f, linear evaluation only."""
    from ..modeling_change_estimator import ChangeEstimator

    if mode != "linear":
        raise ValueError(
            f"--init {init} is a peer: its vectors are fixed (no dlib or ONNX network is fine-tuned), so it takes "
            "part in linear evaluation only. Use --mode linear, or fuse it into a ComFace init with --extra_features."
        )
    for name in peers:
        get_peer(name).check_available()
    model = ChangeEstimator.from_parts(None, peers, init=init)
    spec = ChangeModelSpec(model, model.config.image_size, [0.0] * 3, [1.0] * 3, "peer", " + ".join(peers))
    spec.model.prepare_linear_evaluation()
    return spec

"""A fitted change estimator: features of a face (a ComFace f, peers, or both) and a linear change head, in task units.

One class serves three uses, so that what is measured is what is saved and what is run:

* **peers as inits** of the transfer protocol (``--init dlib-landmarks``): no learned f, the peer's vector only;
* **fusion** (``--extra_features dlib-landmarks,...``): f of any init with peer vectors appended;
* the folder that ``training/transfer.py --save_model`` writes: ``ChangeEstimator.from_pretrained(folder)`` runs the
  same features and head, and ``comface compare`` / ``comface track`` / the pipeline / ``app.py`` print its change in
  ``config.change_units`` (e.g. years).

Input: aligned face crops at ``config.image_size`` as ``[N, 3, S, S]`` in [0, 1] (no normalisation: each part
normalises for itself). The learned f sees them resized to its own size and normalised with its own statistics; each
peer sees them as uint8 pixels. Features: ``h = [f(x), v_1, -v_1, v_2, -v_2, ...]`` (see :mod:`comface_hf.peers`);
change ``= l(ReLU(h_y - h_x))``, as in every other change model of the package (:class:`ChangeEstimationMixin`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .configuration_comface import ComFaceConfig
from .modeling_comface import ChangeEstimationMixin, DifferenceHead, create_backbone
from .peers import PEERS, get_peer, signed_features


class ChangeEstimatorConfig(PretrainedConfig):
    r"""Configuration of a :class:`ChangeEstimator`.

    Args:
        backbone_config (`dict`, *optional*): the ``ComFaceConfig`` of the learned f (None: peers only).
        backbone_image_size (`int`), backbone_mean / backbone_std (`list[float]`): f's input size and normalisation.
        peers (`list[str]`): peer names (:data:`comface_hf.peers.PEERS`) whose vectors are appended to f's features.
        image_size (`int`): side of the aligned crop the estimator takes (the largest any part needs).
        change_units (`str`): the units of the change (``"years"``), printed by the tools.
        task (`str`): the task the head was fitted on. fit (`dict`): how (penalty, pairs, subjects, CV metrics).
        init (`str`): the initialisation f came from (a folder, ``scratch``...), for the card.
        symmetric_change, initializer_range, freeze_backbone: as in ``ComFaceConfig``.
    """

    model_type = "comface-change-estimator"

    def __init__(
        self,
        backbone_config: Optional[dict] = None,
        backbone_image_size: int = 64,
        backbone_mean: Optional[list] = None,
        backbone_std: Optional[list] = None,
        peers: Optional[list] = None,
        image_size: int = 64,
        change_units: Optional[str] = None,
        task: Optional[str] = None,
        fit: Optional[dict] = None,
        init: Optional[str] = None,
        symmetric_change: bool = False,
        initializer_range: float = 0.02,
        freeze_backbone: bool = False,
        **kwargs: Any,
    ):
        peers = list(peers or [])
        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            raise ValueError(f"unknown peers {unknown}; available: {', '.join(PEERS)}")
        self.backbone_config = dict(backbone_config) if backbone_config is not None else None
        self.backbone_image_size = int(backbone_image_size)
        self.backbone_mean = list(backbone_mean or [0.0, 0.0, 0.0])
        self.backbone_std = list(backbone_std or [1.0, 1.0, 1.0])
        self.peers = peers
        self.image_size = int(image_size)
        self.change_units = change_units
        self.task = task
        self.fit = dict(fit or {})
        self.init = init
        self.symmetric_change = bool(symmetric_change)
        self.initializer_range = float(initializer_range)
        self.freeze_backbone = bool(freeze_backbone)
        super().__init__(**kwargs)


class EstimatorFeatures(nn.Module):
    """h of a batch of aligned crops: ``[N, 3, S, S]`` in [0, 1] -> ``[N, F + sum(2 d_peer)]``."""

    def __init__(self, config: ChangeEstimatorConfig):
        super().__init__()
        self.peer_names = list(config.peers)
        self.backbone_image_size = config.backbone_image_size
        self.backbone = create_backbone(ComFaceConfig(**config.backbone_config)) if config.backbone_config else None
        self.register_buffer("mean", torch.tensor(config.backbone_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.backbone_std).view(1, -1, 1, 1), persistent=False)
        self.num_features = (self.backbone.num_features if self.backbone is not None else 0) + sum(
            2 * PEERS[name].dim for name in self.peer_names)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.backbone is not None:
            x = pixel_values
            if x.shape[-1] != self.backbone_image_size:
                x = F.interpolate(x, size=(self.backbone_image_size,) * 2, mode="bilinear", antialias=True,
                                  align_corners=False)
            parts.append(self.backbone((x - self.mean.to(x)) / self.std.to(x)))
        if self.peer_names:
            pixels = (pixel_values.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
            crops = list(pixels.permute(0, 2, 3, 1).cpu().numpy())
            dtype = parts[0].dtype if parts else torch.float32
            for name in self.peer_names:
                vectors = signed_features(get_peer(name).features(crops))
                parts.append(torch.from_numpy(vectors).to(device=pixel_values.device, dtype=dtype))
        return torch.cat(parts, dim=1)


class ChangeEstimator(ChangeEstimationMixin, PreTrainedModel):
    """Features (f, peers, or both) + l: the signed change from x to y in ``config.change_units``.

    Build one for the protocol with :meth:`from_parts`; load a fitted one with ``from_pretrained``.
    ``forward(pixel_values_x, pixel_values_y, labels)`` -> ``ChangeEstimationOutput`` (``change`` ``[N]``).
    """

    config_class = ChangeEstimatorConfig
    base_model_prefix = "estimator"
    main_input_name = "pixel_values_x"

    def __init__(self, config: ChangeEstimatorConfig):
        super().__init__(config)
        if config.backbone_config is None and not config.peers:
            raise ValueError("a ChangeEstimator needs a learned backbone (backbone_config), peers, or both")
        self.backbone = EstimatorFeatures(config)
        self.difference_head = DifferenceHead(self.backbone.num_features)
        self.post_init()
        if config.freeze_backbone or self.backbone.backbone is None:
            self.backbone.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, DifferenceHead):
            nn.init.normal_(module.linear.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.linear.bias)

    @property
    def has_learned_backbone(self) -> bool:
        return self.backbone.backbone is not None

    def check_pixel_values(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
        size = self.config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"`{name}` must be [N, 3, {size}, {size}] aligned crops in [0, 1] (this estimator's image_size), got "
                f"{list(pixel_values.shape)}; use the folder's image processor."
            )

    @classmethod
    def from_parts(cls, change_model: Optional[nn.Module] = None, peers: Optional[list] = None, *,
                   backbone_image_size: int = 64, backbone_mean=None, backbone_std=None, image_size: Optional[int] = None,
                   **config_kwargs: Any) -> "ChangeEstimator":
        """An estimator over ``change_model``'s f (a ``ComFaceForChangeEstimation``; its weights are copied) and
        ``peers``; the head is fresh. ``image_size`` defaults to the largest size any part needs."""
        from .peers import PEER_IMAGE_SIZE

        peers = list(peers or [])
        sizes = ([backbone_image_size] if change_model is not None else []) + ([PEER_IMAGE_SIZE] if peers else [])
        image_size = image_size or max(sizes, default=PEER_IMAGE_SIZE)
        config = ChangeEstimatorConfig(
            backbone_config=change_model.config.to_dict() if change_model is not None else None,
            backbone_image_size=backbone_image_size, backbone_mean=backbone_mean, backbone_std=backbone_std,
            peers=peers, image_size=image_size,
            symmetric_change=bool(getattr(getattr(change_model, "config", None), "symmetric_change", False)),
            **config_kwargs,
        )
        model = cls(config)
        if change_model is not None:
            model.backbone.backbone.load_state_dict(change_model.backbone.state_dict())
        return model

    def image_processor(self):
        """The processor of this estimator's input: resize/crop to ``image_size``, [0, 1], no normalisation."""
        from .image_processing_comface import ComFaceImageProcessor

        return ComFaceImageProcessor(crop_size=self.config.image_size, image_mean=[0.0] * 3, image_std=[1.0] * 3)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """safetensors, config, the image processor and a model card stating task, data, CV metrics and units."""
        kwargs["safe_serialization"] = True
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.image_processor().save_pretrained(save_directory)
            write_estimator_card(self, save_directory)


def write_estimator_card(model: ChangeEstimator, save_directory: str) -> None:
    """README.md of a saved estimator: what it estimates, in which units, from what, and how well (CV)."""
    config = model.config
    fit = config.fit or {}
    metrics = fit.get("cv_metrics") or {}
    parts = ([f"f of `{config.init}` ({config.backbone_config.get('backbone')}, {config.backbone_image_size} px)"]
             if config.backbone_config else []) + [f"peer `{p}`" for p in config.peers]
    rows = "\n".join(f"| {name} | {v['mean']:.4f} ± {v['std']:.4f} |" for name, v in metrics.items()
                     if isinstance(v, dict) and v.get("mean") is not None)
    units = config.change_units or "task units"
    text = f"""---
library_name: transformers
tags: [comface, face, change-estimation]
---

# Change estimator: {config.task or 'face change'} ({units})

Estimates the signed change between two photos of one person, `after - before`, in **{units}**.

- **Features:** {' + '.join(parts)}; head `l(ReLU(h_y - h_x))` fitted by exact ridge regression.
- **Task and data:** `{config.task}`, {fit.get('num_pairs', '?')} pairs of {fit.get('num_subjects', '?')} subjects
  ({fit.get('data', "the user's data")}).
- **Penalty:** {fit.get('penalty_selection', 'grouped cross-validation over subjects')}, alpha = {fit.get('alpha', float('nan')):.4g}.
- **Cross-validated figures** (the protocol's subject-disjoint folds, before the refit on all subjects):

| metric | mean ± std over folds |
| --- | --- |
{rows or '| (not recorded) | |'}

Use: `comface compare before.jpg after.jpg --model <this folder>`, or
`ChangeEstimator.from_pretrained(folder)` with aligned crops from its image processor. It has seen only
{fit.get('num_subjects', '?')} people of one dataset: check it on your own photos before relying on it.
Not a medical device.
"""
    with open(os.path.join(save_directory, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(text)


__all__ = ["ChangeEstimator", "ChangeEstimatorConfig", "EstimatorFeatures", "write_estimator_card"]

"""ComFace model configuration."""

from __future__ import annotations

import difflib

from transformers import PretrainedConfig

INTRA_TARGETS = ("absolute", "signed")


def check_backbone_name(name: str) -> None:
    """Raise a ValueError naming close timm models when `name` is not a timm architecture.

    Only the registry is consulted: nothing is downloaded.
    """
    import timm

    if not isinstance(name, str) or not name:
        raise ValueError(f"`backbone` must be a timm model name such as 'resnet50', got {name!r}.")
    # timm accepts 'arch.pretrained_tag'; only the architecture must exist.
    architecture = name.split(".", 1)[0]
    if timm.is_model(architecture):
        return
    candidates = timm.list_models()
    close = difflib.get_close_matches(architecture, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean one of: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}: it is not a timm model name.{hint} "
        "List the valid names with `timm.list_models('resnet*')`."
    )


class ComFaceConfig(PretrainedConfig):
    r"""Configuration of a ComFace model (Akamatsu et al., Sec. 3.2-3.4).

    Args:
        backbone (`str`, defaults to `"resnet50"`):
            Any timm architecture name; used as the feature extractor f (`num_classes=0`, pooled features).
            `resnet18`, `resnet101` and `vit_base_patch16_224` are the paper's alternatives (Table 8).
        image_size (`int`, defaults to 224):
            Side of the square input images.
        num_channels (`int`, defaults to 3):
            Input channels.
        projection_hidden_size (`int`, defaults to 2048):
            Hidden width of the two-layer MLP projection head g (SimCLR).
        projection_dim (`int`, defaults to 128):
            Output size of g, the space of the InfoNCE loss.
        temperature (`float`, defaults to 0.1):
            InfoNCE temperature tau of Eq. 1.
        inter_loss_weight (`float`, defaults to 1.0):
            Weight of L_inter; 0 trains intra-personal learning only (Table 7 (b)).
        intra_loss_weight (`float`, defaults to 1.0):
            Weight of L_intra; 0 trains inter-personal learning only (Table 7 (a)).
        intra_target (`str`, defaults to `"absolute"`):
            Ground truth of L_intra: `"absolute"` |alpha_y - alpha_x| (paper) or `"signed"` alpha_y - alpha_x
            (Table 7 (d)).
        gather_negatives (`bool`, defaults to `True`):
            Under several processes, draw InfoNCE negatives from the global batch.
        symmetric_change (`bool`, defaults to `False`):
            Change estimation only: predict (d(x, y) - d(y, x)) / 2 so that swapping the images flips the sign exactly.
        freeze_backbone (`bool`, defaults to `False`):
            Change estimation only: keep f frozen (linear evaluation).
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"drop_path_rate": 0.1}`).
        change_units (`str`, *optional*):
            What one unit of the predicted change means, printed by `comface compare`/`track`, the pipeline and the
            demo: a transferred model names its task's units (e.g. `"years"`, `"AU intensity levels"`); `None`
            means a pretrained model, whose change is in alpha units (the synthetic edit intensity, paper Sec. 3.1).
        same_person_threshold (`float`, *optional*):
            Cosine similarity of the inter-personal embeddings g(f(.)) at or above which two photos are taken to
            show the same person (a warning, never a refusal). Measured by `comface_hf.monitoring.calibration`;
            `None`: not calibrated, no same-person check.
        same_person_far (`float`, *optional*):
            False-accept rate of that threshold (different people taken as the same), on held-out pairs.
        same_person_frr (`float`, *optional*):
            False-reject rate of that threshold (the same person taken as different), on held-out pairs.
        same_person_calibration (`str`, *optional*):
            How the threshold was measured (data, number of pairs, target rate).
        generator_spec (`dict` or `list[dict]`, *optional*):
            The generator that rendered the pretraining pairs, as `comface_hf.synthesis.spec.GeneratorSpec.to_dict()`
            (a list for a mixture). `comface calibrate` rebuilds the same renderer from it; `None` for models
            trained on a built corpus or saved before it was recorded.
    """

    model_type = "comface"

    backbone: str = "resnet50"
    image_size: int = 224
    num_channels: int = 3
    projection_hidden_size: int = 2048
    projection_dim: int = 128
    temperature: float = 0.1
    inter_loss_weight: float = 1.0
    intra_loss_weight: float = 1.0
    intra_target: str = "absolute"
    gather_negatives: bool = True
    symmetric_change: bool = False
    freeze_backbone: bool = False
    backbone_kwargs: dict | None = None
    initializer_range: float = 0.02
    change_units: str | None = None
    same_person_threshold: float | None = None
    same_person_far: float | None = None
    same_person_frr: float | None = None
    same_person_calibration: str | None = None
    generator_spec: dict | list | None = None

    def __post_init__(self, **kwargs):
        check_backbone_name(self.backbone)
        if int(self.image_size) < 16:
            raise ValueError(f"`image_size` must be at least 16 pixels, got {self.image_size}.")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {self.temperature}.")
        if self.intra_target not in INTRA_TARGETS:
            raise ValueError(f"`intra_target` must be one of {INTRA_TARGETS}, got {self.intra_target!r}.")
        if min(self.inter_loss_weight, self.intra_loss_weight) < 0 or self.inter_loss_weight + self.intra_loss_weight == 0:
            raise ValueError(
                "Loss weights must be non-negative and not both zero, got "
                f"inter_loss_weight={self.inter_loss_weight}, intra_loss_weight={self.intra_loss_weight}."
            )
        self.backbone_kwargs = dict(self.backbone_kwargs or {})
        if self.same_person_threshold is not None and not -1.0 <= float(self.same_person_threshold) <= 1.0:
            raise ValueError(
                f"`same_person_threshold` is a cosine similarity in [-1, 1], got {self.same_person_threshold}."
            )
        super().__post_init__(**kwargs)


__all__ = ["ComFaceConfig", "check_backbone_name"]

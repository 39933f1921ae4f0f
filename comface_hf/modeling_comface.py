"""ComFace models: pretraining with inter- and intra-personal learning, and change estimation for transfer.

f: a timm backbone returning pooled features h, g: a two-layer MLP projection head, l: ReLU then one Linear applied
to the feature difference h_y - h_x (Sec. 3.2, Fig. 2). `ComFaceModel` trains f, g and l with L_inter + L_intra;
`ComFaceForChangeEstimation` keeps f and l and regresses the signed change alpha_y - alpha_x (Sec. 3.4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_comface import ComFaceConfig
from .losses import inter_personal_loss, intra_personal_loss

PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "pytorch_model.bin.index.json")


@dataclass
class ComFaceOutput(ModelOutput):
    """Output of `ComFaceModel.forward`.

    Args:
        loss: scalar, `inter_loss_weight * L_inter + intra_loss_weight * L_intra` over the terms that were computed.
        inter_personal_loss: scalar L_inter (Eq. 1), when a second view of x was given.
        intra_personal_loss: scalar L_intra, when y and both intensities were given.
        distance: `[N]` predicted intra-personal change d = l(ReLU(h_y - h_x1)).
        features_x1, features_x2, features_y: `[N, F]` backbone features h of each view.
        projections_x1, projections_x2: `[N, P]` projections z = g(h) of the two views of x.
    """

    loss: Optional[torch.FloatTensor] = None
    inter_personal_loss: Optional[torch.FloatTensor] = None
    intra_personal_loss: Optional[torch.FloatTensor] = None
    distance: Optional[torch.FloatTensor] = None
    features_x1: Optional[torch.FloatTensor] = None
    features_x2: Optional[torch.FloatTensor] = None
    features_y: Optional[torch.FloatTensor] = None
    projections_x1: Optional[torch.FloatTensor] = None
    projections_x2: Optional[torch.FloatTensor] = None


@dataclass
class ChangeEstimationOutput(ModelOutput):
    """Output of `ComFaceForChangeEstimation.forward`.

    Args:
        loss: scalar MSE against `labels` = value_y - value_x, when labels were given.
        change: `[N]` predicted signed change from x to y.
        features_x, features_y: `[N, F]` backbone features.
    """

    loss: Optional[torch.FloatTensor] = None
    change: Optional[torch.FloatTensor] = None
    features_x: Optional[torch.FloatTensor] = None
    features_y: Optional[torch.FloatTensor] = None


def create_backbone(config: ComFaceConfig) -> nn.Module:
    """f: a randomly initialised timm model with its classifier removed (`num_classes=0`), returning [N, F].

    Never downloads weights: pretrained weights come from a ComFace checkpoint or a local file.
    """
    import timm

    kwargs = dict(pretrained=False, num_classes=0, in_chans=config.num_channels, **config.backbone_kwargs)
    try:  # transformers-style backbones (ViT, Swin...) need the input size for their position embeddings
        return timm.create_model(config.backbone, img_size=config.image_size, **kwargs)
    except TypeError:  # convolutional backbones take any size and no `img_size` argument
        return timm.create_model(config.backbone, **kwargs)


class DifferenceHead(nn.Module):
    """l(ReLU(.)): maps a feature difference `[N, F]` to a scalar change `[N]`."""

    def __init__(self, num_features: int):
        super().__init__()
        self.linear = nn.Linear(num_features, 1)

    def forward(self, feature_difference: torch.Tensor) -> torch.Tensor:
        return self.linear(F.relu(feature_difference)).squeeze(-1)


class ProjectionHead(nn.Module):
    """g: the two-layer MLP of SimCLR, `[N, F]` -> `[N, P]`."""

    def __init__(self, num_features: int, hidden_size: int, projection_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(num_features, hidden_size)
        self.fc2 = nn.Linear(hidden_size, projection_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(features)))


class ComFacePreTrainedModel(PreTrainedModel):
    config_class = ComFaceConfig
    base_model_prefix = "comface"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = False
    # A change-estimation model loads a pretraining checkpoint and drops g.
    _keys_to_ignore_on_load_unexpected = [r"projection_head\..*"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The timm backbone is initialised by timm when it is built; only the heads are ours.
        if isinstance(module, (DifferenceHead, ProjectionHead)):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=self.config.initializer_range)
                    nn.init.zeros_(layer.bias)

    def check_pixel_values(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
        """Raise a ValueError naming the problem and the fix when `pixel_values` is not [N, C, S, S]."""
        c, s = self.config.num_channels, self.config.image_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(
                f"`{name}` must be a float tensor [batch, {c}, {s}, {s}], got {shape}. "
                "Prepare images with ComFaceImageProcessor."
            )
        if pixel_values.shape[1] != c:
            raise ValueError(
                f"`{name}` has {pixel_values.shape[1]} channels but the model expects {c}. "
                "Convert images to RGB (ComFaceImageProcessor does this for grayscale and RGBA)."
            )
        if tuple(pixel_values.shape[2:]) != (s, s):
            raise ValueError(
                f"`{name}` is {tuple(pixel_values.shape[2:])} pixels but the model expects ({s}, {s}). "
                f"Resize with ComFaceImageProcessor(crop_size={s}) or build the model with image_size="
                f"{pixel_values.shape[2]}."
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, safetensors only, with clear errors for incomplete local folders."""
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_checkpoint_folder(path, kwargs.get("subfolder", ""))
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, *args, model_card: Optional[dict] = None, push_to_hub: bool = False,
                        **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors) plus a README.md model card rendered from model_card.md.

        Args:
            model_card: values for the card's template (training settings, validation figures...).
            push_to_hub: then upload the written folder, card included, to `repo_id` (default: the folder's name);
                `commit_message`, `commit_description`, `private`, `revision`, `create_pr` and `token` are passed on.
                The card names the repository's real id (e.g. `user/name`).
        """
        kwargs["safe_serialization"] = True
        is_main = kwargs.get("is_main_process", True)
        hub = {name: kwargs.pop(name) for name in ("repo_id", "commit_message", "commit_description", "private",
                                                    "revision", "create_pr") if name in kwargs}
        repo_id = hub.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
        if push_to_hub and is_main:
            from .hub import create_hub_repo

            # The repository first, so that the card is written with its real id (transformers' own push writes the
            # card after the upload, or replaces it with a generic one).
            repo_id = create_hub_repo(repo_id, private=hub.get("private"), token=kwargs.get("token"))
            model_card = {**(model_card or {}), "model_id": repo_id}
        super().save_pretrained(save_directory, *args, **kwargs)
        if is_main:
            from .model_card import write_model_card

            write_model_card(self, save_directory, **(model_card or {}))
            if push_to_hub:
                from .hub import push_folder_to_hub

                push_folder_to_hub(save_directory, repo_id, token=kwargs.get("token"), **hub)

    def push_to_hub(self, repo_id: str, *, commit_message: Optional[str] = None,
                    commit_description: Optional[str] = None, private: Optional[bool] = None, token=None,
                    revision: Optional[str] = None, create_pr: bool = False, max_shard_size="50GB",
                    tags: Optional[list] = None, model_card: Optional[dict] = None) -> str:
        """Save into a temporary folder and upload that folder whole (weights, config, remote code, the model card
        with `repo_id` as its model id). Returns the repository's full id.

        To publish a folder that holds more than the model (image processor, same-person calibration, pipeline code,
        as `training/pretrain.py` writes it), push the folder itself: `comface_hf.hub.push_folder_to_hub(folder, id)`.
        """
        import tempfile

        from .hub import create_hub_repo, push_folder_to_hub

        full_id = create_hub_repo(repo_id, private=private, token=token)
        card = {**(model_card or {}), "model_id": full_id}
        if tags:
            card["tags"] = [*card.get("tags", []), *tags]
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, max_shard_size=max_shard_size, model_card=card)
            return push_folder_to_hub(tmp, full_id, commit_message=commit_message,
                                      commit_description=commit_description, private=private, token=token,
                                      revision=revision, create_pr=create_pr)


def check_checkpoint_folder(folder: str, subfolder: str = "") -> None:
    """Raise a clear error when a local checkpoint folder lacks config.json or safetensors weights."""
    folder = os.path.join(folder, subfolder) if subfolder else folder
    files = set(os.listdir(folder))
    if "config.json" not in files:
        raise FileNotFoundError(
            f"{folder!r} has no config.json, so it is not a ComFace checkpoint folder. Point to a folder written by "
            "`save_pretrained` (config.json + model.safetensors); a training checkpoint written by the trainer "
            "(`checkpoint-*`) resumes with `--resume_from_checkpoint` instead."
        )
    if "model.safetensors" in files or "model.safetensors.index.json" in files:
        return
    pickled = sorted(files.intersection(PICKLE_WEIGHT_NAMES))
    if pickled:
        raise ValueError(
            f"{folder!r} holds only pickle weights ({', '.join(pickled)}); ComFace loads safetensors only, because "
            "unpickling runs arbitrary code. Convert once with "
            f"`python -m comface_hf.convert_to_safetensors {folder}` (loads with torch.load(weights_only=True))."
        )
    raise FileNotFoundError(
        f"{folder!r} has config.json but no model.safetensors: the weights are missing. Re-run `save_pretrained` "
        "or copy model.safetensors into the folder."
    )


class ComFaceModel(ComFacePreTrainedModel):
    """ComFace pretraining model: backbone f, projection head g and difference head l (Fig. 2)."""

    def __init__(self, config: ComFaceConfig):
        super().__init__(config)
        self.backbone = create_backbone(config)
        num_features = self.backbone.num_features
        self.projection_head = ProjectionHead(num_features, config.projection_hidden_size, config.projection_dim)
        self.difference_head = DifferenceHead(num_features)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """h = f(x): `[N, C, S, S]` -> `[N, F]`."""
        self.check_pixel_values(pixel_values)
        return self.backbone(pixel_values)

    def compare(self, pixel_values_x: torch.Tensor, pixel_values_y: torch.Tensor) -> torch.Tensor:
        """d = l(ReLU(f(y) - f(x))): how much the face changed from x to y, `[N]`."""
        _check_same_batch(pixel_values_x, pixel_values_y)
        h = self.get_image_features(torch.cat([pixel_values_x, pixel_values_y]))
        h_x, h_y = h.chunk(2)
        return self.scores_from_features(h_x, h_y)["distance"]

    def get_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """The normalised projection g(h) / |g(h)| `[N, P]` the inter-personal loss compares (cosine similarity)."""
        return F.normalize(self.projection_head(features), dim=-1)

    def scores_from_features(self, h_x: torch.Tensor, h_y: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the tools report for pairs of features `[N, F]`: ``distance`` = l(ReLU(h_y - h_x)) `[N]`, the signed
        ``change`` `[N]` and the same-person ``similarity`` `[N]` (cosine of g(h_x) and g(h_y)).

        A model trained with the signed intra target predicts the change directly; one trained with the paper's
        absolute target only learned its size, so its change is (d(x, y) - d(y, x)) / 2, which flips sign when x and y
        swap."""
        head = self.difference_head
        distance = head(h_y - h_x)
        change = distance if self.config.intra_target == "signed" else 0.5 * (distance - head(h_x - h_y))
        similarity = (self.get_embeddings(h_x) * self.get_embeddings(h_y)).sum(-1)
        return {"change": change, "distance": distance, "similarity": similarity}

    def forward(
        self,
        pixel_values_x1: torch.Tensor,
        pixel_values_x2: Optional[torch.Tensor] = None,
        pixel_values_y: Optional[torch.Tensor] = None,
        alpha_x: Optional[torch.Tensor] = None,
        alpha_y: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
    ) -> ComFaceOutput | tuple:
        r"""
        Args:
            pixel_values_x1: `[N, C, S, S]` first augmented view x~_i of each image x_i.
            pixel_values_x2: `[N, C, S, S]` second view x~_{i+N}; enables L_inter.
            pixel_values_y: `[N, C, S, S]` augmented view y~_i of an edit of the same identity and attribute.
            alpha_x, alpha_y: `[N]` edit intensities of x_i and y_i; with `pixel_values_y` they enable L_intra.

        Returns:
            `ComFaceOutput` (a tuple when `return_dict=False`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        views = {"pixel_values_x1": pixel_values_x1, "pixel_values_x2": pixel_values_x2, "pixel_values_y": pixel_values_y}
        views = {name: value for name, value in views.items() if value is not None}
        for name, value in views.items():
            self.check_pixel_values(value, name)
        _check_same_batch(*views.values(), names=list(views))
        n = pixel_values_x1.shape[0]
        for name, alpha in (("alpha_x", alpha_x), ("alpha_y", alpha_y)):
            if alpha is not None:
                if alpha.numel() != n:
                    raise ValueError(f"`{name}` has {alpha.numel()} values for a batch of {n} pairs; give one per pair.")
                if not torch.isfinite(alpha).all():
                    raise ValueError(f"`{name}` contains NaN or infinite intensities; drop or fix those pairs.")
        if (alpha_x is None) != (alpha_y is None):
            raise ValueError("Give both `alpha_x` and `alpha_y` (or neither): L_intra needs the change between them.")

        # One backbone pass over all views: BatchNorm statistics come from the whole 3N batch, as in SimCLR.
        features = self.backbone(torch.cat(list(views.values())))
        h = dict(zip(views, features.split(n)))
        h_x1, h_x2, h_y = h["pixel_values_x1"], h.get("pixel_values_x2"), h.get("pixel_values_y")

        z1 = z2 = distance = loss_inter = loss_intra = None
        if h_x2 is not None:
            z1, z2 = self.projection_head(torch.cat([h_x1, h_x2])).split(n)
            loss_inter = inter_personal_loss(z1, z2, self.config.temperature, gather=self.config.gather_negatives)
        if h_y is not None:
            distance = self.difference_head(h_y - h_x1)
            if alpha_x is not None:
                loss_intra = intra_personal_loss(
                    distance, alpha_x, alpha_y, absolute=self.config.intra_target == "absolute"
                )
        terms = [
            weight * term
            for weight, term in (
                (self.config.inter_loss_weight, loss_inter),
                (self.config.intra_loss_weight, loss_intra),
            )
            if term is not None and weight > 0
        ]
        loss = sum(terms) if terms else None
        output = ComFaceOutput(
            loss=loss,
            inter_personal_loss=loss_inter,
            intra_personal_loss=loss_intra,
            distance=distance,
            features_x1=h_x1,
            features_x2=h_x2,
            features_y=h_y,
            projections_x1=z1,
            projections_x2=z2,
        )
        return output if return_dict else output.to_tuple()


class ChangeEstimationMixin:
    """Change estimation over `self.backbone` (f: images -> [N, F]) and `self.difference_head` (l), shared by every
    initialisation (ComFace, timm weights, FaceCycle) so that all methods are compared with one head and one loss.

    The class using it provides `check_pixel_values(pixel_values, name)` and a config with `initializer_range`,
    `freeze_backbone` and (optionally) `symmetric_change`.
    """

    def prepare_linear_evaluation(self):
        """Linear evaluation (Sec. 4.2): freeze f (weights and BatchNorm statistics), re-initialise l."""
        self.config.freeze_backbone = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        # torch.nn.init directly: a head loaded from a checkpoint must really be re-drawn.
        nn.init.normal_(self.difference_head.linear.weight, std=self.config.initializer_range)
        nn.init.zeros_(self.difference_head.linear.bias)
        return self

    def scores_from_features(self, h_x: torch.Tensor, h_y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``change`` (the prediction, symmetric when configured) and ``distance`` = l(ReLU(h_y - h_x)), `[N]` each,
        for pairs of features `[N, F]`. A change model has no g: no similarity."""
        symmetric = getattr(self.config, "symmetric_change", False)
        return {"change": change_from_features(self.difference_head, h_x, h_y, symmetric=symmetric).change,
                "distance": self.difference_head(h_y - h_x)}

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self.config, "freeze_backbone", False):  # a frozen f keeps its BatchNorm statistics
            self.backbone.eval()
        return self

    def forward(
        self,
        pixel_values_x: torch.Tensor,
        pixel_values_y: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
    ) -> ChangeEstimationOutput | tuple:
        r"""
        Args:
            pixel_values_x: `[N, C, S, S]` the earlier (reference) image of each pair.
            pixel_values_y: `[N, C, S, S]` the later image of the same person.
            labels: `[N]` signed change value_y - value_x.

        Returns:
            `ChangeEstimationOutput` with `change` `[N]` and features `[N, F]`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_pixel_values(pixel_values_x, "pixel_values_x")
        self.check_pixel_values(pixel_values_y, "pixel_values_y")
        _check_same_batch(pixel_values_x, pixel_values_y)
        h_x, h_y = self.backbone(torch.cat([pixel_values_x, pixel_values_y])).chunk(2)
        output = change_from_features(
            self.difference_head, h_x, h_y, labels, symmetric=getattr(self.config, "symmetric_change", False)
        )
        return output if return_dict else output.to_tuple()


def change_from_features(
    difference_head: DifferenceHead,
    h_x: torch.Tensor,
    h_y: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    symmetric: bool = False,
) -> ChangeEstimationOutput:
    """The change-estimation step after f: change = l(ReLU(h_y - h_x)) `[N]`, MSE against `labels` when given.

    Also used on cached features (linear evaluation trains l on stored f outputs).
    """
    change = difference_head(h_y - h_x)
    if symmetric:
        # l(ReLU(a)) - l(ReLU(-a)) = w.a: swapping x and y flips the sign exactly.
        change = 0.5 * (change - difference_head(h_x - h_y))
    loss = None
    if labels is not None:
        labels = labels.reshape(-1)
        if labels.numel() != change.numel():
            raise ValueError(f"`labels` has {labels.numel()} values for {change.numel()} pairs.")
        if not torch.isfinite(labels).all():
            raise ValueError("`labels` contains NaN or infinite values; drop or fix those pairs.")
        loss = F.mse_loss(change.float(), labels.to(change.device).float())
    return ChangeEstimationOutput(loss=loss, change=change, features_x=h_x, features_y=h_y)


class ComFaceForChangeEstimation(ChangeEstimationMixin, ComFacePreTrainedModel):
    """Downstream model (Sec. 3.4): f and l predict the signed change value_y - value_x, trained with MSE.

    Load it from a ComFace pretraining folder with `from_pretrained` (f and l transfer, g is dropped), build it from
    scratch with `ComFaceForChangeEstimation(ComFaceConfig(...))`, or from timm weights in a local file with
    `from_timm_weights`. `prepare_linear_evaluation()` freezes f and re-initialises l.
    """

    def __init__(self, config: ComFaceConfig):
        super().__init__(config)
        self.backbone = create_backbone(config)
        self.difference_head = DifferenceHead(self.backbone.num_features)
        self.post_init()
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)

    @classmethod
    def from_timm_weights(cls, backbone: str, weights_file: str, **config_kwargs) -> "ComFaceForChangeEstimation":
        """f from a timm model's weights in a local file (.safetensors or .pth, e.g. ImageNet or face recognition
        pre-training); l freshly initialised."""
        from timm.models import load_state_dict

        if not os.path.isfile(weights_file):
            raise FileNotFoundError(f"Backbone weights file {weights_file!r} does not exist.")
        model = cls(ComFaceConfig(backbone=backbone, **config_kwargs))
        state = load_state_dict(weights_file)
        classifier = {
            key for key in state if key not in model.backbone.state_dict() and key.split(".")[0] in ("fc", "head", "classifier")
        }
        missing, unexpected = model.backbone.load_state_dict(
            {k: v for k, v in state.items() if k not in classifier}, strict=False
        )
        if missing or unexpected:
            raise ValueError(
                f"{weights_file!r} does not match timm's {backbone!r}: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). "
                "Pass the backbone name the weights were trained with."
            )
        return model


def _check_same_batch(*tensors: torch.Tensor, names: Optional[list[str]] = None) -> None:
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) > 1:
        names = names or ["pixel_values_x", "pixel_values_y"]
        described = ", ".join(f"{name}={size}" for name, size in zip(names, sizes))
        raise ValueError(f"Batch sizes differ ({described}): every x needs its y; pass pairs of equal length.")


__all__ = [
    "ChangeEstimationMixin",
    "ChangeEstimationOutput",
    "ComFaceForChangeEstimation",
    "ComFaceModel",
    "ComFaceOutput",
    "ComFacePreTrainedModel",
    "change_from_features",
    "check_checkpoint_folder",
    "create_backbone",
]

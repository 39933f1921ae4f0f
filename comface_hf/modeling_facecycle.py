# Copyright 2025 The comface_hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch FaceCycle model (a label-free facial pretraining baseline for ComFace).

FaceCycle (Chang et al., ICCV 2021) learns two representations from unlabeled face videos with two cycles:

* facial-motion cycle: an expression encoder `E_exp` maps a face to an expression code, a motion decoder turns the
  code into a dense flow field, and a generator warps the face's features by that flow to a neutral (de-expressed)
  face. Warping back by the inverse flow must re-express the neutral face into the input. Two frames of the same
  person should share one neutral face, so their neutral faces are exchanged before re-expression.
* identity cycle: an identity encoder `E_id` gives an identity code that modulates instance-normalised features of the
  neutral face. De-identity (one modulation) maps every neutral face to a shared mean face; re-identity (another
  modulation, same code) maps the mean face back to the person's neutral face, which re-expression turns back into
  the input.

This file is an independent re-implementation written from the paper and the authors' public code; see the
module-level notes at the bottom of the docstring of [`FaceCycleModel`] for what is simplified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_facecycle import FaceCycleConfig


try:  # transformers >= 5: init helpers that skip weights already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init


# Constants of the authors' identity-stage objective (not worth separate config knobs).
_IDENTITY_DIRECT_WARP_WEIGHT = 0.8  # pixel-space re-expression of the re-identified face
_DIRECT_NEUTRAL_SYMMETRY_WEIGHT = 0.5  # symmetry of the pixel-warped neutral face vs. the generated one


@dataclass
class FaceCycleOutput(ModelOutput):
    """
    Output of [`FaceCycleModel`]. Image tensors are in the same value space as `pixel_values`; tensors describe the
    `pixel_values` half of the batch only (the `pixel_values_other` frames only contribute to the losses).

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Weighted sum of the loss terms below (see [`FaceCycleConfig`] for the weights).
        reconstruction_loss (`torch.FloatTensor` of shape `()`):
            L1 + SSIM auto-encoding loss of the generator without flow.
        motion_cycle_loss (`torch.FloatTensor` of shape `()`):
            Facial-motion cycle: de-expression, exchange of neutral faces between frames, re-expression, both through
            the generator and by direct pixel warping.
        symmetry_loss (`torch.FloatTensor` of shape `()`):
            Left/right symmetry prior on the neutral faces.
        flow_smoothness_loss (`torch.FloatTensor` of shape `()`):
            Total variation of the flow.
        identity_cycle_loss (`torch.FloatTensor` of shape `()`):
            Identity cycle: neutral -> mean face -> neutral -> re-expressed input.
        mean_face_loss (`torch.FloatTensor` of shape `()`):
            Hinge keeping the mean face within a margin of the neutral faces.
        neutral_face (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            De-expressed face `G(x, flow)`.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            Re-expressed face `G(neutral', backflow)` where `neutral'` is the neutral face of the other frame of the
            same person when `pixel_values_other` is given, else the face's own neutral face.
        identity_reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            The input rebuilt through the full identity cycle (mean face -> re-identity -> re-expression).
        mean_face (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            De-identified mean face (batch mean in training, running mean in eval once trained), repeated per row.
        reidentified_face (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            Neutral face recovered from the mean face with the input's identity code.
        flow (`torch.FloatTensor` of shape `(batch_size, 2, image_size // 4, image_size // 4)`):
            Facial motion in normalised grid units (x, y); sampling the face at `grid + flow` removes the expression.
        backflow (`torch.FloatTensor` of shape `(batch_size, 2, image_size // 4, image_size // 4)`):
            Approximate inverse of `flow`, used to re-express a neutral face.
        expression_features (`torch.FloatTensor` of shape `(batch_size, expression_dim)`):
            Expression representation (tanh-bounded), the transfer-learning feature.
        identity_features (`torch.FloatTensor` of shape `(batch_size, identity_dim)`):
            Identity representation (tanh-bounded).
    """

    loss: Optional[torch.FloatTensor] = None
    reconstruction_loss: Optional[torch.FloatTensor] = None
    motion_cycle_loss: Optional[torch.FloatTensor] = None
    symmetry_loss: Optional[torch.FloatTensor] = None
    flow_smoothness_loss: Optional[torch.FloatTensor] = None
    identity_cycle_loss: Optional[torch.FloatTensor] = None
    mean_face_loss: Optional[torch.FloatTensor] = None
    neutral_face: Optional[torch.FloatTensor] = None
    reconstruction: Optional[torch.FloatTensor] = None
    identity_reconstruction: Optional[torch.FloatTensor] = None
    mean_face: Optional[torch.FloatTensor] = None
    reidentified_face: Optional[torch.FloatTensor] = None
    flow: Optional[torch.FloatTensor] = None
    backflow: Optional[torch.FloatTensor] = None
    expression_features: Optional[torch.FloatTensor] = None
    identity_features: Optional[torch.FloatTensor] = None


# --------------------------------------------------------------------------------------------------------------------
# Functional helpers
# --------------------------------------------------------------------------------------------------------------------


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp `image` [B, C, H, W] by `flow` [B, 2, h, w] (normalised grid units, resized to H x W).

    Output pixel p takes the value of `image` at `p + flow(p)`. Border padding (the original pads with zeros) avoids
    black frames that the symmetry and SSIM terms would otherwise have to explain.
    """
    batch, _, height, width = image.shape
    if flow.shape[-2:] != (height, width):
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=True)
    ys = torch.linspace(-1.0, 1.0, height, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=image.device, dtype=image.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    base_grid = torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0)  # grid_sample wants (x, y) last
    grid = base_grid + flow.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def invert_flow(flow: torch.Tensor) -> torch.Tensor:
    """First-order inverse of a backward flow: `-flow(p + flow(p))`, as in the original `exptoflow`."""
    return -warp(flow, flow)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Mean structural similarity with a box window (cheap and differentiable; the original uses an 11x11 Gaussian).

    Constants assume a dynamic range of about 1 (images in [0, 1] or standardised), which is what this model sees.
    """
    c1, c2 = 0.01**2, 0.03**2
    pad = window // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    mu_x = F.avg_pool2d(x, window, 1)
    mu_y = F.avg_pool2d(y, window, 1)
    sigma_x = F.avg_pool2d(x * x, window, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, window, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, window, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return (numerator / denominator).mean()


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Clamped at 0 because the box-window SSIM can exceed 1 by rounding; the losses must stay >= 0.
    return (1.0 - ssim(x, y)).clamp(min=0.0)


def symmetry_loss(image: torch.Tensor) -> torch.Tensor:
    """L1 between the left half and the mirrored right half: neutral frontal faces are roughly symmetric."""
    width = image.shape[-1]
    half = width // 2
    left = image[..., :half]
    right = torch.flip(image[..., width - half :], dims=[-1])
    return (left - right).abs().mean()


def total_variation(flow: torch.Tensor) -> torch.Tensor:
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., :, 1:] - flow[..., :, :-1]).abs().mean()


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, slope: float, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2), nn.LeakyReLU(slope)
    )


class FaceCycleResidualBlock(nn.Module):
    """conv-act-conv + skip, without normalisation (as the original `BasicBlockNormal`)."""

    def __init__(self, channels: int, slope: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.LeakyReLU(slope)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(hidden + self.conv2(self.act(self.conv1(hidden))))


class FaceCycleCodeEncoder(nn.Module):
    """CNN mapping a face [B, C, H, W] to a tanh-bounded code [B, out_dim] (used for both E_exp and E_id).

    The spatial map at H/16 is flattened rather than pooled because expression is a matter of *where* things are
    (the original does the same).
    """

    def __init__(self, config: FaceCycleConfig, out_dim: int):
        super().__init__()
        c, s = config.base_channels, config.leaky_relu_slope
        self.stem = nn.Sequential(_conv(config.num_channels, c, s, kernel_size=7, stride=2), _conv(c, c, s))  # H/2
        self.stage2 = nn.Sequential(
            _conv(c, 2 * c, s, stride=2),  # H/4
            _conv(2 * c, 2 * c, s),
            FaceCycleResidualBlock(2 * c, s),
            FaceCycleResidualBlock(2 * c, s),
            _conv(2 * c, 2 * c, s, stride=2),  # H/8
        )
        self.stage3 = nn.Sequential(_conv(2 * c, 4 * c, s, stride=2), _conv(4 * c, 2 * c, s))  # H/16
        spatial = config.image_size // 16
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * c * spatial * spatial, config.encoder_hidden_dim),
            nn.LeakyReLU(s),
            nn.Linear(config.encoder_hidden_dim, out_dim),
            nn.Tanh(),
        )
        self.out_dim = out_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, C, H, W] -> code [B, out_dim]."""
        return self.head(self.stage3(self.stage2(self.stem(pixel_values))))


class FaceCycleFlowHead(nn.Conv2d):
    """1x1 conv to the 2 flow channels; its own class so `_init_weights` can give it a small init."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels, 2, kernel_size=1, bias=False)


class FaceCycleFlowDecoder(nn.Module):
    """Expression code [B, D] -> facial motion (flow) [B, 2, H/4, W/4] and its inverse."""

    def __init__(self, config: FaceCycleConfig):
        super().__init__()
        c, s = config.base_channels, config.leaky_relu_slope
        self.spatial = config.image_size // 16
        self.proj = nn.Linear(config.expression_dim, 4 * c * self.spatial * self.spatial)
        self.act = nn.LeakyReLU(s)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), _conv(4 * c, 2 * c, s))
        self.blocks = nn.Sequential(FaceCycleResidualBlock(2 * c, s), FaceCycleResidualBlock(2 * c, s))
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), _conv(2 * c, c, s))
        self.to_flow = FaceCycleFlowHead(c)
        self.max_flow = config.max_flow

    def forward(self, expression_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = expression_code.shape[0]
        hidden = self.act(self.proj(expression_code)).view(batch, -1, self.spatial, self.spatial)  # H/16
        hidden = self.up2(self.blocks(self.up1(hidden)))  # H/4
        flow = torch.tanh(self.to_flow(hidden)) * self.max_flow
        return flow, invert_flow(flow)


class FaceCycleImageEncoder(nn.Module):
    """Shallow feature pyramid of an image: a skip map at H/2 (2c channels) and a deep map at H/4 (4c channels)."""

    def __init__(self, config: FaceCycleConfig):
        super().__init__()
        c, s = config.base_channels, config.leaky_relu_slope
        self.stem = _conv(config.num_channels, c, s)
        self.down1 = nn.Sequential(_conv(c, 2 * c, s, stride=2), _conv(2 * c, 2 * c, s))
        self.down2 = nn.Sequential(_conv(2 * c, 4 * c, s, stride=2), _conv(4 * c, 4 * c, s))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.down1(self.stem(pixel_values))
        return skip, self.down2(skip)


class FaceCycleMotionGenerator(nn.Module):
    """G(x, flow): warps the features of x by the flow and decodes a face; G(x, None) auto-encodes x.

    Warping features instead of pixels lets the decoder fill regions the motion uncovers (e.g. teeth, closed eyes).
    """

    def __init__(self, config: FaceCycleConfig):
        super().__init__()
        c, s = config.base_channels, config.leaky_relu_slope
        self.encoder = FaceCycleImageEncoder(config)
        # Residual features from noise + the global face colour, added after warping (original `noise_encoding*`).
        self.fill_skip = nn.Sequential(_conv(2 * c, 2 * c, s), _conv(2 * c, 2 * c, s))
        self.fill_deep = nn.Sequential(_conv(4 * c, 4 * c, s), _conv(4 * c, 4 * c, s))
        self.reduce = _conv(4 * c, 4 * c, s)
        self.blocks = nn.Sequential(*[FaceCycleResidualBlock(4 * c, s) for _ in range(config.num_generator_blocks)])
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.LeakyReLU(s), _conv(2 * c, 2 * c, s))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * c, c, 4, 2, 1), nn.LeakyReLU(s), _conv(c, c, s))
        self.to_rgb = nn.Conv2d(c, config.num_channels, 3, 1, 1)
        self.use_noise = config.generator_noise

    def _fill(self, features: torch.Tensor, block: nn.Module) -> torch.Tensor:
        global_face = F.adaptive_avg_pool2d(features, 1)
        if self.use_noise and self.training:
            seed = torch.randn_like(features) + global_face
        else:  # deterministic at inference
            seed = global_face.expand_as(features)
        return block(seed)

    def forward(self, pixel_values: torch.Tensor, flow: Optional[torch.Tensor] = None) -> torch.Tensor:
        skip, deep = self.encoder(pixel_values)
        if flow is not None:
            skip = warp(skip, flow) + self._fill(skip, self.fill_skip)
            deep = warp(deep, flow) + self._fill(deep, self.fill_deep)
        hidden = self.up1(self.blocks(self.reduce(deep)))
        hidden = self.up2(torch.cat([skip, hidden], dim=1))
        return self.to_rgb(hidden)


class FaceCycleIdentityModulation(nn.Module):
    """Instance-normalise features, then re-apply per-channel scale/shift predicted from the identity code.

    Instance norm strips each face's own feature statistics (where much of identity lives); the code-conditioned
    affine puts either the mean-face statistics (de-identity) or the person's statistics (re-identity) back.
    """

    def __init__(self, channels: int, identity_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.scale = nn.Linear(identity_dim, channels)
        self.shift = nn.Linear(identity_dim, channels)

    def forward(self, features: torch.Tensor, identity_code: torch.Tensor) -> torch.Tensor:
        # (1 + scale) so that a near-zero initial code keeps the normalised features instead of zeroing them.
        scale = 1.0 + self.scale(identity_code)[:, :, None, None]
        shift = self.shift(identity_code)[:, :, None, None]
        return self.norm(features) * scale + shift


class FaceCycleIdentityNormalizer(nn.Module):
    """N(x, code, mode): de-identity (mode="deidentify") or re-identity (mode="reidentify") of a neutral face."""

    def __init__(self, config: FaceCycleConfig):
        super().__init__()
        c, s = config.base_channels, config.leaky_relu_slope
        self.encoder = FaceCycleImageEncoder(config)
        self.deidentify = FaceCycleIdentityModulation(4 * c, config.identity_dim)
        self.reidentify = FaceCycleIdentityModulation(4 * c, config.identity_dim)
        self.blocks = nn.Sequential(*[FaceCycleResidualBlock(4 * c, s) for _ in range(config.num_normalizer_blocks)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1),
            nn.LeakyReLU(s),
            _conv(2 * c, 2 * c, s),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1),
            nn.LeakyReLU(s),
        )
        self.to_rgb = nn.Conv2d(c, config.num_channels, 3, 1, 1)

    def forward(self, pixel_values: torch.Tensor, identity_code: torch.Tensor, mode: str) -> torch.Tensor:
        _, deep = self.encoder(pixel_values)
        if mode == "deidentify":
            deep = self.deidentify(deep, identity_code)
        elif mode == "reidentify":
            deep = self.reidentify(deep, identity_code)
        else:
            raise ValueError(f"mode must be 'deidentify' or 'reidentify', got {mode!r}")
        return self.to_rgb(self.up(self.blocks(deep)))


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class FaceCyclePreTrainedModel(PreTrainedModel):
    config_class = FaceCycleConfig
    base_model_prefix = "facecycle"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, FaceCycleFlowHead):
            # Small flow head => near-identity warps at initialisation (std 0.05 as in the original), so the generator
            # first learns to auto-encode before the motion becomes meaningful. Checked before the Conv2d branch.
            init.normal_(module.weight, mean=0.0, std=0.05)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # He init (fan_out) as the original: keeps activations alive through the unnormalised conv stacks.
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, FaceCycleModel):
            init.zeros_(module.running_mean_face)
            init.zeros_(module.num_mean_face_updates)


class FaceCycleModel(FaceCyclePreTrainedModel):
    r"""
    FaceCycle: expression encoder, identity encoder, flow decoder, motion generator and identity normaliser trained
    with the facial-motion and identity cycle-consistency losses.

    `expression_encoder` (an `nn.Module` [B, C, H, W] -> [B, expression_dim]) and `expression_dim` let the model serve
    as the backbone of downstream change estimation, like ComFace's image encoder.

    Differences from the authors' code (kept on purpose for a small, self-contained baseline):
    - one-stage training; `identity_stop_gradient=True` reproduces the original's frozen expression stage during the
      identity stage;
    - no VGG: the generator/normaliser encoders are trained from scratch (no pretrained weights offline) and the Gram
      perceptual loss is dropped; SSIM uses a 3x3 box window;
    - no self-attention blocks and fewer/narrower residual blocks;
    - border padding in warps, a running mean face for eval, a light flow TV prior, and the mean-face margin term as a
      hinge (the original's margin line is a no-op, leaving a plain shifted L1).
    """

    def __init__(self, config: FaceCycleConfig):
        super().__init__(config)
        self.expression_dim = config.expression_dim
        self.identity_dim = config.identity_dim
        self.expression_encoder_module = FaceCycleCodeEncoder(config, config.expression_dim)
        self.identity_encoder_module = FaceCycleCodeEncoder(config, config.identity_dim)
        self.flow_decoder = FaceCycleFlowDecoder(config)
        self.generator = FaceCycleMotionGenerator(config)
        self.normalizer = FaceCycleIdentityNormalizer(config)
        size = config.image_size
        # Running mean face: eval-time stand-in for the training batch mean, so one image still gets a population face.
        self.register_buffer("running_mean_face", torch.zeros(config.num_channels, size, size))
        self.register_buffer("num_mean_face_updates", torch.zeros((), dtype=torch.long))
        self.post_init()

    # ---- public feature API ----------------------------------------------------------------------------------------

    @property
    def expression_encoder(self) -> nn.Module:
        """E_exp: [B, num_channels, image_size, image_size] -> [B, expression_dim]."""
        return self.expression_encoder_module

    @property
    def identity_encoder(self) -> nn.Module:
        """E_id: [B, num_channels, image_size, image_size] -> [B, identity_dim]."""
        return self.identity_encoder_module

    def get_expression_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """pixel_values [B, C, H, W] -> expression features [B, expression_dim] (the transfer-learning output)."""
        self._check_pixel_values(pixel_values, "pixel_values")
        return self.expression_encoder_module(pixel_values)

    def get_identity_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """pixel_values [B, C, H, W] -> identity features [B, identity_dim]."""
        self._check_pixel_values(pixel_values, "pixel_values")
        return self.identity_encoder_module(pixel_values)

    # ---- validation ------------------------------------------------------------------------------------------------

    def _check_pixel_values(self, pixel_values: torch.Tensor, name: str) -> None:
        size, channels = self.config.image_size, self.config.num_channels
        expected = f"[batch_size, {channels}, {size}, {size}]"
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"FaceCycleModel expects `{name}` to be a torch.Tensor of shape {expected}, "
                f"got {type(pixel_values).__name__}."
            )
        if pixel_values.dim() != 4:
            raise ValueError(
                f"FaceCycleModel expects `{name}` of shape {expected}, got {list(pixel_values.shape)}; "
                "add a batch dimension (e.g. `pixel_values[None]`) for a single image."
            )
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"FaceCycleModel expects `{name}` with {channels} channels, got {pixel_values.shape[1]} "
                f"(shape {list(pixel_values.shape)}); convert the images to {channels} channels (RGB for 3) "
                f"or build the model with FaceCycleConfig(num_channels={pixel_values.shape[1]})."
            )
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"FaceCycleModel expects `{name}` of size {size}x{size} (config.image_size), got "
                f"{pixel_values.shape[-2]}x{pixel_values.shape[-1]}; resize/crop the faces to {size}x{size} "
                f"(e.g. torch.nn.functional.interpolate) or use a model with FaceCycleConfig(image_size=...)."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"FaceCycleModel expects floating-point `{name}`, got dtype {pixel_values.dtype}; "
                "convert with .float() (and scale uint8 images to [0, 1])."
            )

    # ---- forward ---------------------------------------------------------------------------------------------------

    def _mean_face(self, deidentified: torch.Tensor) -> torch.Tensor:
        """Mean face [C, H, W]: batch mean while training (original), running mean in eval once trained."""
        if self.training:
            batch_mean = deidentified.mean(dim=0)
            with torch.no_grad():
                momentum = 1.0 if int(self.num_mean_face_updates) == 0 else self.config.mean_face_momentum
                self.running_mean_face.lerp_(batch_mean.detach().to(self.running_mean_face.dtype), momentum)
                self.num_mean_face_updates += 1
            return batch_mean
        if int(self.num_mean_face_updates) > 0:
            return self.running_mean_face.to(deidentified.dtype)
        return deidentified.mean(dim=0)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        pixel_values_other: Optional[torch.FloatTensor] = None,
        return_dict: Optional[bool] = None,
    ) -> FaceCycleOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Faces, ideally in [0, 1] (any fixed normalisation works; outputs are in the same space).
            pixel_values_other (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`, *optional*):
                Another frame of the same person for every row of `pixel_values` (another video frame; the synthetic
                corpus's attribute sweeps of one identity stand in). The two frames are expected to share one neutral
                face, so their neutral faces are exchanged before re-expression. Without it each face is re-expressed
                from its own neutral face.
            return_dict (`bool`, *optional*):
                Return a [`FaceCycleOutput`] (default) instead of a tuple.

        Returns:
            [`FaceCycleOutput`] with all loss terms (always computed: the method is self-supervised) and the images
            and features of the `pixel_values` rows.
        """
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        self._check_pixel_values(pixel_values, "pixel_values")
        batch = pixel_values.shape[0]
        if pixel_values_other is not None:
            self._check_pixel_values(pixel_values_other, "pixel_values_other")
            if pixel_values_other.shape[0] != batch:
                raise ValueError(
                    f"`pixel_values_other` must hold one other frame of the same person per row of `pixel_values`: "
                    f"got batch sizes {pixel_values_other.shape[0]} and {batch}; pair the frames row by row."
                )
            faces = torch.cat([pixel_values, pixel_values_other], dim=0)
        else:
            faces = pixel_values
        cfg = self.config

        # ---- facial-motion cycle -----------------------------------------------------------------------------------
        expression_code = self.expression_encoder_module(faces)  # [N, D_exp]
        flow, backflow = self.flow_decoder(expression_code)  # [N, 2, H/4, W/4] each
        neutral = self.generator(faces, flow)  # de-expression
        autoencoded = self.generator(faces, None)

        def exchange(tensor: torch.Tensor) -> torch.Tensor:
            # Frames of one person share a neutral face: hand each frame the other frame's one.
            return torch.cat([tensor[batch:], tensor[:batch]], dim=0) if pixel_values_other is not None else tensor

        neutral_exchanged = exchange(neutral)
        reexpressed = self.generator(neutral_exchanged, backflow)  # re-expression through the generator
        reexpressed_by_warp = warp(neutral_exchanged, backflow)  # ... and by plain warping of the neutral face
        direct_neutral = warp(faces, flow)  # pixel-space de-expression
        direct_cycle = warp(exchange(direct_neutral), backflow)  # pixel-space cycle

        reconstruction_loss = F.l1_loss(autoencoded, faces) + cfg.ssim_weight * ssim_loss(autoencoded, faces)
        motion_cycle_loss = (
            F.l1_loss(reexpressed, faces)
            + F.l1_loss(reexpressed_by_warp, faces)
            + cfg.direct_warp_weight * F.l1_loss(direct_cycle, faces)
            + cfg.ssim_weight * (ssim_loss(reexpressed, faces) + cfg.direct_warp_weight * ssim_loss(direct_cycle, faces))
        )
        sym_loss = symmetry_loss(neutral) + _DIRECT_NEUTRAL_SYMMETRY_WEIGHT * symmetry_loss(direct_neutral)
        smoothness_loss = total_variation(flow)

        # ---- identity cycle ----------------------------------------------------------------------------------------
        identity_code = self.identity_encoder_module(faces)  # [N, D_id]
        if cfg.identity_stop_gradient:
            neutral_in, backflow_in = neutral.detach(), backflow.detach()
            # Frozen view of G: gradients reach the re-identified face but not G's weights (the original's stage 2).
            frozen = {name: p.detach() for name, p in self.generator.named_parameters()}
            run_generator = lambda x, f: torch.func.functional_call(self.generator, frozen, (x, f))  # noqa: E731
        else:
            neutral_in, backflow_in = neutral, backflow
            run_generator = self.generator
        deidentified = self.normalizer(neutral_in, identity_code, mode="deidentify")
        mean_face = self._mean_face(deidentified).unsqueeze(0).expand_as(deidentified)
        reidentified = self.normalizer(mean_face, identity_code, mode="reidentify")
        identity_reconstruction = run_generator(reidentified, backflow_in)
        identity_by_warp = warp(reidentified, backflow_in)

        identity_cycle_loss = (
            F.l1_loss(identity_reconstruction, faces)
            + _IDENTITY_DIRECT_WARP_WEIGHT * F.l1_loss(identity_by_warp, faces)
            + F.l1_loss(reidentified, neutral_in)
            + cfg.ssim_weight
            * (ssim_loss(identity_reconstruction, faces) + _IDENTITY_DIRECT_WARP_WEIGHT * ssim_loss(identity_by_warp, faces))
            + cfg.symmetry_weight * symmetry_loss(reidentified)
        )
        mean_face_loss = F.relu((mean_face - neutral_in).abs() - cfg.mean_face_margin).mean()

        loss = (
            cfg.reconstruction_weight * reconstruction_loss
            + cfg.motion_cycle_weight * motion_cycle_loss
            + cfg.symmetry_weight * sym_loss
            + cfg.flow_smoothness_weight * smoothness_loss
            + cfg.identity_cycle_weight * (identity_cycle_loss + cfg.mean_face_margin_weight * mean_face_loss)
        )

        first = slice(0, batch)  # report the `pixel_values` rows only
        output = FaceCycleOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            motion_cycle_loss=motion_cycle_loss,
            symmetry_loss=sym_loss,
            flow_smoothness_loss=smoothness_loss,
            identity_cycle_loss=identity_cycle_loss,
            mean_face_loss=mean_face_loss,
            neutral_face=neutral[first],
            reconstruction=reexpressed[first],
            identity_reconstruction=identity_reconstruction[first],
            mean_face=mean_face[first],
            reidentified_face=reidentified[first],
            flow=flow[first],
            backflow=backflow[first],
            expression_features=expression_code[first],
            identity_features=identity_code[first],
        )
        return output if return_dict else output.to_tuple()


__all__ = ["FaceCycleModel", "FaceCyclePreTrainedModel", "FaceCycleOutput"]


# --------------------------------------------------------------------------------------------------------------------
# Change estimation (transfer learning with the expression encoder as f)
# --------------------------------------------------------------------------------------------------------------------

from .modeling_comface import ChangeEstimationMixin, DifferenceHead  # noqa: E402  (appended section; no cycle)


class FaceCycleForChangeEstimation(ChangeEstimationMixin, FaceCyclePreTrainedModel):
    r"""FaceCycle's expression encoder as the backbone f of ComFace's change estimation (Sec. 3.4 protocol).

    f = `FaceCycleCodeEncoder` (E_exp: [B, C, S, S] -> [B, expression_dim]); l = the same `DifferenceHead` as
    `ComFaceForChangeEstimation`, so every method is compared with one head: change = l(ReLU(f(y) - f(x))), trained with
    MSE against value_y - value_x. Same forward signature, outputs and `prepare_linear_evaluation()` as
    `ComFaceForChangeEstimation`. Build it from a FaceCycle pretraining folder with `from_facecycle(folder)`; the
    identity encoder, flow decoder, generator and normaliser are dropped.

    Inputs follow FaceCycle's pretraining normalisation ([0, 1] unless the folder's image processor says otherwise).
    """

    def __init__(self, config: FaceCycleConfig):
        super().__init__(config)
        self.backbone = FaceCycleCodeEncoder(config, config.expression_dim)
        self.difference_head = DifferenceHead(config.expression_dim)
        self.post_init()
        if getattr(config, "freeze_backbone", False):
            self.backbone.requires_grad_(False)

    @classmethod
    def from_facecycle(cls, pretrained_model_name_or_path, **kwargs) -> "FaceCycleForChangeEstimation":
        """f from a `FaceCycleModel` folder (or Hub id) written by `save_pretrained`; l freshly initialised.

        `kwargs` go to `FaceCycleModel.from_pretrained` (e.g. `cache_dir`, `revision`).
        """
        pretrained = FaceCycleModel.from_pretrained(pretrained_model_name_or_path, **kwargs)
        model = cls(pretrained.config)
        # The expression encoder is the transferred representation (FaceCycle's own downstream use).
        model.backbone.load_state_dict(pretrained.expression_encoder_module.state_dict())
        return model

    def check_pixel_values(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
        FaceCycleModel._check_pixel_values(self, pixel_values, name)


__all__ = __all__ + ["FaceCycleForChangeEstimation"]

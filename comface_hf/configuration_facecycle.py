# Copyright 2025 The comface_hf authors. Licensed under the Apache License, Version 2.0.
"""FaceCycle model configuration.

FaceCycle (Chang et al., "Learning Facial Representations from the Cycle-consistency of Face", ICCV 2021) is a
label-free pretraining method used in this project as a baseline against ComFace. See `modeling_facecycle.py` for
the architecture and the losses.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class FaceCycleConfig(PretrainedConfig):
    r"""
    Configuration of a [`FaceCycleModel`].

    The defaults follow the paper's 64x64 face crops and the authors' loss weights; the network widths are slimmer
    than the original (base width 32 instead of 64, fewer residual blocks) so the model trains on small hardware.

    Args:
        image_size (`int`, *optional*, defaults to 64):
            Height and width of the (square) input images. Must be a multiple of 16 because the encoders downsample
            four times by 2 before flattening the spatial map into the feature vector.
        num_channels (`int`, *optional*, defaults to 3):
            Number of input image channels.
        base_channels (`int`, *optional*, defaults to 32):
            Width of the first convolution of every sub-network; deeper stages use 2x and 4x this width.
        expression_dim (`int`, *optional*, defaults to 256):
            Size of the expression feature vector (the output of the expression encoder, used for transfer learning).
        identity_dim (`int`, *optional*, defaults to 256):
            Size of the identity feature vector (the identity code that drives the de-/re-identity normalisation).
        encoder_hidden_dim (`int`, *optional*, defaults to 512):
            Hidden width of the two-layer MLP head of the expression and identity encoders.
        num_generator_blocks (`int`, *optional*, defaults to 4):
            Residual blocks in the motion (de-/re-expression) generator (8 in the original).
        num_normalizer_blocks (`int`, *optional*, defaults to 3):
            Residual blocks in the identity normaliser (7 in the original).
        max_flow (`float`, *optional*, defaults to 0.5):
            Bound of the predicted flow in normalised [-1, 1] grid units (`tanh(x) * max_flow`); 0.5 means a quarter
            of the image width. The original uses 1.0.
        generator_noise (`bool`, *optional*, defaults to `True`):
            Inject Gaussian noise (plus the globally pooled face feature) into the warped generator features during
            training, as the original does, so the generator can hallucinate regions uncovered by the warp. Never used
            in eval mode, which keeps inference deterministic.
        identity_stop_gradient (`bool`, *optional*, defaults to `True`):
            The original trains in two stages (expression first, then identity with the expression networks frozen).
            When `True` the identity cycle sees detached expression outputs and a detached copy of the generator, so
            joint training reproduces that separation in a single stage.
        mean_face_momentum (`float`, *optional*, defaults to 0.01):
            Momentum of the running mean face that replaces the batch mean face in eval mode (so a single image still
            gets a population mean face).
        reconstruction_weight (`float`, *optional*, defaults to 1.0):
            Weight of the plain auto-encoding loss of the generator (no flow).
        motion_cycle_weight (`float`, *optional*, defaults to 1.0):
            Weight of the facial-motion cycle (de-expression then re-expression, with neutral faces exchanged between
            frames of the same person when `pixel_values_other` is given).
        direct_warp_weight (`float`, *optional*, defaults to 1.5):
            Relative weight, inside the motion cycle, of the pixel-space cycle `warp(warp(x, flow), backflow)`.
        ssim_weight (`float`, *optional*, defaults to 5.0):
            Weight of the (1 - SSIM) terms relative to the L1 terms.
        symmetry_weight (`float`, *optional*, defaults to 1.5):
            Weight of the left/right symmetry prior on neutral faces.
        identity_cycle_weight (`float`, *optional*, defaults to 1.0):
            Weight of the identity cycle (de-identity to the mean face, then re-identity). Set to 0 to train only the
            expression stage.
        mean_face_margin_weight (`float`, *optional*, defaults to 1.0):
            Weight of the hinge loss keeping the mean face within `mean_face_margin` of the neutral faces.
        mean_face_margin (`float`, *optional*, defaults to 0.1):
            Margin of that hinge, in pixel units.
        flow_smoothness_weight (`float`, *optional*, defaults to 0.01):
            Weight of a total-variation prior on the flow (not used by the original training script; small by default).
        leaky_relu_slope (`float`, *optional*, defaults to 0.1):
            Negative slope of the LeakyReLU activations.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of linear layers.
        generator_spec (`dict` or `list[dict]`, *optional*):
            The generator that rendered the pretraining pairs (`comface_hf.synthesis.spec.GeneratorSpec.to_dict()`,
            a list for a mixture); `None` for older folders and corpus runs.

    Example:

    ```python
    >>> from comface_hf.configuration_facecycle import FaceCycleConfig
    >>> from comface_hf.modeling_facecycle import FaceCycleModel
    >>> model = FaceCycleModel(FaceCycleConfig(image_size=64))
    ```
    """

    model_type = "facecycle"

    def __init__(
        self,
        image_size: int = 64,
        num_channels: int = 3,
        base_channels: int = 32,
        expression_dim: int = 256,
        identity_dim: int = 256,
        encoder_hidden_dim: int = 512,
        num_generator_blocks: int = 4,
        num_normalizer_blocks: int = 3,
        max_flow: float = 0.5,
        generator_noise: bool = True,
        identity_stop_gradient: bool = True,
        mean_face_momentum: float = 0.01,
        reconstruction_weight: float = 1.0,
        motion_cycle_weight: float = 1.0,
        direct_warp_weight: float = 1.5,
        ssim_weight: float = 5.0,
        symmetry_weight: float = 1.5,
        identity_cycle_weight: float = 1.0,
        mean_face_margin_weight: float = 1.0,
        mean_face_margin: float = 0.1,
        flow_smoothness_weight: float = 0.01,
        leaky_relu_slope: float = 0.1,
        initializer_range: float = 0.02,
        generator_spec: dict | list | None = None,
        **kwargs,
    ):
        for name, value in (
            ("image_size", image_size),
            ("num_channels", num_channels),
            ("base_channels", base_channels),
            ("expression_dim", expression_dim),
            ("identity_dim", identity_dim),
            ("encoder_hidden_dim", encoder_hidden_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FaceCycleConfig.{name} must be a positive integer, got {value!r}.")
        if image_size % 16 != 0:
            raise ValueError(
                f"FaceCycleConfig.image_size must be a multiple of 16 (the encoders downsample by 16), got "
                f"{image_size}; use e.g. 32, 64 or 128."
            )
        for name, value in (("num_generator_blocks", num_generator_blocks), ("num_normalizer_blocks", num_normalizer_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"FaceCycleConfig.{name} must be a non-negative integer, got {value!r}.")
        if not 0.0 < float(max_flow) <= 2.0:
            raise ValueError(f"FaceCycleConfig.max_flow must be in (0, 2] (normalised grid units), got {max_flow}.")
        if not 0.0 < float(mean_face_momentum) <= 1.0:
            raise ValueError(f"FaceCycleConfig.mean_face_momentum must be in (0, 1], got {mean_face_momentum}.")
        for name, value in (
            ("reconstruction_weight", reconstruction_weight),
            ("motion_cycle_weight", motion_cycle_weight),
            ("direct_warp_weight", direct_warp_weight),
            ("ssim_weight", ssim_weight),
            ("symmetry_weight", symmetry_weight),
            ("identity_cycle_weight", identity_cycle_weight),
            ("mean_face_margin_weight", mean_face_margin_weight),
            ("mean_face_margin", mean_face_margin),
            ("flow_smoothness_weight", flow_smoothness_weight),
            ("leaky_relu_slope", leaky_relu_slope),
        ):
            if float(value) < 0.0:
                raise ValueError(f"FaceCycleConfig.{name} must be >= 0, got {value}.")
        if float(initializer_range) <= 0.0:
            raise ValueError(f"FaceCycleConfig.initializer_range must be > 0, got {initializer_range}.")

        self.image_size = image_size
        self.num_channels = num_channels
        self.base_channels = base_channels
        self.expression_dim = expression_dim
        self.identity_dim = identity_dim
        self.encoder_hidden_dim = encoder_hidden_dim
        self.num_generator_blocks = num_generator_blocks
        self.num_normalizer_blocks = num_normalizer_blocks
        self.max_flow = float(max_flow)
        self.generator_noise = bool(generator_noise)
        self.identity_stop_gradient = bool(identity_stop_gradient)
        self.mean_face_momentum = float(mean_face_momentum)
        self.reconstruction_weight = float(reconstruction_weight)
        self.motion_cycle_weight = float(motion_cycle_weight)
        self.direct_warp_weight = float(direct_warp_weight)
        self.ssim_weight = float(ssim_weight)
        self.symmetry_weight = float(symmetry_weight)
        self.identity_cycle_weight = float(identity_cycle_weight)
        self.mean_face_margin_weight = float(mean_face_margin_weight)
        self.mean_face_margin = float(mean_face_margin)
        self.flow_smoothness_weight = float(flow_smoothness_weight)
        self.leaky_relu_slope = float(leaky_relu_slope)
        self.initializer_range = float(initializer_range)
        self.generator_spec = generator_spec
        super().__init__(**kwargs)


__all__ = ["FaceCycleConfig"]

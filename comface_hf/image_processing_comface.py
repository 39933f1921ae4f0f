"""ComFace image processor: any image (PIL, numpy, torch; RGB, grayscale or RGBA) -> normalised [N, 3, S, S]."""

from __future__ import annotations

import numpy as np
import torch
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling

# The synthetic corpus is rendered without any dataset statistics; ComFace trains from scratch, so a symmetric
# normalisation to [-1, 1] is used for every backbone.
COMFACE_MEAN = [0.5, 0.5, 0.5]
COMFACE_STD = [0.5, 0.5, 0.5]


class ComFaceImageProcessor(TorchvisionBackend):
    r"""Resize the shorter side to `size["shortest_edge"]`, centre-crop to `crop_size`, rescale to [0, 1] and
    normalise with `image_mean` / `image_std`.

    Accepts PIL images, numpy arrays and torch tensors, channels first or last, uint8 in [0, 255] (or floats with
    `do_rescale=False`). Grayscale is repeated to three channels, RGBA drops its alpha channel.

    Example:
        >>> processor = ComFaceImageProcessor(crop_size=112)
        >>> batch = processor([pil_image_x, pil_image_y], return_tensors="pt")  # pixel_values [2, 3, 112, 112]
    """

    resample = PILImageResampling.BILINEAR
    image_mean = COMFACE_MEAN
    image_std = COMFACE_STD
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def __init__(self, crop_size: int | dict | None = None, **kwargs):
        # One number sets the model's input size; the resize keeps the crop's share of the image.
        if isinstance(crop_size, int):
            kwargs.setdefault("size", {"shortest_edge": crop_size})
            crop_size = {"height": crop_size, "width": crop_size}
        if crop_size is not None:
            kwargs["crop_size"] = crop_size
        super().__init__(**kwargs)

    def process_image(self, image, *args, **kwargs) -> torch.Tensor:
        """One raw image -> uint8/float tensor [3, H, W]; errors name unreadable inputs."""
        if isinstance(image, np.ndarray) or isinstance(image, torch.Tensor):
            if image.ndim not in (2, 3) or (image.ndim == 3 and min(image.shape[0], image.shape[-1]) not in (1, 3, 4)):
                raise ValueError(
                    f"Cannot read an image of shape {tuple(image.shape)}: expected [H, W], [H, W, C] or [C, H, W] "
                    "with C in (1, 3, 4)."
                )
            if image.ndim == 3 and image.shape[0] == 4 or image.ndim == 3 and image.shape[-1] == 4:
                # RGBA: drop alpha (channels first when the first axis is 4, else last).
                image = image[:3] if image.shape[0] == 4 else image[..., :3]
        elif hasattr(image, "mode") and image.mode != "RGB":
            image = image.convert("RGB")
        elif not hasattr(image, "mode"):
            raise TypeError(
                f"Cannot read an image of type {type(image).__name__}: pass PIL images, numpy arrays or torch tensors."
            )
        image = super().process_image(image, *args, **kwargs)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return image


__all__ = ["ComFaceImageProcessor", "COMFACE_MEAN", "COMFACE_STD"]

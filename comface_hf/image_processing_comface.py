"""ComFace image processor: any photo -> the face aligned into the canonical frame -> normalised [N, 3, S, S]."""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Union

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

# The shared vocabulary of ``align``, re-exported under the name this module used to define.
from .face_alignment import ALIGN_MODES

# The synthetic corpus is rendered without any dataset statistics; ComFace trains from scratch, so a symmetric
# normalisation to [-1, 1] is used for every backbone.
COMFACE_MEAN = [0.5, 0.5, 0.5]
COMFACE_STD = [0.5, 0.5, 0.5]



def _is_url(image: Any) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


class ComFaceImageProcessorKwargs(ImagesKwargs, total=False):
    align: Union[bool, str, None]


class ComFaceImageProcessor(TorchvisionBackend):
    r"""Align the face into the canonical frame (:mod:`comface_hf.face_frame`), then rescale to [0, 1] and normalise.

    ``align`` (saved in ``preprocessor_config.json``) is a word of
    :data:`~comface_hf.face_alignment.ALIGN_MODES`, the vocabulary every alignment option shares; each image goes
    through :func:`~comface_hf.face_alignment.align_face`:

    * ``"auto"`` (default): landmarks given for an image (``landmarks=[...]``), else the face detector
      (:class:`~comface_hf.face_detector.DlibFaceDetector`). An image with a face is warped into the frame, unless it
      already *is* the frame (a crop made by this aligner, an FFHQ-aligned image, a rendered face: its eyes and mouth
      already sit where the frame puts them), which is only resized. An image in which no face is found is used as
      it is (shorter side resized, centre crop) with a warning naming it: small or synthetic crops the detector
      cannot read still go through.
    * ``"face"``: the same, but every image must show a face (:class:`~comface_hf.errors.NoFaceError` otherwise).
    * ``"landmarks"``: only the given landmarks (every image needs them); ``"detector"``: always the detector.
    * ``"none"``: no detection: shorter side resized to ``size["shortest_edge"]``, centre crop to ``crop_size`` (for
      images that are already aligned crops, e.g. rendered faces during pretraining).

    The old values ``True`` (now ``"face"``) and ``False`` (now ``"none"``) still work, with a DeprecationWarning.
    Landmarks (any layout in :data:`~comface_hf.landmark_schemes.LANDMARK_SCHEMES`) are passed as
    ``landmarks=[...]``, one entry (or ``None``) per image.

    Accepts file paths, bytes, PIL images, numpy arrays and torch tensors, channels first or last, uint8 in [0, 255]
    (or floats with ``do_rescale=False``); EXIF orientation is applied; greyscale, palette, RGBA, 16-bit and CMYK
    images become RGB.

    Example:
        >>> processor = ComFaceImageProcessor(crop_size=112)
        >>> batch = processor(["before.jpg", "after.jpg"], return_tensors="pt")  # pixel_values [2, 3, 112, 112]
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
    align = "auto"
    valid_kwargs = ComFaceImageProcessorKwargs

    def __init__(self, crop_size: int | dict | None = None, **kwargs):
        # One number sets the model's input size; the resize keeps the crop's share of the image.
        if isinstance(crop_size, int):
            kwargs.setdefault("size", {"shortest_edge": crop_size})
            crop_size = {"height": crop_size, "width": crop_size}
        if crop_size is not None:
            kwargs["crop_size"] = crop_size
        if "align" in kwargs:  # old configs saved align=true/false: read them in the shared vocabulary
            from .face_alignment import align_mode

            kwargs["align"] = align_mode(kwargs["align"])
        super().__init__(**kwargs)
        self._aligner = None

    def _frame_size(self, crop_size: Any) -> int:
        if isinstance(crop_size, int):
            return crop_size
        height = crop_size["height"] if isinstance(crop_size, dict) else crop_size.height
        width = crop_size["width"] if isinstance(crop_size, dict) else crop_size.width
        if height != width:
            raise ValueError(f"aligned faces are square; crop_size {height}x{width} is not")
        return int(height)

    def align_images(
        self, images: list, landmarks: Optional[list] = None, align: str = "auto", size: int = 224
    ) -> tuple[list, list[bool]]:
        """Each image aligned into the ``size`` frame (PIL) by :func:`~comface_hf.face_alignment.align_face`.

        Returns the images (aligned ones as PIL crops, the others unchanged) and which of them were aligned.
        """
        # Imported here, at call time: the one alignment function, looked up where it lives.
        from .face_alignment import FaceAligner, align_face, align_mode, describe

        align = align_mode(align)
        if self._aligner is None or self._aligner.size != size:
            self._aligner = FaceAligner(size=size)
        if landmarks is not None and len(landmarks) != len(images):
            raise ValueError(f"{len(images)} images but {len(landmarks)} landmark entries: give one (or None) per image")
        out, aligned = [], []
        for i, image in enumerate(images):
            given = None if landmarks is None else landmarks[i]
            face = align_face(image, align, given, aligner=self._aligner)
            if face is None:
                if align != "none":  # "auto" found no face
                    warnings.warn(
                        f"ComFaceImageProcessor: no face found in image {i} ({describe(image)}); using it as it is "
                        "(resized and centre-cropped). Pass align='none' for images that are already face crops.",
                        stacklevel=3,
                    )
                out.append(image)
                aligned.append(False)
                continue
            out.append(face.image)
            aligned.append(True)
        return out, aligned

    def preprocess(self, images, *args, landmarks: Optional[list] = None, **kwargs):
        from .face_alignment import align_mode

        align = kwargs.pop("align", None)
        align = align_mode(self.align if align is None else align)
        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        if landmarks is not None and single:
            landmarks = [landmarks]
        from .image_io import load_image

        # Files, bytes and PIL images are read here (EXIF orientation, 16-bit, CMYK...); arrays and tensors keep
        # their values unless they are aligned (so floats with do_rescale=False still work without alignment).
        image_list = [
            im if _is_url(im) else load_image(im) if isinstance(im, (str, os.PathLike, bytes, bytearray, dict))
            or isinstance(im, PIL.Image.Image) else im  # not hasattr(im, "mode"): torch.Tensor has a .mode() too
            for im in image_list
        ]
        if align != "none":
            crop_size = kwargs.get("crop_size") or self.crop_size
            image_list, aligned = self.align_images(image_list, landmarks, align, self._frame_size(crop_size))
        elif landmarks is not None:
            raise ValueError("landmarks were given but align='none'; pass align='auto', 'face' or 'landmarks' to use "
                             "them")
        else:
            aligned = [False] * len(image_list)
        result = super().preprocess(image_list, *args, **kwargs)
        if align != "none":
            result["aligned"] = torch.tensor(aligned)
        return result

    def normalize(self, image: torch.Tensor, mean: Any, std: Any, inplace: bool = False, **kwargs) -> torch.Tensor:
        """``(image - mean) / std`` per channel: ``[..., 3, H, W]`` with ``mean, std`` of 3 (lists or tensors).

        The one normalisation of ComFace inputs: :meth:`preprocess` (through the backend's fused rescale and
        normalise) and the pretraining loop (:meth:`normalize_pixels`, on device batches) both call it, so what a
        model is trained on and what it is given at inference cannot drift apart. No device synchronisation (unlike
        torchvision's check of ``std``): the trainer calls it three times per step on the GPU.
        """
        mean = torch.as_tensor(mean, device=image.device).view(-1, 1, 1)
        std = torch.as_tensor(std, device=image.device).view(-1, 1, 1)
        return (image - mean) / std

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` floats in [0, 1] (rendered, already the model's size) -> the model's input, on their device.

        What :meth:`preprocess` does after resizing and rescaling, for batches that are made on the training device.
        """
        if not self.do_normalize:
            return images
        return self.normalize(images, self.image_mean, self.image_std)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_aligner", None)  # the loaded detector is state, not configuration
        return out

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
                f"Cannot read an image of type {type(image).__name__}: pass file paths, PIL images, numpy arrays or "
                "torch tensors."
            )
        image = super().process_image(image, *args, **kwargs)
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return image


__all__ = ["ALIGN_MODES", "ComFaceImageProcessor", "COMFACE_MEAN", "COMFACE_STD"]

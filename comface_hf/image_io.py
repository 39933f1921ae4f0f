"""Reading images: a path, bytes, PIL image, numpy array or torch tensor -> an RGB ``PIL.Image``, or a clear error.

EXIF orientation is applied; greyscale, palette, RGBA, 16-bit, float and CMYK images become 8-bit RGB. A flat module
(imported with ``from .image_io import``) because the pipeline's remote code needs it next to the weights.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError

#: Images smaller than this on either side cannot show a face the aligner or a model can use.
MIN_IMAGE_SIDE = 16

ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, Any]


def describe(image: Any) -> str:
    """A short name for an image in messages: its path, or its type and shape."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, dict) and image.get("path"):
        return str(image["path"])
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or f"PIL image {image.size[0]}x{image.size[1]} {image.mode}"
    shape = getattr(image, "shape", None)
    return f"{type(image).__name__} of shape {tuple(shape)}" if shape is not None else type(image).__name__


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """An image array of any common dtype/layout -> ``uint8[H, W, 3|4]`` or ``uint8[H, W]``."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first (torch layout) -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageReadError(
            f"cannot read {name}: expected an image array [H, W], [H, W, C] or [C, H, W] with C in (1, 3, 4), "
            f"got shape {tuple(array.shape)}"
        )
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max(initial=0) > 255):
        # 16-bit scans and TIFFs: scale the full range, do not clip it.
        return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ImageReadError(f"cannot read {name}: the image array holds NaN or infinite values")
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0  # [0, 1] floats, else already 0-255
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    raise ImageReadError(f"cannot read {name}: unsupported array dtype {array.dtype}")


def _pil_to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited over white, 16-bit and float images are rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_array_to_uint8(np.asarray(image), name)).convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr, LAB, HSV


def load_image(image: ImageLike, *, min_side: int = MIN_IMAGE_SIDE) -> Image.Image:
    """Read any image into an RGB ``PIL.Image`` with its EXIF orientation applied.

    Accepts a file path, ``bytes``, a ``datasets`` image dict (``{"bytes", "path"}``), a PIL image, a numpy array
    or a torch tensor (``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``; uint8, uint16 or floats in [0, 1]). Greyscale,
    palette, RGBA (over white), 16-bit, float and CMYK images become 8-bit RGB. The whole file is decoded here, so a
    truncated file fails now rather than later.

    Raises:
        FileNotFoundError: a path that does not exist.
        ImageReadError: not an image, truncated or corrupt, an unusable array, or smaller than ``min_side`` pixels.
    """
    name = describe(image)
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            image = image["bytes"]
        elif image.get("path"):
            image = image["path"]
        else:
            raise ImageReadError(f"cannot read {name}: an image dict needs 'bytes' or 'path'")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image {str(path)!r} does not exist; check the path")
        if path.is_dir():
            raise ImageReadError(f"{str(path)!r} is a folder, not an image file")
        try:
            image = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            pil = Image.open(io.BytesIO(bytes(image)))
            pil.load()  # decode everything now: truncated files fail here
        except UnidentifiedImageError:
            raise ImageReadError(f"cannot read {name}: not a recognised image format (is it an image file?)") from None
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
            raise ImageReadError(
                f"cannot read {name}: the file is damaged or truncated ({type(exc).__name__}: {exc}); "
                "re-export or re-copy it"
            ) from None
        image = pil
    if isinstance(image, Image.Image):
        try:
            image = ImageOps.exif_transpose(image)  # phone photos: the pixels are stored sideways
        except Exception:  # a damaged EXIF block must not lose the picture
            pass
        rgb = _pil_to_rgb(image, name)
    elif hasattr(image, "detach") and hasattr(image, "cpu"):  # torch tensor, without importing torch here
        rgb = Image.fromarray(_array_to_uint8(image.detach().cpu().numpy(), name)).convert("RGB")
    elif isinstance(image, np.ndarray):
        rgb = Image.fromarray(_array_to_uint8(image, name)).convert("RGB")
    else:
        raise ImageReadError(
            f"cannot read {name}: pass a file path, bytes, a PIL image, a numpy array or a torch tensor"
        )
    if min(rgb.size) < min_side:
        raise ImageReadError(
            f"{name} is only {rgb.size[0]}x{rgb.size[1]} pixels: too small to show a face (at least {min_side} px "
            "on each side); pass the original photo"
        )
    return rgb


__all__ = ["ImageLike", "MIN_IMAGE_SIDE", "describe", "load_image"]

"""Synthetic face corpus for ComFace (paper Sec. 3.1): generators with ``w_edit = w + alpha * n_m``.

Two generators share one interface (``render(identities, attributes, alphas) -> [B,3,H,W]``):

* :class:`EmbeddedFaceGenerator` (default, ``"embedded"``): a deterministic parametric face
  renderer in torch; needs no weights (renderer version 2.1.0 by default; ``renderer_version="1.1.0"``
  reproduces the previous one).
* :class:`LatentEditGenerator` (``"latent-edit"``): wraps a StyleGAN-style ``G`` with
  InterFaceGAN direction files; :mod:`.dcgan` exposes ``gan-face-generate``'s photographic DCGAN that way
  (loader ``gan-face-generate``), and :mod:`.directions` finds boundaries for any such ``G``.
"""

from __future__ import annotations

from typing import Any

from .attributes import (
    ALL_ATTRIBUTE_NAMES,
    ATTRIBUTE_DIRECTIONS,
    ATTRIBUTE_NAMES,
    CELEBA_ATTRIBUTES,
    EXPRESSION_ATTRIBUTES,
    resolve_attribute,
)
from .latent_edit import LatentEditGenerator
from . import dcgan  # noqa: F401  (registers the built-in loader name "gan-face-generate"; imports only torch)
from .renderer import DEFAULT_RENDERER_VERSION, MIN_IMAGE_SIZE, RENDERER_VERSIONS, EmbeddedFaceGenerator, alpha_grid

__all__ = [
    "ALL_ATTRIBUTE_NAMES", "DEFAULT_RENDERER_VERSION", "EXPRESSION_ATTRIBUTES", "RENDERER_VERSIONS",
    "ATTRIBUTE_DIRECTIONS", "ATTRIBUTE_NAMES", "CELEBA_ATTRIBUTES", "EmbeddedFaceGenerator",
    "LatentEditGenerator", "MIN_IMAGE_SIZE", "alpha_grid", "get_generator", "resolve_attribute",
    "make_sample_sheet",
]

_GENERATORS = ("embedded", "latent-edit")


def get_generator(name: str = "embedded", **kwargs: Any):
    """Build a generator by name.

    ``"embedded"`` -> ``EmbeddedFaceGenerator(**kwargs)``.
    ``"latent-edit"`` -> ``LatentEditGenerator.from_import_path(**kwargs)`` when ``import_path``
    is given, else ``LatentEditGenerator(**kwargs)`` (pass ``generator`` and ``directions``).
    """
    if name in ("embedded", EmbeddedFaceGenerator.name):
        return EmbeddedFaceGenerator(**kwargs)
    if name in ("latent-edit", "latent_edit", LatentEditGenerator.name):
        if "import_path" in kwargs:
            return LatentEditGenerator.from_import_path(**kwargs)
        return LatentEditGenerator(**kwargs)
    raise ValueError(f"Unknown generator {name!r}; choose one of {', '.join(_GENERATORS)}")


def make_sample_sheet(*args: Any, **kwargs: Any):
    """See :func:`comface_hf.synthesis.sample_sheet.make_sample_sheet` (lazy: needs PIL)."""
    from .sample_sheet import make_sample_sheet as _impl

    return _impl(*args, **kwargs)

"""Latent-edit generator: any StyleGAN-style ``G`` plus InterFaceGAN directions.

Implements the paper's edit exactly (Sec. 3.1): ``w_edit = w + alpha * n_m``, with ``w`` the
mapping output of a deterministic per-identity ``z`` and ``n_m`` broadcast over every ``w``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .attributes import resolve_attribute
from .renderer import MIN_IMAGE_SIZE, hash_uniform, validate_render_inputs

DirectionsLike = Union[str, os.PathLike, Mapping[str, Any], torch.Tensor, np.ndarray]


def load_directions(directions_dir: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read InterFaceGAN-style ``<attribute>.npy`` files (``[1, w_dim]`` or ``[w_dim]``)."""
    folder = Path(directions_dir)
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise FileNotFoundError(
            f"No .npy direction files in {folder}: expected one '<attribute>.npy' per attribute "
            "(shape [1, w_dim] or [w_dim]) as InterFaceGAN publishes them"
        )
    return {f.stem: torch.from_numpy(np.load(f).astype(np.float32)).reshape(-1) for f in files}


def identity_z(seed: int, identities: Sequence[int], z_dim: int) -> torch.Tensor:
    """Deterministic standard-normal ``z`` per ``(seed, identity)``: ``FloatTensor[B, z_dim]``.

    Box-Muller on counter-based uniforms, so ``z`` never depends on the batch it is drawn in.
    """
    u = hash_uniform(seed, np.asarray(identities), 2 * z_dim, stream=1)
    u1 = np.clip(u[:, :z_dim], 1e-12, 1.0)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u[:, z_dim:])
    return torch.from_numpy(z.astype(np.float32))


class LatentEditGenerator:
    """Render ``G.synthesis(w + alpha * n_m)`` for ``(identity, attribute, alpha)`` triples.

    Args:
        generator: object with ``mapping(z, c) -> w`` (``[B, num_ws, w_dim]`` or ``[B, w_dim]``)
            and ``synthesis(w) -> images in [-1, 1]``, plus ``z_dim``, ``w_dim``, ``c_dim``.
        directions: folder of ``.npy`` files, a ``{name: vector}`` mapping, or a
            ``[num_attributes, w_dim]`` tensor/array (then pass ``attribute_names``).
        attribute_names: order of the attributes (default: the mapping's keys / sorted files).
        seed: identity ``z`` seed.
        image_size: resize outputs to this size (``None`` keeps the generator's size).
        truncation_psi: ``w <- w_avg + psi (w - w_avg)`` if ``G.mapping`` has ``w_avg`` (psi=1: off).
        device: device for ``G`` and the outputs.
    """

    name = "comface-latent-edit"
    version = "1.0.0"

    def __init__(
        self,
        generator: Any,
        directions: DirectionsLike,
        attribute_names: Optional[Sequence[str]] = None,
        seed: int = 0,
        image_size: Optional[int] = None,
        truncation_psi: float = 1.0,
        device: Union[str, torch.device] = "cpu",
        alpha_min: float = -5.0,
        alpha_max: float = 5.0,
    ) -> None:
        for attr in ("mapping", "synthesis"):
            if not callable(getattr(generator, attr, None)):
                raise TypeError(f"generator must have a callable .{attr} (StyleGAN G convention)")
        if image_size is not None and int(image_size) < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size={image_size} is too small: the minimum is {MIN_IMAGE_SIZE} pixels")
        self.device = torch.device(device)
        self.G = generator.to(self.device) if hasattr(generator, "to") else generator
        if hasattr(self.G, "eval"):
            self.G.eval()
        self.z_dim = int(getattr(generator, "z_dim"))
        self.w_dim = int(getattr(generator, "w_dim"))
        self.c_dim = int(getattr(generator, "c_dim", 0) or 0)
        self.seed = int(seed)
        self.image_size = None if image_size is None else int(image_size)
        self.truncation_psi = float(truncation_psi)
        self.alpha_range = (float(alpha_min), float(alpha_max))

        if isinstance(directions, (str, os.PathLike)):
            directions = load_directions(directions)
        if isinstance(directions, Mapping):
            names = list(attribute_names) if attribute_names is not None else list(directions)
            missing = [n for n in names if n not in directions]
            if missing:
                raise KeyError(f"No direction for attributes {missing}; available: {', '.join(directions)}")
            vecs = [torch.as_tensor(np.asarray(directions[n]), dtype=torch.float32).reshape(-1) for n in names]
            for n, vec in zip(names, vecs):
                if vec.numel() != self.w_dim:
                    raise ValueError(
                        f"Direction '{n}' has size {vec.numel()} but the generator's latent size "
                        f"(w_dim) is {self.w_dim}; use directions computed for this generator"
                    )
            mat = torch.stack(vecs)
        else:
            mat = torch.as_tensor(np.asarray(directions), dtype=torch.float32)
            if mat.ndim != 2 or mat.shape[1] != self.w_dim:
                raise ValueError(
                    f"Direction size {tuple(mat.shape)} does not match the generator's latent size "
                    f"(w_dim) {self.w_dim}: expected [num_attributes, {self.w_dim}]"
                )
            names = list(attribute_names) if attribute_names is not None else [f"attr_{i}" for i in range(len(mat))]
            if len(names) != len(mat):
                raise ValueError(f"{len(names)} attribute_names for {len(mat)} directions")
        self.attribute_names: List[str] = names
        self.directions = mat.to(self.device)  # [num_attributes, w_dim]

    @classmethod
    def from_import_path(
        cls,
        import_path: str,
        checkpoint: Optional[str] = None,
        directions_dir: Optional[Union[str, os.PathLike]] = None,
        directions: Optional[DirectionsLike] = None,
        generator_kwargs: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> "LatentEditGenerator":
        """Build ``G`` from ``"package.module:callable_or_class"``.

        The callable is called as ``fn(checkpoint, **generator_kwargs)`` when a checkpoint is
        given, else ``fn(**generator_kwargs)`` (e.g. a loader of a StyleGAN ``.pkl``).
        """
        if ":" not in import_path:
            raise ValueError(f"import_path must look like 'package.module:callable', got {import_path!r}")
        mod_name, attr = import_path.split(":", 1)
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"Cannot import {import_path!r}: {e}") from e
        gkw = dict(generator_kwargs or {})
        G = obj(checkpoint, **gkw) if checkpoint is not None else obj(**gkw)
        dirs = directions if directions is not None else directions_dir
        if dirs is None:
            raise ValueError("Pass directions_dir (folder of InterFaceGAN .npy files) or directions")
        return cls(G, dirs, **kwargs)

    def attribute_index(self, name: str) -> int:
        return resolve_attribute(name, self.attribute_names)

    @torch.no_grad()
    def latents(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """``w_edit = w + alpha * n_m``: ``[B, num_ws, w_dim]`` or ``[B, w_dim]`` like ``G.mapping``."""
        z = identity_z(self.seed, identities.numpy(), self.z_dim).to(self.device)
        c = torch.zeros(len(z), self.c_dim, device=self.device)
        w = self.G.mapping(z, c)
        if self.truncation_psi != 1.0 and hasattr(self.G.mapping, "w_avg"):
            w_avg = self.G.mapping.w_avg
            w = w_avg + self.truncation_psi * (w - w_avg)
        n = self.directions[attributes.to(self.device)]  # [B, w_dim]
        a = alphas.to(self.device, w.dtype)
        if w.ndim == 3:  # broadcast the same normal over every w of the style stack
            return w + a[:, None, None] * n[:, None, :].to(w.dtype)
        return w + a[:, None] * n.to(w.dtype)

    @torch.no_grad()
    def render(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Same contract as :meth:`EmbeddedFaceGenerator.render`: ``FloatTensor[B,3,H,W]`` in [0,1]."""
        ids, attrs, alphas = validate_render_inputs(identities, attributes, alphas, len(self.attribute_names), self.alpha_range)
        img = self.G.synthesis(self.latents(ids, attrs, alphas))
        img = (img.float().clamp(-1.0, 1.0) + 1.0) * 0.5
        if self.image_size is not None and img.shape[-1] != self.image_size:
            img = F.interpolate(img, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return img.clamp(0.0, 1.0)

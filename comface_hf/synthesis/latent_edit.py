"""Latent-edit generator: any StyleGAN-style ``G`` plus InterFaceGAN directions.

Implements the paper's edit exactly (Sec. 3.1): ``w_edit = w + alpha * n_m``, with ``w`` the
mapping output of a deterministic per-identity ``z`` and ``n_m`` broadcast over every ``w``.
"""

from __future__ import annotations

import collections
import inspect
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ComFaceInputError
from .attributes import resolve_attribute
from .renderer import MIN_IMAGE_SIZE, hash_uniform, validate_render_inputs

DirectionsLike = Union[str, os.PathLike, Mapping[str, Any], torch.Tensor, np.ndarray]


def load_directions(directions_dir: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read InterFaceGAN-style ``<attribute>.npy`` boundaries: ``{attribute: float32 vector}``, flattened.

    A boundary is ``[1, w_dim]`` (W) or ``[1, num_ws * w_dim]`` / ``[num_ws, w_dim]`` (W+); which one is decided
    against the generator in :class:`LatentEditGenerator`. Unreadable files and NaN/inf values are clear errors.
    """
    folder = Path(directions_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"No directions folder at {folder}: pass a folder of '<attribute>.npy' boundaries.")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise FileNotFoundError(
            f"No .npy direction files in {folder}: expected one '<attribute>.npy' per attribute "
            "(shape [1, w_dim] or [w_dim]) as InterFaceGAN publishes them"
        )
    out = {}
    for f in files:
        try:
            array = np.load(f, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ComFaceInputError(
                f"{f} is not a readable .npy array ({exc}); save boundaries with np.save.") from None
        if not np.issubdtype(array.dtype, np.number):
            raise ComFaceInputError(f"{f} holds {array.dtype} values, not numbers: a boundary is a float vector.")
        out[f.stem] = torch.from_numpy(np.asarray(array, dtype=np.float32)).reshape(-1)
    return out


def check_direction(name: str, vector: torch.Tensor, w_dim: int, num_ws: Optional[int],
                    normalize: Optional[bool]) -> torch.Tensor:
    """One boundary as ``[w_dim]`` (W) or ``[num_ws, w_dim]`` (W+), checked: finite, the right size, unit length.

    ``normalize``: None refuses a vector whose norm is not 1 (and says how to proceed), True divides by its norm,
    False uses it as given (a deliberately scaled direction).
    """
    vector = torch.as_tensor(np.asarray(vector), dtype=torch.float32).reshape(-1)
    if not torch.isfinite(vector).all():
        bad = int((~torch.isfinite(vector)).sum())
        raise ComFaceInputError(
            f"Direction {name!r} has {bad} NaN/inf value(s) of {vector.numel()}: the boundary file is damaged or was "
            "computed from a degenerate fit. Recompute it (or download it again)."
        )
    if vector.numel() == w_dim:
        shaped = vector
    elif num_ws and vector.numel() == num_ws * w_dim:
        shaped = vector.view(num_ws, w_dim)
    else:
        plus = f" or num_ws x w_dim = {num_ws} x {w_dim} = {num_ws * w_dim} (W+)" if num_ws else ""
        raise ValueError(
            f"Direction {name!r} has size {vector.numel()} but the generator's latent size (w_dim) is {w_dim}{plus}; "
            "use directions computed for this generator"
        )
    norm = float(vector.norm())
    if normalize is None and abs(norm - 1.0) > 1e-3:
        raise ComFaceInputError(
            f"Direction {name!r} has norm {norm:.4g}, not 1: the paper's edit w + alpha * n assumes unit vectors in "
            "the generator's W (alpha in [-5, 5] is then a distance in W). Pass --normalize_directions "
            "(normalize_directions=True) to divide each direction by its norm, or normalize_directions=False to use "
            "the vectors as they are, knowingly."
        )
    if normalize:
        if norm == 0:
            raise ComFaceInputError(f"Direction {name!r} is all zeros: it cannot be normalised; recompute it.")
        shaped = shaped / norm
    return shaped


def identity_z(seed: int, identities: Sequence[int], z_dim: int) -> torch.Tensor:
    """Deterministic standard-normal ``z`` per ``(seed, identity)``: ``FloatTensor[B, z_dim]``.

    Box-Muller on counter-based uniforms, so ``z`` never depends on the batch it is drawn in.
    """
    u = hash_uniform(seed, np.asarray(identities), 2 * z_dim, stream=1)
    u1 = np.clip(u[:, :z_dim], 1e-12, 1.0)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u[:, z_dim:])
    return torch.from_numpy(z.astype(np.float32))


SYNTHESIS_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LatentEditGenerator:
    """Render ``G.synthesis(w + alpha * n_m)`` for ``(identity, attribute, alpha)`` triples.

    Args:
        generator: object with ``mapping(z, c) -> w`` (``[B, num_ws, w_dim]`` or ``[B, w_dim]``)
            and ``synthesis(w) -> images in [-1, 1]``, plus ``z_dim``, ``w_dim``, ``c_dim`` (``num_ws`` for W+).
        directions: folder of ``.npy`` files, a ``{name: vector}`` mapping, or a
            ``[num_attributes, w_dim]`` (or ``[num_attributes, num_ws, w_dim]``) tensor/array (then pass
            ``attribute_names``). Each is a W direction (``w_dim`` values) or a W+ one (``num_ws * w_dim``).
        attribute_names: order of the attributes (default: the mapping's keys / sorted files).
        seed: identity ``z`` seed.
        image_size: resize outputs to this size on the generator's device (``None`` keeps the generator's size).
        truncation_psi: ``w <- w_avg + psi (w - w_avg)`` if ``G.mapping`` has ``w_avg`` (psi=1: off).
        device: device for ``G`` and the outputs.
        normalize_directions: None (default) refuses directions that are not unit vectors, True normalises them,
            False uses them as given.
        synthesis_dtype: ``float32``, ``bfloat16`` or ``float16``: synthesis under autocast in that precision
            (mapping, edit and output stay float32).
        identity_cache_size: keep up to this many identities' ``w`` (they do not change between an identity's
            images). Cached ``w`` are computed in fixed blocks of :attr:`identity_block` identities, so a value
            never depends on the batch it was asked for in (bit-exact resume). 0: no cache, one mapping call for
            exactly the batch's identities each time (values may then differ in the last bit between batches).
        compile: ``torch.compile`` the synthesis network (falls back to eager, with a warning, if it cannot).
    """

    name = "comface-latent-edit"
    version = "1.1.0"
    identity_block = 256

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
        normalize_directions: Optional[bool] = None,
        synthesis_dtype: str = "float32",
        identity_cache_size: int = 300_000,
        compile: bool = False,
    ) -> None:
        for attr in ("mapping", "synthesis"):
            if not callable(getattr(generator, attr, None)):
                raise TypeError(f"generator must have a callable .{attr} (StyleGAN G convention)")
        if image_size is not None and int(image_size) < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size={image_size} is too small: the minimum is {MIN_IMAGE_SIZE} pixels")
        if synthesis_dtype not in SYNTHESIS_DTYPES:
            raise ValueError(f"synthesis_dtype must be one of {', '.join(SYNTHESIS_DTYPES)}, got {synthesis_dtype!r}")
        self.device = torch.device(device)
        self.G = generator.to(self.device) if hasattr(generator, "to") else generator
        if hasattr(self.G, "eval"):
            self.G.eval()
        self.z_dim = int(getattr(generator, "z_dim"))
        self.w_dim = int(getattr(generator, "w_dim"))
        self.c_dim = int(getattr(generator, "c_dim", 0) or 0)
        num_ws = getattr(generator, "num_ws", None)
        self.num_ws = int(num_ws) if num_ws else None
        self.seed = int(seed)
        self.image_size = None if image_size is None else int(image_size)
        self.truncation_psi = float(truncation_psi)
        self.alpha_range = (float(alpha_min), float(alpha_max))
        self.synthesis_dtype = synthesis_dtype
        self.identity_cache_size = int(identity_cache_size)
        self._cache: "collections.OrderedDict[int, torch.Tensor]" = collections.OrderedDict()
        self._synthesis_kwargs = _synthesis_kwargs(self.G)
        self._compiled = torch.compile(self.G.synthesis, dynamic=False) if compile else None

        if isinstance(directions, (str, os.PathLike)):
            directions = load_directions(directions)
        if isinstance(directions, Mapping):
            names = list(attribute_names) if attribute_names is not None else list(directions)
            missing = [n for n in names if n not in directions]
            if missing:
                raise KeyError(f"No direction for attributes {missing}; available: {', '.join(directions)}")
            vecs = [check_direction(n, directions[n], self.w_dim, self.num_ws, normalize_directions) for n in names]
        else:
            mat = torch.as_tensor(np.asarray(directions), dtype=torch.float32)
            if mat.ndim not in (2, 3) or mat.shape[-1] != self.w_dim:
                raise ValueError(
                    f"Direction size {tuple(mat.shape)} does not match the generator's latent size "
                    f"(w_dim) {self.w_dim}: expected [num_attributes, {self.w_dim}]"
                )
            names = list(attribute_names) if attribute_names is not None else [f"attr_{i}" for i in range(len(mat))]
            if len(names) != len(mat):
                raise ValueError(f"{len(names)} attribute_names for {len(mat)} directions")
            vecs = [check_direction(n, v, self.w_dim, self.num_ws, normalize_directions) for n, v in zip(names, mat)]
        if len(set(names)) != len(names):
            raise ValueError(f"Attribute names repeat: {names}")
        if any(v.ndim == 2 for v in vecs):  # some W+ directions: hold all as [num_ws, w_dim]
            vecs = [v if v.ndim == 2 else v[None].expand(self.num_ws, -1) for v in vecs]
        self.attribute_names: List[str] = names
        self.directions = torch.stack(vecs).to(self.device)  # [A, w_dim] (W) or [A, num_ws, w_dim] (W+)

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
        """Build ``G`` from ``"package.module:callable_or_class"`` or a built-in loader name (``nvidia-pickle``).

        The callable is called as ``fn(checkpoint, **generator_kwargs)`` when a checkpoint is
        given, else ``fn(**generator_kwargs)`` (e.g. a loader of a StyleGAN ``.pkl``).
        """
        from .stylegan import LOADERS, load_generator

        if ":" not in import_path and import_path not in LOADERS:
            raise ValueError(f"import_path must look like 'package.module:callable', got {import_path!r}")
        G = load_generator(import_path, checkpoint, **dict(generator_kwargs or {}))
        dirs = directions if directions is not None else directions_dir
        if dirs is None:
            raise ValueError("Pass directions_dir (folder of InterFaceGAN .npy files) or directions")
        return cls(G, dirs, **kwargs)

    def attribute_index(self, name: str) -> int:
        return resolve_attribute(name, self.attribute_names)

    # -- identities' w, cached ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _block_w(self, block: int) -> torch.Tensor:
        """``w`` (after truncation) of identities ``block * B .. block * B + B - 1``: one fixed-size mapping call."""
        n = self.identity_block
        w = self._mapping(np.arange(block * n, (block + 1) * n))
        if w.ndim == 3 and torch.equal(w, w[:, :1].expand_as(w)):
            w = w[:, :1]  # every layer's w is the same (no truncation cutoff): keep one copy
        return w

    @torch.no_grad()
    def _mapping(self, ids: np.ndarray) -> torch.Tensor:
        z = identity_z(self.seed, ids, self.z_dim).to(self.device)
        c = torch.zeros(len(ids), self.c_dim, device=self.device)
        w = self.G.mapping(z, c).float()
        if self.truncation_psi != 1.0 and hasattr(self.G.mapping, "w_avg"):
            w_avg = self.G.mapping.w_avg.float()
            w = w_avg + self.truncation_psi * (w - w_avg)
        return w

    def identity_w(self, identities: np.ndarray) -> torch.Tensor:
        """``w`` of each identity: ``[B, num_ws, w_dim]`` or ``[B, w_dim]`` like ``G.mapping``."""
        ids = np.asarray(identities, dtype=np.int64)
        if self.identity_cache_size <= 0:  # no cache: one mapping call for exactly these identities
            return self._mapping(ids)
        blocks, offsets = np.divmod(ids, self.identity_block)
        found = {}
        for b in np.unique(blocks).tolist():
            w = self._cache.get(b)
            if w is None:
                w = self._block_w(b)
                if self.identity_cache_size > 0:
                    self._cache[b] = w
                    while len(self._cache) * self.identity_block > self.identity_cache_size:
                        self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(b)
            found[b] = w
        rows = [found[b][o] for b, o in zip(blocks.tolist(), offsets.tolist())]
        w = torch.stack(rows)
        if w.ndim == 3 and w.shape[1] == 1 and self.num_ws:
            w = w.expand(-1, self.num_ws, -1)
        return w

    @torch.no_grad()
    def latents(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """``w_edit = w + alpha * n_m``: ``[B, num_ws, w_dim]`` or ``[B, w_dim]`` like ``G.mapping``."""
        w = self.identity_w(torch.as_tensor(identities).cpu().numpy())
        n = self.directions[attributes.to(self.device)]  # [B, w_dim] or [B, num_ws, w_dim]
        a = alphas.to(self.device, w.dtype)
        if n.ndim == 3:
            if w.ndim != 3:
                raise ValueError("W+ directions need a generator whose mapping returns [B, num_ws, w_dim]")
            return w + a[:, None, None] * n.to(w.dtype)
        if w.ndim == 3:  # broadcast the same normal over every w of the style stack
            return w + a[:, None, None] * n[:, None, :].to(w.dtype)
        return w + a[:, None] * n.to(w.dtype)

    @torch.no_grad()
    def render(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Same contract as :meth:`EmbeddedFaceGenerator.render`: ``FloatTensor[B,3,H,W]`` in [0,1].

        Render x and y of a batch of pairs in ONE call (``torch.cat``): one synthesis pass of twice the batch.
        """
        ids, attrs, alphas = validate_render_inputs(
            identities, attributes, alphas, len(self.attribute_names), self.alpha_range)
        ws = self.latents(ids, attrs, alphas)
        dtype = SYNTHESIS_DTYPES[self.synthesis_dtype]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            img = None
            if self._compiled is not None:
                try:
                    img = self._compiled(ws, **self._synthesis_kwargs)
                except Exception as err:  # e.g. custom CUDA ops dynamo cannot trace, no C++ compiler
                    warnings.warn(f"LatentEditGenerator(compile=True) could not compile the synthesis network "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                  "synthesising eagerly.")
                    self._compiled = None
            if img is None:
                img = self.G.synthesis(ws, **self._synthesis_kwargs)
        img = (img.float().clamp(-1.0, 1.0) + 1.0) * 0.5
        if self.image_size is not None and img.shape[-1] != self.image_size:
            img = F.interpolate(img, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                                antialias=True)
        return img.clamp(0.0, 1.0)

    def describe(self) -> dict:
        """What a run records about this generator (config, model card)."""
        G = self.G
        return {"generator_class": type(G).__module__ + "." + type(G).__qualname__,
                "resolution": getattr(G, "img_resolution", None), "w_dim": self.w_dim, "num_ws": self.num_ws,
                "directions": "W+" if self.directions.ndim == 3 else "W", "truncation_psi": self.truncation_psi,
                "seed": self.seed, "synthesis_dtype": self.synthesis_dtype, "attributes": list(self.attribute_names)}


def _synthesis_kwargs(G: Any) -> dict:
    """NVIDIA's synthesis draws fresh noise per call by default (noise_mode='random'): ask for its fixed noise so an
    image is a function of (identity, attribute, alpha) only, as the pair sampler and exact resume need."""
    try:
        params = inspect.signature(G.synthesis.forward if hasattr(G.synthesis, "forward") else G.synthesis).parameters
    except (TypeError, ValueError):
        return {}
    if "noise_mode" in params:
        return {"noise_mode": "const"}
    nvidia = type(G.synthesis).__module__.startswith(("training.networks", "torch_utils"))
    if nvidia and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"noise_mode": "const"}
    return {}

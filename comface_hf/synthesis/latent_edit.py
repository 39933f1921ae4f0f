"""Latent-edit generator: any StyleGAN-style ``G`` plus InterFaceGAN directions.

Implements the paper's edit (Sec. 3.1) in the space the boundaries were computed in:

* ``latent_space="w"``: ``w_edit = w + alpha * n_m``, with ``w`` the mapping output of a deterministic per-identity
  ``z`` and ``n_m`` broadcast over every ``w`` (or one per layer: W+ boundaries, told by their size);
* ``latent_space="z"``: ``w_edit = truncate(mapping(z + alpha * n_m))``, as InterFaceGAN's ``edit.py`` edits ``z``
  before the mapping network (its public StyleGAN2/StyleGAN3 FFHQ boundaries are z boundaries). A generator without
  a mapping network (``G.mapping is None``, e.g. a DCGAN) edits its ``z`` directly.

InterFaceGAN names its files ``boundary_<CelebA attribute>.npy``; the prefix is dropped, and the paper's three
non-CelebA attributes can be taken from CelebA boundaries (:data:`PAPER_FROM_CELEBA`): weight = Chubby,
age = -Young (Young points to younger faces), smile = Smiling.
"""

from __future__ import annotations

import collections
import contextlib
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

LATENT_SPACES = ("w", "z")
#: InterFaceGAN's file names: ``boundary_<attribute>.npy``.
BOUNDARY_PREFIX = "boundary_"
#: The paper's attributes that are not CelebA attributes, from InterFaceGAN's CelebA boundaries: (boundary, sign).
#: An InterFaceGAN boundary points to where its attribute is present, so Young points to younger faces and age (older
#: for positive alpha) is -Young; weight is Chubby (CelebA's label for a fuller face, the nearest CelebA has to body
#: weight); smile is Smiling.
PAPER_FROM_CELEBA: Dict[str, tuple] = {"weight": ("Chubby", 1.0), "age": ("Young", -1.0), "smile": ("Smiling", 1.0)}


def load_directions(directions_dir: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read InterFaceGAN-style ``<attribute>.npy`` / ``boundary_<attribute>.npy`` boundaries: ``{attribute: vector}``.

    A boundary is ``[1, z_dim]`` (z), ``[1, w_dim]`` (W) or ``[1, num_ws * w_dim]`` / ``[num_ws, w_dim]`` (W+); which
    one is decided against the generator and ``latent_space`` in :class:`LatentEditGenerator`. Unreadable files and
    NaN/inf values are clear errors.
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
        name = f.stem[len(BOUNDARY_PREFIX):] if f.stem.startswith(BOUNDARY_PREFIX) else f.stem
        if name in out:
            raise ComFaceInputError(f"{folder} holds two boundaries for {name!r} ({name}.npy and "
                                    f"{BOUNDARY_PREFIX}{name}.npy): keep one.")
        out[name] = torch.from_numpy(np.asarray(array, dtype=np.float32)).reshape(-1)
    return out


def select_directions(directions: Mapping[str, Any], names: Sequence[str]) -> tuple:
    """``(vectors, sources)`` for ``names``: each from ``directions`` itself or, for the paper's weight, age and
    smile when the folder has no such file, from its CelebA boundary (:data:`PAPER_FROM_CELEBA`; ``sources`` records
    how, e.g. ``{"age": "-Young"}``)."""
    vectors, sources, missing = {}, {}, []
    for name in names:
        if name in directions:
            vectors[name] = directions[name]
        elif name in PAPER_FROM_CELEBA and PAPER_FROM_CELEBA[name][0] in directions:
            source, sign = PAPER_FROM_CELEBA[name]
            vectors[name] = sign * torch.as_tensor(np.asarray(directions[source]), dtype=torch.float32)
            sources[name] = ("-" if sign < 0 else "") + source
        else:
            missing.append(name)
    if missing:
        derived = ", ".join(f"{k} from {'-' if s < 0 else ''}{b}" for k, (b, s) in PAPER_FROM_CELEBA.items())
        raise KeyError(f"No direction for attributes {missing}; available: {', '.join(directions)} "
                       f"(and, where their CelebA boundary is there: {derived})")
    return vectors, sources


def check_direction(name: str, vector: torch.Tensor, w_dim: int, num_ws: Optional[int],
                    normalize: Optional[bool], space: str = "w") -> torch.Tensor:
    """One boundary as ``[w_dim]`` (W) or ``[num_ws, w_dim]`` (W+), checked: finite, the right size, unit length.

    ``space="z"``: ``w_dim`` is the generator's ``z_dim`` and ``num_ws`` is None (z has no per-layer form).
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
    elif space == "z":
        raise ValueError(
            f"Direction {name!r} has size {vector.numel()} but the generator's z has z_dim = {w_dim} values "
            "(latent_space 'z'); use z boundaries computed for this generator, or latent_space 'w' if these are "
            "W / W+ boundaries"
        )
    else:
        plus = f" or num_ws x w_dim = {num_ws} x {w_dim} = {num_ws * w_dim} (W+)" if num_ws else ""
        raise ValueError(
            f"Direction {name!r} has size {vector.numel()} but the generator's latent size (w_dim) is {w_dim}{plus}; "
            "use directions computed for this generator (z boundaries, such as InterFaceGAN's StyleGAN2/3 FFHQ ones, "
            "need latent_space 'z')"
        )
    norm = float(vector.norm())
    if normalize is None and abs(norm - 1.0) > 1e-3:
        raise ComFaceInputError(
            f"Direction {name!r} has norm {norm:.4g}, not 1: the paper's edit w + alpha * n assumes unit vectors in "
            "the edited latent space (alpha in [-5, 5] is then a distance there). Pass --normalize_directions "
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
#: Devices where NVIDIA's fp16 layers are fast. On a CPU StyleGAN2-ADA's fp16 blocks took 11.8x their float32 time
#: without native fp16 (AVX2) and were no faster with it (AVX512-FP16) (BENCHMARKS, issue 25), so they run in float32
#: there (NVIDIA's force_fp32; StyleGAN3 does the same on its own).
FAST_FP16_DEVICES = ("cuda",)


class LatentEditGenerator:
    """Render ``G.synthesis(w_edit)`` for ``(identity, attribute, alpha)`` triples (module docstring: the two spaces).

    Args:
        generator: object with ``synthesis(w) -> images in [-1, 1]``, ``z_dim`` and ``mapping(z, c) -> w``
            (``[B, num_ws, w_dim]`` or ``[B, w_dim]``) with ``w_dim`` (``c_dim``, ``num_ws`` for W+), or
            ``mapping = None`` for a generator without a mapping network (``w = z``, ``w_dim = z_dim``).
        directions: folder of ``.npy`` files, a ``{name: vector}`` mapping, or a
            ``[num_attributes, dim]`` (or ``[num_attributes, num_ws, w_dim]``) tensor/array (then pass
            ``attribute_names``). A z direction has ``z_dim`` values; a W one ``w_dim``, a W+ one ``num_ws * w_dim``.
        attribute_names: order of the attributes (default: the mapping's keys / sorted files). With a mapping, the
            paper's weight, age and smile may come from CelebA boundaries (:data:`PAPER_FROM_CELEBA`).
        latent_space: ``"w"`` (edit ``w``; W+ when a boundary has ``num_ws * w_dim`` values) or ``"z"`` (edit ``z``,
            then map and truncate, as InterFaceGAN does with its z boundaries).
        seed: identity ``z`` seed.
        image_size: resize outputs to this size on the generator's device (``None`` keeps the generator's size).
        truncation_psi: ``w <- w_avg + psi (w - w_avg)`` after the mapping (needs ``G.mapping.w_avg`` unless 1).
        device: device for ``G`` and the outputs.
        normalize_directions: None (default) refuses directions that are not unit vectors, True normalises them,
            False uses them as given.
        synthesis_dtype: ``float32``, ``bfloat16`` or ``float16``. For NVIDIA's networks (blocks with ``use_fp16``
            and a ``force_fp32`` switch) through their own mechanisms: float32 passes ``force_fp32=True``; float16
            runs the network's own fp16 layers (on CUDA; elsewhere float32, with a warning); bfloat16 passes
            ``force_fp32=True`` and runs the layers under bfloat16 autocast, each layer's output cast back to its
            input's type (what NVIDIA's blocks check). Other generators: synthesis under autocast in that precision.
            Mapping, edit and output stay float32.
        identity_cache_size: keep up to this many identities' ``w`` (W space: they do not change between an
            identity's images). Cached ``w`` are computed in fixed blocks of :attr:`identity_block` identities, so a
            value never depends on the batch it was asked for in (bit-exact resume). 0: no cache, one mapping call for
            exactly the batch's identities each time (values may then differ in the last bit between batches). In z
            space every image is mapped (its z is edited), so nothing is cached; a batch's values depend only on the
            batch, which a resumed run draws again identically.
        compile: ``torch.compile`` the synthesis network (falls back to eager, with a warning, if it cannot).
        provenance: recorded by :meth:`describe` (e.g. the checkpoint's file name and sha256).
    """

    name = "comface-latent-edit"
    version = "1.2.0"
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
        latent_space: str = "w",
        provenance: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if not callable(getattr(generator, "synthesis", None)):
            raise TypeError("generator must have a callable .synthesis (StyleGAN G convention)")
        mapping = getattr(generator, "mapping", None)
        if mapping is not None and not callable(mapping):
            raise TypeError("generator.mapping must be callable as mapping(z, c), or None for a generator without a "
                            "mapping network (w = z)")
        if image_size is not None and int(image_size) < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size={image_size} is too small: the minimum is {MIN_IMAGE_SIZE} pixels")
        if synthesis_dtype not in SYNTHESIS_DTYPES:
            raise ValueError(f"synthesis_dtype must be one of {', '.join(SYNTHESIS_DTYPES)}, got {synthesis_dtype!r}")
        if latent_space not in LATENT_SPACES:
            raise ValueError(f"latent_space must be 'z' or 'w' (the space the boundaries were computed in), got "
                             f"{latent_space!r}")
        self.device = torch.device(device)
        self.G = generator.to(self.device) if hasattr(generator, "to") else generator
        if hasattr(self.G, "eval"):
            self.G.eval()
        self.has_mapping = mapping is not None
        self.z_dim = int(getattr(generator, "z_dim"))
        self.w_dim = int(getattr(generator, "w_dim")) if self.has_mapping else int(
            getattr(generator, "w_dim", None) or self.z_dim)
        if not self.has_mapping and self.w_dim != self.z_dim:
            raise ValueError(f"A generator without a mapping network synthesises from z itself: its w_dim "
                             f"({self.w_dim}) must equal z_dim ({self.z_dim}).")
        self.c_dim = int(getattr(generator, "c_dim", 0) or 0)
        num_ws = getattr(generator, "num_ws", None)
        self.num_ws = int(num_ws) if num_ws else None
        self.seed = int(seed)
        self.image_size = None if image_size is None else int(image_size)
        self.truncation_psi = float(truncation_psi)
        if self.truncation_psi != 1.0 and not hasattr(mapping, "w_avg"):
            raise ValueError(f"truncation_psi={self.truncation_psi} needs the mapping network's average w "
                             "(G.mapping.w_avg), which this generator has not: use truncation_psi=1.")
        self.alpha_range = (float(alpha_min), float(alpha_max))
        self.synthesis_dtype = synthesis_dtype
        self.latent_space = latent_space
        self.provenance = dict(provenance or {})
        self.identity_cache_size = int(identity_cache_size)
        self._cache: "collections.OrderedDict[int, torch.Tensor]" = collections.OrderedDict()
        self._synthesis_kwargs = _synthesis_kwargs(self.G)
        self._autocast, self.synthesis_precision = _precision_plan(self.G, synthesis_dtype, self.device,
                                                                   self._synthesis_kwargs)
        self._compiled = torch.compile(self.G.synthesis, dynamic=False) if compile else None

        # z boundaries have z_dim values and no per-layer form; W ones w_dim, W+ ones num_ws * w_dim
        dim, ws = (self.z_dim, None) if latent_space == "z" else (self.w_dim, self.num_ws)
        self.attribute_sources: Dict[str, str] = {}
        if isinstance(directions, (str, os.PathLike)):
            directions = load_directions(directions)
        if isinstance(directions, Mapping):
            names = list(attribute_names) if attribute_names is not None else list(directions)
            chosen, self.attribute_sources = select_directions(directions, names)
            vecs = [check_direction(n, chosen[n], dim, ws, normalize_directions, latent_space) for n in names]
        else:
            mat = torch.as_tensor(np.asarray(directions), dtype=torch.float32)
            if mat.ndim not in (2, 3) or mat.shape[-1] != dim:
                raise ValueError(
                    f"Direction size {tuple(mat.shape)} does not match the generator's latent size "
                    f"({'z_dim' if latent_space == 'z' else 'w_dim'}) {dim}: expected [num_attributes, {dim}]"
                )
            names = list(attribute_names) if attribute_names is not None else [f"attr_{i}" for i in range(len(mat))]
            if len(names) != len(mat):
                raise ValueError(f"{len(names)} attribute_names for {len(mat)} directions")
            vecs = [check_direction(n, v, dim, ws, normalize_directions, latent_space) for n, v in zip(names, mat)]
        if len(set(names)) != len(names):
            raise ValueError(f"Attribute names repeat: {names}")
        if any(v.ndim == 2 for v in vecs):  # some W+ directions: hold all as [num_ws, w_dim]
            vecs = [v if v.ndim == 2 else v[None].expand(self.num_ws, -1) for v in vecs]
        self.attribute_names: List[str] = names
        self.directions = torch.stack(vecs).to(self.device)  # [A, z_dim] (z), [A, w_dim] (W), [A, num_ws, w_dim] (W+)

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
        given, else ``fn(**generator_kwargs)`` (e.g. a loader of a StyleGAN ``.pkl``). This runs the code the import
        path names (the caller writes it in Python); the trainer asks for ``--trust_loader_code`` instead.
        """
        from .stylegan import LOADERS, load_generator

        if ":" not in import_path and import_path not in LOADERS:
            raise ValueError(f"import_path must look like 'package.module:callable', got {import_path!r}")
        G = load_generator(import_path, checkpoint, trust_code=True, **dict(generator_kwargs or {}))
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
        return self._map(identity_z(self.seed, ids, self.z_dim).to(self.device))

    @torch.no_grad()
    def _map(self, z: torch.Tensor) -> torch.Tensor:
        """``z -> w`` then truncation (as NVIDIA's mapping applies it, after the MLP); ``w = z`` without a mapping."""
        if not self.has_mapping:
            return z
        c = torch.zeros(len(z), self.c_dim, device=self.device)
        w = self.G.mapping(z, c).float()
        if self.truncation_psi != 1.0:
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
        """The synthesis input: ``w + alpha * n_m`` (W, W+) or ``truncate(mapping(z + alpha * n_m))`` (z);
        ``[B, num_ws, w_dim]`` or ``[B, w_dim]`` like ``G.mapping``."""
        n = self.directions[attributes.to(self.device)]  # [B, z_dim], [B, w_dim] or [B, num_ws, w_dim]
        if self.latent_space == "z":
            z = identity_z(self.seed, torch.as_tensor(identities).cpu().numpy(), self.z_dim).to(self.device)
            return self._map(z + alphas.to(self.device, z.dtype)[:, None] * n)
        w = self.identity_w(torch.as_tensor(identities).cpu().numpy())
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
        plan = self._autocast
        if isinstance(plan, _LayerAutocast):
            precision = plan()
        else:
            precision = torch.autocast(self.device.type, dtype=plan, enabled=plan is not None)
        with precision:
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
                try:
                    img = self.G.synthesis(ws, **self._synthesis_kwargs)
                except (AssertionError, RuntimeError) as err:
                    if self.synthesis_dtype == "float32":
                        raise
                    raise ComFaceInputError(
                        f"The generator's synthesis failed under synthesis_dtype={self.synthesis_dtype!r} "
                        f"({self.synthesis_precision}): {type(err).__name__}: {err or '(no message)'}. NVIDIA's "
                        "StyleGAN3 layers check their own precision and NVIDIA's CUDA plugins (bias_act, upfirdn2d) "
                        "have no bfloat16 kernels: use --synthesis_dtype float16 (NVIDIA's own fp16 layers) or "
                        "float32."
                    ) from err
        img = (img.float().clamp(-1.0, 1.0) + 1.0) * 0.5
        if self.image_size is not None and img.shape[-1] != self.image_size:
            img = F.interpolate(img, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                                antialias=True)
        return img.clamp(0.0, 1.0)

    def describe(self) -> dict:
        """What a run records about this generator (config, model card)."""
        from .stylegan import generator_class_name

        G = self.G
        kind = "z" if self.latent_space == "z" else ("W+" if self.directions.ndim == 3 else "W")
        return {"generator_class": generator_class_name(G), **self.provenance,
                "resolution": getattr(G, "img_resolution", None), "z_dim": self.z_dim, "w_dim": self.w_dim,
                "num_ws": self.num_ws, "mapping_network": self.has_mapping, "latent_space": self.latent_space,
                "directions": kind, "attribute_sources": dict(self.attribute_sources),
                "truncation_psi": self.truncation_psi, "seed": self.seed, "synthesis_dtype": self.synthesis_dtype,
                "synthesis_precision": self.synthesis_precision, "attributes": list(self.attribute_names)}


def _synthesis_kwargs(G: Any) -> dict:
    """NVIDIA's synthesis draws fresh noise per call by default (noise_mode='random'): ask for its fixed noise so an
    image is a function of (identity, attribute, alpha) only, as the pair sampler and exact resume need."""
    try:
        params = inspect.signature(G.synthesis.forward if hasattr(G.synthesis, "forward") else G.synthesis).parameters
    except (TypeError, ValueError):
        return {}
    if "noise_mode" in params:
        return {"noise_mode": "const"}
    if _nvidia_fp16_modules(G) or (
            type(G.synthesis).__module__.startswith(("training.networks", "torch_utils"))
            and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())):
        return {"noise_mode": "const"}
    return {}


def _nvidia_fp16_modules(G: Any) -> List[torch.nn.Module]:
    """NVIDIA's precision switches: modules with a ``use_fp16`` flag whose forward takes ``force_fp32`` (StyleGAN2-ADA's
    ``SynthesisBlock``, StyleGAN3's ``SynthesisLayer``). Both synthesis networks pass ``force_fp32`` through to them."""
    synthesis = getattr(G, "synthesis", None)
    if not isinstance(synthesis, torch.nn.Module):
        return []
    found = []
    for module in synthesis.modules():
        if isinstance(getattr(module, "use_fp16", None), bool):
            try:
                if "force_fp32" in inspect.signature(module.forward).parameters:
                    found.append(module)
            except (TypeError, ValueError):
                continue
    return found


class _LayerAutocast:
    """Run the layers of NVIDIA's blocks under autocast, each layer's output cast back to its input's type.

    Autocast around the whole synthesis network breaks NVIDIA's blocks: a convolution under autocast returns bfloat16
    whatever its input, and StyleGAN2-ADA's ``SynthesisBlock`` asserts that its activations and its image keep the
    block's type (float32 with ``force_fp32``; the image skip path is upsampled with a convolution too). So autocast is
    entered and left around each *layer* of a block (conv0, conv1, torgb, skip), by forward pre-hooks and
    always-called forward hooks held only for one synthesis call: the layers compute in bfloat16, the blocks' own
    code (and the image path) stays float32, as NVIDIA's checks expect.
    """

    def __init__(self, blocks: Sequence[torch.nn.Module], device_type: str, dtype: torch.dtype) -> None:
        self.layers = [child for block in blocks for child in block.children() if list(child.parameters())]
        self.device_type, self.dtype = device_type, dtype
        self.active: List[Any] = []

    def _enter(self, module: torch.nn.Module, inputs: tuple) -> None:
        context = torch.autocast(self.device_type, dtype=self.dtype)
        context.__enter__()
        self.active.append(context)

    def _leave(self, module: torch.nn.Module, inputs: tuple, output: Any) -> Any:
        if self.active:  # always called, also when the layer raised: the autocast state never leaks
            self.active.pop().__exit__(None, None, None)
        x = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        if isinstance(output, torch.Tensor) and x is not None and x.is_floating_point() and output.dtype != x.dtype:
            return output.to(x.dtype)
        return None

    @contextlib.contextmanager
    def __call__(self):
        handles = []
        try:
            for layer in self.layers:
                handles.append(layer.register_forward_pre_hook(self._enter))
                handles.append(layer.register_forward_hook(self._leave, always_call=True))
            yield
        finally:
            for handle in handles:
                handle.remove()
            while self.active:
                self.active.pop().__exit__(None, None, None)


def _precision_plan(G: Any, name: str, device: torch.device, kwargs: dict) -> tuple:
    """``(precision, description)`` for ``synthesis_dtype=name``: precision is None (no autocast), an autocast dtype
    (other generators), or a :class:`_LayerAutocast` (NVIDIA's blocks, reduced precision); adds NVIDIA's
    ``force_fp32`` to ``kwargs``."""
    blocks = _nvidia_fp16_modules(G)
    if not blocks:
        dtype = SYNTHESIS_DTYPES[name]
        return dtype, "float32" if dtype is None else f"{name} autocast"
    if name == "float16":
        if device.type not in FAST_FP16_DEVICES:
            warnings.warn(f"synthesis_dtype='float16' on {device.type}: this device has no fast float16 (NVIDIA's fp16 "
                          "layers ran 11.8x slower than float32 on a CPU without native fp16, and no faster with it); "
                          "synthesising in float32 (force_fp32=True).")
            kwargs["force_fp32"] = True
            return None, "float32 (NVIDIA force_fp32; float16 asked for on a device without fast fp16)"
        if not any(b.use_fp16 for b in blocks):
            warnings.warn("synthesis_dtype='float16': this network has no fp16 layers (trained with num_fp16_res=0), "
                          "so NVIDIA's code synthesises it in float32.")
        kwargs["force_fp32"] = False
        fp16 = sum(b.use_fp16 for b in blocks)
        return None, f"NVIDIA's own fp16 layers ({fp16} of {len(blocks)} blocks fp16, the rest float32)"
    kwargs["force_fp32"] = True
    if name == "float32":
        return None, "float32 (NVIDIA force_fp32)"
    if not all("img" in inspect.signature(b.forward).parameters for b in blocks):
        # StyleGAN3's switches are its layers themselves, and each asserts inside its forward that its output is
        # float32 (or float16 on CUDA): no layer is left whose output could be cast back, so bfloat16 cannot run.
        raise ComFaceInputError(
            f"synthesis_dtype={name!r}: this network's layers ({type(blocks[0]).__name__}, e.g. StyleGAN3's) check "
            "inside themselves that they compute in float32 or NVIDIA's float16, so they cannot run in bfloat16. "
            "Use --synthesis_dtype float16 (NVIDIA's own fp16 layers, on CUDA) or float32.")
    return (_LayerAutocast(blocks, device.type, SYNTHESIS_DTYPES[name]),
            f"{name} autocast in each layer of NVIDIA's float32 blocks (force_fp32; layer outputs cast back)")

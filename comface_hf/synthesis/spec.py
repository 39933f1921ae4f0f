"""One description of a face generator, shared by everything that builds one.

Pretraining, the same-person calibration and the synthetic downstream tasks each used to pass renderer version,
growth, seeds, attribute lists and latent-edit options to the constructors by hand, and they drifted (an embedded
member of a generators file lost its renderer version; ``comface calibrate`` asked for the version again because
nothing saved it). :class:`GeneratorSpec` is that description: pretraining stores ``spec.to_dict()`` (a list of them
for a mixture) in the saved model's ``config.generator_spec``, and :func:`build_generator` is the one constructor.

Not in a spec on purpose: ``trust_code`` (running a loader's import path is opted into on the command line of each
run, never read back from a saved file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from .renderer import DEFAULT_RENDERER_VERSION

GENERATOR_KINDS = ("embedded", "latent-edit")


@dataclass
class GeneratorSpec:
    """What a generator renders: ``render(identities [B], attributes [B], alphas [B]) -> [B, 3, S, S]`` in [0, 1].

    ``attributes``: ``"all"`` or comma-separated names. A lone embedded generator keeps all its attributes (the pair
    source picks ``attributes`` by index, where ``"all"`` means the paper's 43); in a mixture
    (:func:`build_mixture`) each member owns exactly its ``attributes``.
    ``photographic``: strength of the per-image capture randomisation the pair source applies after rendering
    (:mod:`.photographic`); recorded here because it is part of what the images look like, not applied by
    :func:`build_generator`.
    The latent-edit fields (``loader`` .. ``identity_cache_size``) are ignored by the embedded renderer and
    ``renderer_version`` / ``craniofacial_growth`` by a latent-edit one.
    ``warps``: comma-separated landmark-driven warp attributes (:mod:`.warp`) added after the directions' attributes
    (latent-edit only); ``face_template`` the generator's mean-face landmarks they move (default:
    ``<directions_dir>/face_template.json``); ``canonical_frame`` resamples every image into the canonical face frame
    real photos are aligned into, placed by that template (latent-edit only).
    """

    generator: str = "embedded"
    label: Optional[str] = None
    image_size: int = 64
    seed: int = 0
    alpha_min: float = -5.0
    alpha_max: float = 5.0
    attributes: str = "all"
    renderer_version: str = DEFAULT_RENDERER_VERSION
    craniofacial_growth: bool = True
    photographic: float = 0.0
    compile: bool = False
    loader: str = "nvidia-pickle"
    checkpoint: Optional[str] = None
    kwargs: dict = field(default_factory=dict)
    directions_dir: Optional[str] = None
    latent_space: Optional[str] = None
    truncation_psi: float = 1.0
    normalize_directions: bool = False
    synthesis_dtype: str = "float32"
    identity_cache_size: int = 300_000
    warps: str = ""
    face_template: Optional[str] = None
    canonical_frame: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GeneratorSpec":
        """Unknown keys are ignored (a config saved by a later version still loads its generator)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(values).items() if k in known})

    def attribute_names(self, available: Sequence[str]) -> list[str]:
        return list(available) if self.attributes == "all" else [a.strip() for a in self.attributes.split(",")]


SpecLike = Union[GeneratorSpec, dict]


def as_spec(spec: SpecLike) -> GeneratorSpec:
    return spec if isinstance(spec, GeneratorSpec) else GeneratorSpec.from_dict(spec)


def specs_from_config(value: Any) -> list[GeneratorSpec]:
    """``config.generator_spec`` (a dict, a list of dicts for a mixture, or None for older models) -> specs."""
    if value is None:
        return []
    return [as_spec(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def specs_to_config(specs: Sequence[GeneratorSpec]) -> Union[dict, list]:
    """The value stored in ``config.generator_spec``: one dict for one generator, a list for a mixture."""
    values = [s.to_dict() for s in specs]
    return values[0] if len(values) == 1 else values


def embedded_spec_for(specs: Sequence[GeneratorSpec], image_size: Optional[int] = None,
                      default_seed: int = 0) -> GeneratorSpec:
    """The embedded renderer a model trained on ``specs`` is checked with (same-person calibration, pictures,
    synthetic tasks).

    The run's own embedded generator when it had one; otherwise (latent edits only) the embedded renderer at the
    run's seed, renderer version and growth, since calibration renders unseen identities of the embedded renderer;
    with no specs at all (an older model, or none), the default embedded renderer at ``default_seed``.
    Never compiled: calibration renders a few hundred faces once.
    """
    if not specs:
        spec = GeneratorSpec(seed=default_seed)
    else:
        spec = next((s for s in specs if s.generator == "embedded"), None) or GeneratorSpec(
            seed=specs[0].seed, renderer_version=specs[0].renderer_version,
            craniofacial_growth=specs[0].craniofacial_growth)
    changes: dict[str, Any] = {"compile": False, "label": None, "attributes": "all", "photographic": 0.0}
    if image_size is not None:
        changes["image_size"] = int(image_size)
    return dataclasses.replace(spec, **changes)


def build_generator(spec: SpecLike, device: Union[str, torch.device] = "cpu", trust_code: bool = False):
    """The generator a spec describes, on ``device``: an ``EmbeddedFaceGenerator`` or a ``LatentEditGenerator``.

    ``trust_code``: allow ``spec.loader`` to be an import path (it imports and runs that code).
    """
    from ..errors import ComFaceInputError

    spec = as_spec(spec)
    label = spec.label or spec.generator
    if spec.generator == "embedded":
        from .renderer import EmbeddedFaceGenerator

        if spec.warps or spec.canonical_frame:
            raise ComFaceInputError(f"Generator {label!r}: warps and canonical_frame apply to latent-edit generators "
                                    "(the embedded renderer draws in the canonical frame and edits its geometry "
                                    "itself, e.g. craniofacial_growth).")

        return EmbeddedFaceGenerator(image_size=spec.image_size, seed=spec.seed, device=device,
                                     alpha_min=spec.alpha_min, alpha_max=spec.alpha_max, compile=spec.compile,
                                     renderer_version=spec.renderer_version,
                                     craniofacial_growth=spec.craniofacial_growth)
    if spec.generator != "latent-edit":
        raise ComFaceInputError(f"Generator {label!r}: 'generator' must be embedded or latent-edit, got "
                                f"{spec.generator!r}")
    from .latent_edit import LATENT_SPACES, LatentEditGenerator, load_directions
    from .stylegan import file_sha256, load_generator

    if not spec.directions_dir:
        raise ComFaceInputError(f"Generator {label!r}: latent-edit needs directions_dir (--directions_dir), a "
                                "folder of InterFaceGAN <attribute>.npy boundaries for this generator.")
    if spec.loader == "nvidia-pickle" and not spec.checkpoint:
        raise ComFaceInputError(f"Generator {label!r}: pass the network pickle's local path "
                                "(--generator_checkpoint path/to/network.pkl).")
    if spec.latent_space not in LATENT_SPACES:  # asked for, never guessed: z boundaries applied in W edit nothing
        raise ComFaceInputError(
            f"Generator {label!r}: say which latent space its boundaries were computed in: --latent_space z "
            "(InterFaceGAN's public StyleGAN2/StyleGAN3 FFHQ boundaries, boundary_<attribute>.npy: edited "
            "before the mapping network) or --latent_space w (W boundaries; W+ ones are told by their size)"
            f"; in a generators file, \"latent_space\": \"z\" or \"w\". Got {spec.latent_space!r}.")
    G = load_generator(spec.loader, spec.checkpoint, trust_code=trust_code, **spec.kwargs)
    provenance = ({"checkpoint": Path(spec.checkpoint).name, "checkpoint_sha256": file_sha256(spec.checkpoint)}
                  if spec.checkpoint and Path(spec.checkpoint).is_file() else {})
    directions = load_directions(spec.directions_dir)
    generator = LatentEditGenerator(
        G, directions, attribute_names=spec.attribute_names(list(directions)), seed=spec.seed,
        image_size=spec.image_size, truncation_psi=spec.truncation_psi, device=device, alpha_min=spec.alpha_min,
        alpha_max=spec.alpha_max, normalize_directions=True if spec.normalize_directions else None,
        synthesis_dtype=spec.synthesis_dtype, identity_cache_size=spec.identity_cache_size, compile=spec.compile,
        latent_space=spec.latent_space, provenance=provenance)
    if not spec.warps and not spec.canonical_frame:
        return generator
    from .warp import WarpEditGenerator, load_face_template

    template = load_face_template(spec.face_template or spec.directions_dir)
    return WarpEditGenerator(generator, spec.warps.split(","), template, canonical_frame=spec.canonical_frame)


def build_mixture(specs: Sequence[SpecLike], device: Union[str, torch.device] = "cpu", trust_code: bool = False):
    """Several generators as one ``GeneratorMixture``, each member owning exactly its spec's ``attributes``."""
    from .mixture import AttributeSubset, GeneratorMixture

    members, labels = [], []
    for i, spec in enumerate(as_spec(s) for s in specs):
        generator = build_generator(spec, device, trust_code=trust_code)
        if spec.generator == "embedded":
            generator = AttributeSubset(generator, spec.attribute_names(generator.attribute_names))
        members.append(generator)
        labels.append(spec.label or f"generator_{i}")
    return GeneratorMixture(members, labels)


__all__ = ["GENERATOR_KINDS", "GeneratorSpec", "build_generator", "build_mixture", "embedded_spec_for",
           "specs_from_config", "specs_to_config"]

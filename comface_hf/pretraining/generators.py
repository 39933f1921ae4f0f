"""The pretraining run's generators as :class:`~comface_hf.synthesis.spec.GeneratorSpec` s, built from its options.

Three ways to say what renders the pairs: the embedded renderer alone (the default), one latent-edit StyleGAN
(``--generator latent-edit`` and the ``--generator_*`` flags), or several mixed (``--generators_file``, a JSON list,
each member owning its attributes). All three become specs here, so the run's generator is built, saved in
``config.generator_spec`` and rebuilt by ``comface calibrate`` from the same values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ComFaceInputError
from ..synthesis.spec import GeneratorSpec, build_mixture

#: Keys a member of ``--generators_file`` may set; the rest comes from the run's options.
GENERATORS_FILE_KEYS = ("label", "generator", "loader", "checkpoint", "kwargs", "directions_dir", "attributes",
                        "truncation_psi", "normalize_directions", "seed", "latent_space", "warps", "face_template",
                        "canonical_frame")


def uses_generator_specs(args: Any) -> bool:
    """Whether the run streams from latent-edit generator(s) or a mixture instead of the lone embedded renderer."""
    return args.data_source == "stream" and (args.generator != "embedded" or args.generators_file is not None)


def run_spec(args: Any, **changes: Any) -> GeneratorSpec:
    """The options every generator of the run shares (size, seed, alpha range, renderer, capture, compile...)."""
    values = dict(image_size=args.image_size, seed=args.generator_seed, alpha_min=args.alpha_min,
                  alpha_max=args.alpha_max, renderer_version=args.renderer_version,
                  craniofacial_growth=args.craniofacial_growth, photographic=args.photographic,
                  compile=args.compile_generator, latent_space=args.latent_space,
                  synthesis_dtype=args.synthesis_dtype, identity_cache_size=args.identity_cache_size)
    values.update(changes)
    return GeneratorSpec(**values)


def embedded_spec(args: Any) -> GeneratorSpec:
    """The lone embedded renderer (the default run): its attributes are picked by the pair source."""
    return run_spec(args, label="embedded")


def generator_specs(args: Any) -> list[GeneratorSpec]:
    """The run's generators: ``--generators_file``'s list, or one from the ``--generator_*`` flags.

    A file member inherits the run's shared options (:func:`run_spec`, renderer version and growth included) and
    sets only :data:`GENERATORS_FILE_KEYS`; its relative paths are relative to the file.
    """
    if args.generators_file:
        path = Path(args.generators_file)
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ComFaceInputError(f"--generators_file {path}: not a readable JSON list of generators ({exc}).") from None
        if not isinstance(entries, list) or not entries or not all(isinstance(s, dict) for s in entries):
            raise ComFaceInputError(f"--generators_file {path} must hold a non-empty JSON list of objects.")
        specs = []
        for i, entry in enumerate(entries):
            if set(entry) - set(GENERATORS_FILE_KEYS):
                raise ComFaceInputError(f"{path}: unknown key(s) {', '.join(sorted(set(entry) - set(GENERATORS_FILE_KEYS)))}; "
                                        f"a generator has {', '.join(sorted(GENERATORS_FILE_KEYS))}.")
            entry = dict(entry)
            for key in ("checkpoint", "directions_dir", "face_template"):  # relative paths: relative to the file
                if entry.get(key) and not Path(entry[key]).is_absolute() and (path.parent / entry[key]).exists():
                    entry[key] = str(path.parent / entry[key])
            entry.setdefault("generator", "latent-edit")
            entry["label"] = entry.get("label") or f"generator_{i}"
            # Members choose their own boundaries' options: the --truncation_psi / --normalize_directions /
            # --attributes flags apply to the single --generator only.
            entry.setdefault("truncation_psi", 1.0)
            entry["normalize_directions"] = bool(entry.get("normalize_directions"))
            entry.setdefault("attributes", "all")
            entry["kwargs"] = entry.get("kwargs") or {}
            specs.append(run_spec(args, **entry))
        return specs
    if args.generator not in ("embedded", "latent-edit"):
        raise ComFaceInputError(f"--generator must be embedded or latent-edit, got {args.generator!r}")
    return [run_spec(args, label=args.generator, generator=args.generator, loader=args.generator_loader,
                     checkpoint=args.generator_checkpoint, kwargs=json.loads(args.generator_kwargs or "{}"),
                     directions_dir=args.directions_dir, attributes=args.attributes,
                     truncation_psi=args.truncation_psi, normalize_directions=args.normalize_directions,
                     warps=args.warps, canonical_frame=args.canonical_frame)]


def build_stream_generator(args: Any, device: torch.device):
    """The run's generator(s) on the training device, as one ``GeneratorMixture`` (also for a single member)."""
    return build_mixture(generator_specs(args), device, trust_code=args.trust_loader_code)


def run_generator_specs(args: Any) -> list[GeneratorSpec]:
    """What rendered the run's pairs (``config.generator_spec``): [] for a corpus run (the corpus says)."""
    if args.data_source != "stream":
        return []
    return generator_specs(args) if uses_generator_specs(args) else [embedded_spec(args)]


def stream_card_text(args: Any, generator) -> str:
    """The model card's training-data line for a run streamed from StyleGAN(s)."""
    parts = []
    for d in generator.describe():
        source = (f", checkpoint {d['checkpoint']} sha256 {d['checkpoint_sha256']}" if d.get("checkpoint_sha256")
                  else "")
        edit = {"z": "z + alpha * n, then the mapping network", "W": "w + alpha * n", "W+": "w + alpha * n per layer"}
        derived = "".join(f", {k} = {v}" for k, v in d.get("attribute_sources", {}).items())
        how = edit.get(d.get("directions"), "its own edit")
        if d.get("mapping_network") is False:
            how = "z + alpha * n, no mapping network"
        if d.get("warps"):
            how += "; landmark-driven warps: " + ", ".join(d["warps"])
        if d.get("canonical_frame"):
            how += "; resampled into the canonical face frame"
        parts.append(f"{d['label']} ({d['generator_class']}{source}, {d.get('resolution') or '?'} px, "
                     f"{d.get('directions', 'own')} directions ({how}{derived})"
                     f", psi {d.get('truncation_psi', 1)}, synthesis {d.get('synthesis_precision', 'float32')}): "
                     f"{len(d['attributes'])} attributes ({', '.join(d['attributes'])}), {100 * d['share']:.1f}% of pairs"
                     + (f" [{d['data_terms']}]" if d.get("data_terms") else ""))
    return (f"Latent edits streamed from {len(parts)} generator(s) on the training device, mixed in each "
            f"batch in proportion to their attribute counts: " + "; ".join(parts) + f". {args.num_identities} "
            f"identities per generator split 90/10 by identity, alpha in [{args.alpha_min}, {args.alpha_max}] step "
            f"{args.alpha_step}, resized to {args.image_size} px.")


__all__ = ["GENERATORS_FILE_KEYS", "build_stream_generator", "embedded_spec", "generator_specs", "run_generator_specs",
           "run_spec", "stream_card_text", "uses_generator_specs"]

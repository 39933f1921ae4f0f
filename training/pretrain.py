"""Pretrain ComFace (Sec. 3.2-3.3, 4.1) with Accelerate, on one CPU, one GPU or many.

    accelerate launch training/pretrain.py                       # the embedded default (small, CPU, minutes)
    accelerate launch training/pretrain.py --preset paper        # ResNet50, 224 px, 35 M images, 12 epochs, batch 1024
    accelerate launch --multi_gpu --num_processes 8 training/pretrain.py --preset paper --mixed_precision bf16
    accelerate launch training/pretrain.py --resume_from_checkpoint latest
    accelerate launch training/pretrain.py --learning intra      # Table 7 (b); also inter, --intra_target signed,
                                                                  # --no_curriculum

Read top to bottom: arguments and presets -> data (pairs from the generator or a built corpus) -> model, optimiser,
schedule -> resume -> training loop (curriculum, augmentation, losses, checkpoints) -> validation -> save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProfileKwargs, set_seed
from scipy.stats import pearsonr
from tqdm.auto import tqdm
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from comface_hf import ComFaceConfig, ComFaceImageProcessor, ComFaceModel, FaceCycleConfig, FaceCycleModel  # noqa: E402
from comface_hf.pretraining.augment import augment_batch, step_generator  # noqa: E402
from comface_hf.pretraining.pairs import CorpusPairSampler, Curriculum, StreamingPairSampler, split_identities  # noqa: E402
from comface_hf.errors import ComFaceInputError, run_cli  # noqa: E402
from comface_hf.synthesis import DEFAULT_RENDERER_VERSION  # noqa: E402
from training.checkpointing import atomic_directory, find_checkpoint, list_checkpoints, prune_checkpoints  # noqa: E402
from training.profiling import stage, write_profile  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# Arguments and presets
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class PretrainArguments:
    preset: str = field(default="embedded", metadata={"help": "embedded (default, CPU minutes), cpu-hour or paper."})
    method: str = field(default="comface", metadata={"help": "comface, or facecycle (the baseline, same pipeline)."})
    config_file: Optional[str] = field(default=None, metadata={"help": "JSON file of arguments; CLI flags win."})
    output_dir: Optional[str] = field(default=None, metadata={"help": "Default: outputs/<method>-<preset>."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start afresh over an earlier run's checkpoints."})
    # data
    data_source: str = field(default="stream", metadata={"help": "stream (render pairs on the device) or corpus."})
    corpus_config: str = field(default="small", metadata={"help": "comface_synthetic configuration (data_source=corpus)."})
    corpus_cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache for the built corpus."})
    generator_seed: int = 0
    num_identities: int = 2000
    attributes: str = field(default="all", metadata={"help": "'all' or comma-separated attribute names."})
    image_size: int = 64
    alpha_min: float = -5.0
    alpha_max: float = 5.0
    alpha_step: float = 0.1
    renderer_version: str = field(default=DEFAULT_RENDERER_VERSION, metadata={"help": "Embedded renderer: 2.1.0 (broader smile), or the earlier 2.0.0, 1.1.0."})
    craniofacial_growth: bool = field(default=True, metadata={"help": "Renderer 2's childhood growth (head strain and "
                                      "child proportions); --craniofacial_growth False is the growth ablation."})
    photographic: float = field(default=0.0, metadata={"help": "Strength of per-image photographic capture "
                                "randomisation of streamed pairs (comface_hf.synthesis.photographic; 0: off, 1: measured)."})
    compile_generator: bool = field(default=False, metadata={"help": "torch.compile the embedded renderer (same "
                                    "pixels, 5-8x faster on CPU; 30-45 s to compile once per size)."})
    samples_per_epoch: int = field(default=4096, metadata={"help": "Pairs per epoch when streaming."})
    validation_pairs: int = 512
    num_workers: int = field(default=1, metadata={"help": "Processes producing batches ahead (CPU rendering)."})
    cpu_threads: int = field(default=0, metadata={"help": "Torch threads per process on CPU (0: cores / processes)."})
    # streaming generators (README "Streaming from a StyleGAN"): the embedded renderer, a StyleGAN's latent edits, or
    # several generators mixed, each owning its attributes
    generator: str = field(default="embedded", metadata={"help": "embedded, or latent-edit (a StyleGAN + boundaries)."})
    generator_loader: str = field(default="nvidia-pickle", metadata={"help": "latent-edit: nvidia-pickle (NVIDIA's "
                                  "StyleGAN2-ADA/StyleGAN3 *.pkl, G_ema) or package.module:callable (code: needs "
                                  "--trust_loader_code)."})
    trust_loader_code: bool = field(default=False, metadata={"help": "Allow --generator_loader / a generators file's "
                                    "'loader' to be an import path: it imports and calls that code."})
    generator_checkpoint: Optional[str] = field(default=None, metadata={"help": "latent-edit: local path of the network "
                                                "(a pickle runs code when loaded: only files you trust)."})
    generator_kwargs: Optional[str] = field(default=None, metadata={"help": "latent-edit: JSON keyword arguments for the loader."})
    directions_dir: Optional[str] = field(default=None, metadata={"help": "latent-edit: folder of InterFaceGAN "
                                          "[boundary_]<attribute>.npy boundaries ([1, z_dim] z, [1, w_dim] W or "
                                          "[1, num_ws*w_dim] W+)."})
    latent_space: Optional[str] = field(default=None, metadata={"help": "latent-edit, required: z or w, the space the "
                                        "boundaries were computed in (InterFaceGAN's public StyleGAN2/3 FFHQ "
                                        "boundaries are z). W+ is told by a boundary's size."})
    normalize_directions: bool = field(default=False, metadata={"help": "Divide boundaries by their norm (default: "
                                       "refuse non-unit ones)."})
    truncation_psi: float = 1.0
    synthesis_dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16 StyleGAN synthesis "
                                 "(NVIDIA networks: float16 = their own fp16 layers, on CUDA)."})
    identity_cache_size: int = field(default=300_000, metadata={"help": "Identities whose w stays cached (0: none)."})
    generators_file: Optional[str] = field(default=None, metadata={"help": "JSON list of generators mixed in one run, "
                                           "each owning its attributes (see README). A 'loader' import path in it is "
                                           "code: it runs only with --trust_loader_code."})
    # model and losses
    backbone: str = "resnet18"
    projection_hidden_size: int = 512
    projection_dim: int = 128
    temperature: float = 0.1
    learning: str = field(default="both", metadata={"help": "both, inter or intra (Table 7 a-c)."})
    intra_target: str = field(default="absolute", metadata={"help": "absolute or signed (Table 7 d)."})
    no_curriculum: bool = field(default=False, metadata={"help": "Keep S = S_max (Table 7 e)."})
    curriculum_stage_epochs: str = "3,6,9,12"
    facecycle_base_channels: int = 32
    # optimisation
    num_epochs: int = 4
    global_batch_size: int = 64
    per_device_batch_size: Optional[int] = field(default=None, metadata={"help": "Default: global / processes."})
    learning_rate: float = 4e-4
    lr_decay_epoch: float = field(default=10.0, metadata={"help": "Halve the lr here, on the paper's 12-epoch scale."})
    max_steps: Optional[int] = field(default=None, metadata={"help": "Stop after this many optimiser steps."})
    mixed_precision: Optional[str] = field(default=None, metadata={"help": "no, fp16 or bf16 (default: launcher's)."})
    sync_batchnorm: bool = False
    channels_last: bool = False
    torch_compile: bool = False
    seed: int = 0
    # checkpoints, tracking, output
    checkpointing_steps: Optional[int] = field(default=None, metadata={"help": "Also checkpoint every K steps."})
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder."})
    report_to: str = "tensorboard"
    logging_steps: int = 10
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    debug_dump_dir: Optional[str] = field(default=None, metadata={"help": "Tests: per-process pairs and weights."})
    profile_steps: int = field(default=0, metadata={"help": "Profile this many optimiser steps after one warm-up step "
                               "and write <output_dir>/profile/ (time per step in each stage, top operators, Chrome "
                               "trace; training/profiling.py). 0: off."})
    # --- probe validation (issue 24; comface_hf/pretraining/validation.py) ---
    validation: str = field(default="synthetic", metadata={"help": "synthetic (val_pearson etc. on held-out generated "
                            "identities, every epoch) or probe (also, after the final save, the probe validation: a "
                            "ridge probe of f's features on measured changes of held-out DCGAN faces)."})
    # --- end probe validation ---


# Renderer 1.1.0's attributes whose +-5 edit changes the mean pixel value by at least ~0.9% at 64 px (mean
# |render(alpha=+-5) - render(0)| over 16 identities); the other 28 (smile, lipstick, earrings...) changed a handful
# of pixels each. The embedded preset before renderer 2.0.0 (`--renderer_version 1.1.0 --attributes` this).
EMBEDDED_ATTRIBUTES_R1 = (
    "weight,age,Chubby,Gray_Hair,Bald,Young,Pale_Skin,Blond_Hair,Black_Hair,Brown_Hair,Blurry,Wearing_Hat,Bangs,"
    "Male,Oval_Face"
)
# Renderer 2 (2.0.0, 2.1.0): the same plus the expressions it draws visibly at 64 px (smile = AU12 + AU6, Smiling, and the
# optional AU1+2, AU4, AU15, AU26). `--attributes all` (the paper preset) is the paper's 43, without the AUs.
EMBEDDED_ATTRIBUTES = (
    EMBEDDED_ATTRIBUTES_R1 + ",smile,Smiling,brow_raise_AU1_2,brow_lower_AU4,lip_corner_depressor_AU15,jaw_drop_AU26"
)

# Issue 24: boundaries that `comface directions --loader gan-face-generate --samples 2500` found in the registry DCGAN's
# z (InterFaceGAN's procedure, offline labels; report.md beside them). cheek_jaw_ratio is left out of the preset: its
# edit mostly opens the mouth (docs/dcgan_directions_sheet.png).
DCGAN_DIRECTIONS = str(Path(__file__).resolve().parents[1] / "comface_hf" / "synthesis" / "dcgan_directions")
DCGAN_ATTRIBUTES = "age,smile,mouth_open,weight,brow_raise,eye_open"

PRESETS: dict[str, dict] = {
    # A fresh 2-core CPU: ResNet18 at 64 px on pairs streamed from the embedded generator, 6 short epochs of 1536
    # pairs (curriculum S = 10, 5, 3.3, 2.5 scaled to them), validated on 256 pairs and saved within 10 minutes.
    # Renderer 2 costs ~1.7x renderer 1.1.0 per face and its worker shares the 2 cores with training: 6 x 2048 pairs
    # took 12.8 min on the idle machine (2026-11-27), so the epochs are 1536 pairs (9,216 in all, was 12,288).
    "embedded": {"attributes": EMBEDDED_ATTRIBUTES, "num_epochs": 6, "samples_per_epoch": 1536, "validation_pairs": 256,
                 "photographic": 1.0},
    # Photographic pairs (issue 24): latent edits z + alpha * n of gan-face-generate's 64 px DCGAN (DigiFace-1M:
    # research use only) along the shipped boundaries, with the embedded preset's recipe otherwise.
    "dcgan": {"generator": "latent-edit", "generator_loader": "gan-face-generate", "directions_dir": DCGAN_DIRECTIONS,
              "latent_space": "z",  # the DCGAN has no mapping network: its boundaries are z boundaries
              "attributes": DCGAN_ATTRIBUTES, "num_epochs": 6, "samples_per_epoch": 1536, "validation_pairs": 256,
              "photographic": 1.0},
    # Under an hour on the 2 CPU cores (47 min, data wait 0.4%, 2026-11-28): the reference checkpoint for real-face
    # evidence. 112 px (ResNet18 costs ~3x per image of 64 px), 12 epochs of 2048 pairs (2.7x the embedded preset's).
    "cpu-hour": {"attributes": EMBEDDED_ATTRIBUTES, "image_size": 112, "num_epochs": 12, "samples_per_epoch": 2048,
                 "photographic": 1.0, "num_identities": 4000},
    # Sec. 4.1: ResNet50, 224 px, 250k identities (90/10), 43 attributes, alpha -5..5 step 0.1, 35 M images,
    # 12 epochs, batch 1024, Adam 4e-4 halved at epoch 10, curriculum S_max = 10, e = (3, 6, 9, 12).
    "paper": {
        "backbone": "resnet50",
        "image_size": 224,
        "attributes": "all",
        "num_identities": 250_000,
        "samples_per_epoch": 31_500_000,
        "num_epochs": 12,
        "global_batch_size": 1024,
        "projection_hidden_size": 2048,
        "validation_pairs": 10_000,
        "num_workers": 0,  # streaming renders on the GPU itself; use 8 with --data_source corpus
        "compile_generator": True,  # fused kernels instead of ~1,700 small ones per chunk of faces
        "checkpointing_steps": 2000,
    },
}


LOSS_TERMS = {
    "comface": ("inter_personal_loss", "intra_personal_loss"),
    "facecycle": ("reconstruction_loss", "motion_cycle_loss", "identity_cycle_loss"),
}


def parse_arguments(argv: Optional[list[str]] = None) -> PretrainArguments:
    """Defaults <- preset <- config file <- command line."""
    parser = HfArgumentParser(PretrainArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.preset not in PRESETS:
        parser.error(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    explicit = _explicit_flags(argv if argv is not None else sys.argv[1:])
    values = dataclasses.asdict(args)
    values.update({k: v for k, v in PRESETS[args.preset].items() if k not in explicit})
    if args.config_file:
        with open(args.config_file) as f:
            from_file = json.load(f)
        unknown = set(from_file) - set(values)
        if unknown:
            parser.error(f"unknown option(s) in {args.config_file}: {', '.join(sorted(unknown))}")
        if "trust_loader_code" in from_file:  # the opt-in to run a file's code cannot come from a file
            parser.error(f"{args.config_file} sets trust_loader_code: running an import-path loader is allowed only by "
                         "--trust_loader_code on the command line itself")
        values.update({k: v for k, v in from_file.items() if k not in explicit})
    args = PretrainArguments(**values)
    args.output_dir = args.output_dir or f"outputs/{args.method}-{args.preset}"
    for name, allowed in (("learning", ("both", "inter", "intra")), ("intra_target", ("absolute", "signed")),
                          ("data_source", ("stream", "corpus")), ("method", ("comface", "facecycle"))):
        if getattr(args, name) not in allowed:
            parser.error(f"--{name} must be one of {', '.join(allowed)}, got {getattr(args, name)!r}")
    if args.validation not in ("synthetic", "probe"):  # probe validation (issue 24)
        parser.error(f"--validation must be synthetic or probe, got {args.validation!r}")
    if args.profile_steps < 0:
        parser.error(f"--profile_steps must be >= 0 (0: no profile), got {args.profile_steps}")
    if not args.craniofacial_growth and args.renderer_version == "1.1.0":
        parser.error("--craniofacial_growth False needs renderer 2 (renderer 1.1.0 has no growth to switch off); "
                     "drop it or pick --renderer_version 2.1.0")
    return args


def _explicit_flags(argv: list[str]) -> set[str]:
    return {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}


# ----------------------------------------------------------------------------------------------------------------
# Data: pairs from the generator (streaming, rendered on the device) or from a built comface_synthetic corpus
# ----------------------------------------------------------------------------------------------------------------
class StreamingPairs:
    """Renders each micro-batch's pairs on the training device: storage never bounds the scale."""

    max_pairs = float("inf")

    def __init__(self, args: PretrainArguments, device: torch.device, identities: np.ndarray):
        from comface_hf.synthesis import alpha_grid, get_generator

        self.generator = get_generator("embedded", image_size=args.image_size, seed=args.generator_seed,
                                       device=device, alpha_min=args.alpha_min, alpha_max=args.alpha_max,
                                       compile=args.compile_generator, renderer_version=args.renderer_version,
                                       craniofacial_growth=args.craniofacial_growth)
        self.attributes = _attribute_indices(args.attributes, self.generator)
        self.photographic, self.seed = args.photographic, args.seed
        grid = alpha_grid(args.alpha_min, args.alpha_max, args.alpha_step).numpy()
        self.sampler = StreamingPairSampler(identities, len(self.attributes), grid, seed=args.seed)

    def batch(self, epoch: int, start: int, count: int, s: float) -> dict[str, torch.Tensor]:
        with stage("draw_pairs"):
            drawn = self.sampler.draw(epoch, start, count, s)
            identity = torch.from_numpy(drawn["identity"])
            attribute = torch.from_numpy(self.attributes[drawn["attribute"]])
            alpha_x, alpha_y = torch.from_numpy(drawn["alpha_x"]), torch.from_numpy(drawn["alpha_y"])
        with stage("render"):
            images = self.generator.render(torch.cat([identity, identity]), torch.cat([attribute, attribute]),
                                           torch.cat([alpha_x, alpha_y]))
        if self.photographic > 0:  # each image of a pair is its own photo: capture drawn per (seed, epoch, index)
            from comface_hf.synthesis.photographic import photographic

            state = np.random.SeedSequence([self.seed, epoch + 1, start, 0x9407]).generate_state(2, np.uint32)
            g = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
            with stage("capture"):
                images = photographic(images, g, self.photographic)
        x, y = images.chunk(2)
        return {"x": x, "y": y, "alpha_x": alpha_x, "alpha_y": alpha_y, "identity": identity, "attribute": attribute}


class CorpusPairs:
    """Pairs over the rows of a built corpus split; images decoded from the dataset's Arrow files."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.alpha = np.asarray(dataset["alpha"], dtype=np.float32)
        self.identity = np.asarray(dataset["identity"])
        self.attribute = _attribute_codes(dataset)
        self.sampler = CorpusPairSampler(self.identity, self.attribute, self.alpha, seed=seed)
        self._epoch, self._pairs = None, None
        self.max_pairs = self.sampler.num_rows

    def pairs(self, epoch: int, s: float) -> np.ndarray:
        if self._epoch != epoch:
            self._epoch, self._pairs = epoch, self.sampler.epoch_pairs(epoch, s)
        return self._pairs

    def batch(self, epoch: int, start: int, count: int, s: float) -> dict[str, torch.Tensor]:
        rows = self.pairs(epoch, s)[start : start + count]
        images = self.dataset[np.concatenate([rows[:, 0], rows[:, 1]]).tolist()]["image"]
        pixels = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1) for im in images]).float() / 255
        x, y = pixels.chunk(2)
        return {"x": x, "y": y, "alpha_x": torch.from_numpy(self.alpha[rows[:, 0]]),
                "alpha_y": torch.from_numpy(self.alpha[rows[:, 1]]),
                "identity": torch.from_numpy(self.identity[rows[:, 0]]),
                "attribute": torch.from_numpy(self.attribute[rows[:, 0]])}


def _attribute_indices(attributes: str, generator) -> np.ndarray:
    if attributes == "all":  # the paper's 43 (renderer 2.0.0's expression attributes are opt-in)
        from comface_hf.synthesis import ATTRIBUTE_NAMES

        return np.arange(len(ATTRIBUTE_NAMES))
    return np.array([generator.attribute_index(name.strip()) for name in attributes.split(",")])


def _attribute_codes(dataset) -> np.ndarray:
    values = dataset["attribute"]
    if len(values) and isinstance(values[0], str):
        names = {name: i for i, name in enumerate(sorted(set(values)))}
        return np.array([names[v] for v in values])
    return np.asarray(values, dtype=np.int64)


# Streaming from StyleGANs: one latent-edit generator or several mixed (each owning its attributes), shared by the
# training and validation sources and rendered on the training device inside the step.
class GeneratorPairs(StreamingPairs):
    """StreamingPairs over a prebuilt generator (a latent-edit StyleGAN or a mixture): same sampler, same batches."""

    def __init__(self, args: PretrainArguments, generator, identities: np.ndarray):
        from comface_hf.synthesis import alpha_grid

        self.generator = generator
        self.attributes = np.arange(len(generator.attribute_names))
        self.photographic, self.seed = args.photographic, args.seed  # capture variation applies to any generator
        grid = alpha_grid(args.alpha_min, args.alpha_max, args.alpha_step).numpy()
        self.sampler = StreamingPairSampler(identities, len(self.attributes), grid, seed=args.seed)


def uses_generator_specs(args: PretrainArguments) -> bool:
    return args.data_source == "stream" and (args.generator != "embedded" or args.generators_file is not None)


def generator_specs(args: PretrainArguments) -> list[dict]:
    """The run's generators as specs: --generators_file's list, or one from the --generator_* flags."""
    if args.generators_file:
        path = Path(args.generators_file)
        try:
            specs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ComFaceInputError(f"--generators_file {path}: not a readable JSON list of generators ({exc}).") from None
        if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
            raise ComFaceInputError(f"--generators_file {path} must hold a non-empty JSON list of objects.")
        known = {"label", "generator", "loader", "checkpoint", "kwargs", "directions_dir", "attributes",
                 "truncation_psi", "normalize_directions", "seed", "latent_space"}
        for spec in specs:
            if set(spec) - known:
                raise ComFaceInputError(f"{path}: unknown key(s) {', '.join(sorted(set(spec) - known))}; "
                                        f"a generator has {', '.join(sorted(known))}.")
            for key in ("checkpoint", "directions_dir"):  # relative paths are relative to the file
                if spec.get(key) and not Path(spec[key]).is_absolute() and (path.parent / spec[key]).exists():
                    spec[key] = str(path.parent / spec[key])
        return specs
    if args.generator not in ("embedded", "latent-edit"):
        raise ComFaceInputError(f"--generator must be embedded or latent-edit, got {args.generator!r}")
    return [{"label": args.generator, "generator": args.generator, "loader": args.generator_loader,
             "checkpoint": args.generator_checkpoint, "kwargs": json.loads(args.generator_kwargs or "{}"),
             "directions_dir": args.directions_dir, "attributes": args.attributes, "latent_space": args.latent_space,
             "truncation_psi": args.truncation_psi, "normalize_directions": args.normalize_directions}]


def build_stream_generator(args: PretrainArguments, device: torch.device):
    """The run's generator(s) on the training device; several become a GeneratorMixture."""
    from comface_hf.synthesis import get_generator
    from comface_hf.synthesis.latent_edit import LATENT_SPACES, LatentEditGenerator, load_directions
    from comface_hf.synthesis.mixture import AttributeSubset, GeneratorMixture
    from comface_hf.synthesis.stylegan import file_sha256, load_generator

    members, labels = [], []
    for i, spec in enumerate(generator_specs(args)):
        kind, label = spec.get("generator", "latent-edit"), spec.get("label") or f"generator_{i}"
        attributes = spec.get("attributes", "all")
        seed = spec.get("seed", args.generator_seed)
        if kind == "embedded":
            embedded = get_generator("embedded", image_size=args.image_size, seed=seed, device=device,
                                     alpha_min=args.alpha_min, alpha_max=args.alpha_max, compile=args.compile_generator)
            names = embedded.attribute_names if attributes == "all" else [a.strip() for a in attributes.split(",")]
            members.append(AttributeSubset(embedded, names))
        elif kind == "latent-edit":
            if not spec.get("directions_dir"):
                raise ComFaceInputError(f"Generator {label!r}: latent-edit needs directions_dir (--directions_dir), a "
                                        "folder of InterFaceGAN <attribute>.npy boundaries for this generator.")
            if spec.get("loader", "nvidia-pickle") == "nvidia-pickle" and not spec.get("checkpoint"):
                raise ComFaceInputError(f"Generator {label!r}: pass the network pickle's local path "
                                        "(--generator_checkpoint path/to/network.pkl).")
            space = spec.get("latent_space", args.latent_space)
            if space not in LATENT_SPACES:  # asked for, never guessed: z boundaries applied in W edit nothing
                raise ComFaceInputError(
                    f"Generator {label!r}: say which latent space its boundaries were computed in: --latent_space z "
                    "(InterFaceGAN's public StyleGAN2/StyleGAN3 FFHQ boundaries, boundary_<attribute>.npy: edited "
                    "before the mapping network) or --latent_space w (W boundaries; W+ ones are told by their size)"
                    f"; in a generators file, \"latent_space\": \"z\" or \"w\". Got {space!r}.")
            G = load_generator(spec.get("loader", "nvidia-pickle"), spec.get("checkpoint"),
                               trust_code=args.trust_loader_code, **spec.get("kwargs", {}))
            checkpoint = spec.get("checkpoint")
            provenance = ({"checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint)}
                          if checkpoint and Path(checkpoint).is_file() else {})
            directions = load_directions(spec["directions_dir"])
            names = list(directions) if attributes == "all" else [a.strip() for a in attributes.split(",")]
            members.append(LatentEditGenerator(
                G, directions, attribute_names=names, seed=seed, image_size=args.image_size,
                truncation_psi=spec.get("truncation_psi", 1.0), device=device, alpha_min=args.alpha_min,
                alpha_max=args.alpha_max, normalize_directions=True if spec.get("normalize_directions") else None,
                synthesis_dtype=args.synthesis_dtype, identity_cache_size=args.identity_cache_size,
                compile=args.compile_generator, latent_space=space, provenance=provenance))
        else:
            raise ComFaceInputError(f"Generator {label!r}: 'generator' must be embedded or latent-edit, got {kind!r}")
        labels.append(label)
    return GeneratorMixture(members, labels)


def stream_card_text(args: PretrainArguments, generator) -> str:
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
        parts.append(f"{d['label']} ({d['generator_class']}{source}, {d.get('resolution') or '?'} px, "
                     f"{d.get('directions', 'own')} directions ({how}{derived})"
                     f", psi {d.get('truncation_psi', 1)}, synthesis {d.get('synthesis_precision', 'float32')}): "
                     f"{len(d['attributes'])} attributes ({', '.join(d['attributes'])}), {100 * d['share']:.1f}% of pairs"
                     + (f" [{d['data_terms']}]" if d.get("data_terms") else ""))
    return (f"Latent edits streamed from {len(parts)} generator(s) on the training device, mixed in each "
            f"batch in proportion to their attribute counts: " + "; ".join(parts) + f". {args.num_identities} "
            f"identities per generator split 90/10 by identity, alpha in [{args.alpha_min}, {args.alpha_max}] step "
            f"{args.alpha_step}, resized to {args.image_size} px.")


def build_data(args: PretrainArguments, accelerator: Accelerator):
    """(train source, validation source, number of training samples per epoch)."""
    if args.data_source == "stream":
        train_ids, val_ids = split_identities(args.num_identities, 0.1, seed=args.generator_seed)
        if uses_generator_specs(args):
            generator = build_stream_generator(args, accelerator.device)
            return GeneratorPairs(args, generator, train_ids), GeneratorPairs(args, generator, val_ids), args.samples_per_epoch
        train = StreamingPairs(args, accelerator.device, train_ids)
        val = StreamingPairs(args, accelerator.device, val_ids)
        return train, val, args.samples_per_epoch
    from dataset_builders.comface_synthetic import ComFaceSynthetic

    builder = ComFaceSynthetic(config_name=args.corpus_config, cache_dir=args.corpus_cache_dir)
    if builder.config.image_size != args.image_size:
        raise ValueError(
            f"The corpus configuration {args.corpus_config!r} holds {builder.config.image_size} px images but "
            f"--image_size is {args.image_size}: pass --image_size {builder.config.image_size} (or build the corpus at "
            f"{args.image_size} px)."
        )
    with accelerator.main_process_first():  # one process builds, the others read the finished (atomic) build
        builder.download_and_prepare()
    train, val = builder.as_dataset("train"), builder.as_dataset("validation")
    if train.features["image"].decode is False:
        raise ValueError("The corpus's image column must decode to images.")
    source = CorpusPairs(train, args.seed)
    return source, CorpusPairs(val, args.seed + 1), source.sampler.num_rows


def to_model_input(images: torch.Tensor, processor: ComFaceImageProcessor) -> torch.Tensor:
    """[0, 1] images -> the normalisation the image processor applies at inference."""
    mean = torch.tensor(processor.image_mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


class EpochBatches(torch.utils.data.Dataset):
    """Item k = this process's k-th micro-batch of an epoch: pairs, then the three augmented views (x~, x~', y~).

    Everything is a function of (seed, epoch, micro-step, process), so a DataLoader worker can produce batches ahead
    of the training loop and a resumed run produces the same ones.
    """

    def __init__(self, source, args: "PretrainArguments", epoch: int, s: float, micro_steps: range, rank: int,
                 world: int, device: torch.device):
        self.source, self.args, self.epoch, self.s = source, args, epoch, s
        self.micro_steps, self.rank, self.world, self.device = micro_steps, rank, world, device

    def __len__(self) -> int:
        return len(self.micro_steps)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        micro, b = self.micro_steps[k], self.args.per_device_batch_size
        batch = self.source.batch(self.epoch, (micro * self.world + self.rank) * b, b, self.s)
        x, y = batch.pop("x").to(self.device), batch.pop("y").to(self.device)
        with stage("augment"):
            views = [augment_batch(img, step_generator(self.args.seed, self.epoch, micro, self.rank, v))
                     for v, img in enumerate((x, x, y))]
        return {"x1": views[0], "x2": views[1], "y": views[2], "micro": micro, **batch}


def epoch_loader(source, args, epoch: int, s: float, first_micro: int, micro_per_epoch: int, accelerator):
    """Batches of one epoch; on a CPU a worker renders and augments the next batches while the model trains."""
    workers = args.num_workers
    if accelerator.device.type != "cpu" and isinstance(source, StreamingPairs):
        workers = 0  # the generator renders on the training device itself
    device = accelerator.device if workers == 0 else torch.device("cpu")
    dataset = EpochBatches(source, args, epoch, s, range(first_micro, micro_per_epoch), accelerator.process_index,
                           accelerator.num_processes, device)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       prefetch_factor=2 if workers else None, worker_init_fn=_single_thread)


def _single_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker shares the cores with training; forked OpenMP pools can also hang


# ----------------------------------------------------------------------------------------------------------------
# Validation on held-out identities
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model, val_source, args, accelerator, processor, s_max: float) -> dict[str, float]:
    """Pearson and MAE of d against |dalpha| (fixed pairs, all ranges up to S_max) and top-1 retrieval of the
    positive view among all second views (inter-personal branch)."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    if isinstance(unwrapped, FaceCycleModel):
        return validate_facecycle(unwrapped, val_source, args, accelerator, processor, s_max)
    rank, world = accelerator.process_index, accelerator.num_processes
    chunk = max(1, args.per_device_batch_size)
    d_all, t_all, z1_all, z2_all = [], [], [], []
    num_pairs = int(min(args.validation_pairs, val_source.max_pairs))
    for start in range(rank * chunk, num_pairs, world * chunk):
        count = min(chunk, num_pairs - start)
        batch = val_source.batch(epoch=0, start=start, count=count, s=s_max)  # epoch 0: the fixed validation pairs
        x, y = batch["x"].to(accelerator.device), batch["y"].to(accelerator.device)
        x1 = augment_batch(x, step_generator(args.seed, -1, start, 0, 0))
        x2 = augment_batch(x, step_generator(args.seed, -1, start, 0, 1))
        with accelerator.autocast():
            # d on the clean images (what a user compares); retrieval between two augmented views of x.
            distance = unwrapped.compare(to_model_input(x, processor), to_model_input(y, processor))
            out = unwrapped(to_model_input(x1, processor), to_model_input(x2, processor))
        d_all.append(distance.float())
        t_all.append((batch["alpha_y"] - batch["alpha_x"]).abs().to(accelerator.device))
        z1_all.append(torch.nn.functional.normalize(out.projections_x1.float(), dim=1))
        z2_all.append(torch.nn.functional.normalize(out.projections_x2.float(), dim=1))
    d = accelerator.gather_for_metrics(torch.cat(d_all)).cpu().numpy()
    t = accelerator.gather_for_metrics(torch.cat(t_all)).cpu().numpy()
    z1 = accelerator.gather_for_metrics(torch.cat(z1_all))
    z2 = accelerator.gather_for_metrics(torch.cat(z2_all))
    retrieval = (z1 @ z2.t()).argmax(dim=1).eq(torch.arange(len(z1), device=z1.device)).float().mean().item()
    pearson = float(pearsonr(d, t)[0]) if np.std(d) > 0 else 0.0
    model.train()
    return {"val_pearson": pearson, "val_mae": float(np.abs(d - t).mean()), "val_retrieval_top1": retrieval}


@torch.no_grad()
def validate_facecycle(model, val_source, args, accelerator, processor, s_max: float) -> dict[str, float]:
    """FaceCycle has no d: the validation loss and the re-expression error on held-out identities."""
    rank, world = accelerator.process_index, accelerator.num_processes
    chunk = max(1, args.per_device_batch_size)
    losses, errors = [], []
    num_pairs = int(min(args.validation_pairs, val_source.max_pairs))
    for start in range(rank * chunk, num_pairs, world * chunk):
        batch = val_source.batch(epoch=0, start=start, count=min(chunk, num_pairs - start), s=s_max)
        x = to_model_input(batch["x"].to(accelerator.device), processor)
        y = to_model_input(batch["y"].to(accelerator.device), processor)
        with accelerator.autocast():
            out = model(x, y)
        losses.append(out.loss.float().reshape(1))
        errors.append((out.reconstruction.float() - x).abs().mean().reshape(1))
    model.train()
    return {"val_loss": accelerator.gather_for_metrics(torch.cat(losses)).mean().item(),
            "val_reconstruction_l1": accelerator.gather_for_metrics(torch.cat(errors)).mean().item()}


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> Path:
    args = parse_arguments(argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,
        # A term whose weight is 0 leaves its head without gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=args.learning != "both" or args.method == "facecycle")],
    )
    world = accelerator.num_processes
    check_process_count(world)
    if accelerator.device.type == "cpu":
        # `accelerate launch` exports OMP_NUM_THREADS=1 (right for one process per GPU); on a CPU the processes of
        # this machine share its cores instead.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(args.cpu_threads or max(1, (os.cpu_count() or 1) // local))
    if args.per_device_batch_size is None:
        args.per_device_batch_size = max(1, args.global_batch_size // world)
    accumulation, rest = divmod(args.global_batch_size, args.per_device_batch_size * world)
    if rest or accumulation < 1:
        raise ValueError(
            f"global_batch_size={args.global_batch_size} is not a multiple of per_device_batch_size="
            f"{args.per_device_batch_size} x {world} processes; choose sizes that divide."
        )
    accelerator.gradient_accumulation_steps = accumulation
    set_seed(args.seed)

    resume_dir = None
    if args.resume_from_checkpoint:
        resume_dir = find_checkpoint(output_dir, args.resume_from_checkpoint)  # clear error, nothing overwritten
    elif list_checkpoints(output_dir):
        if not args.overwrite_output_dir:
            raise FileExistsError(
                f"{output_dir} holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint latest, "
                "start afresh with --overwrite_output_dir, or choose another --output_dir."
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for old in list_checkpoints(output_dir):
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    # Data
    train_source, val_source, samples_per_epoch = build_data(args, accelerator)
    s_max = train_source.sampler.s_max
    stages = tuple(float(e) for e in args.curriculum_stage_epochs.split(","))
    curriculum = Curriculum(s_max=s_max, num_epochs=args.num_epochs, stage_epochs=stages,
                            enabled=not args.no_curriculum)
    train_source.sampler.check_range(curriculum.range_at(args.num_epochs))
    micro_per_epoch = samples_per_epoch // (args.per_device_batch_size * world)
    steps_per_epoch = micro_per_epoch // accumulation
    if steps_per_epoch < 1:
        raise ValueError(f"{samples_per_epoch} samples per epoch are fewer than one global batch of {args.global_batch_size}.")
    micro_per_epoch = steps_per_epoch * accumulation
    total_steps = steps_per_epoch * args.num_epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)

    # Model, optimiser, schedule (Adam, lr halved at epoch 10 of 12, scaled to the run)
    config = ComFaceConfig(
        backbone=args.backbone, image_size=args.image_size, projection_hidden_size=args.projection_hidden_size,
        projection_dim=args.projection_dim, temperature=args.temperature,
        inter_loss_weight=0.0 if args.learning == "intra" else 1.0,
        intra_loss_weight=0.0 if args.learning == "inter" else 1.0, intra_target=args.intra_target,
    )
    if args.method == "facecycle":
        # FaceCycle learns from frames of one person without labels: x and y of a pair are two such frames.
        model = FaceCycleModel(FaceCycleConfig(image_size=args.image_size, base_channels=args.facecycle_base_channels))
    else:
        model = ComFaceModel(config)
    processor = ComFaceImageProcessor(crop_size=args.image_size)
    if isinstance(train_source, GeneratorPairs):  # which generators made the training data, in config.json
        model.config.pretraining_generators = train_source.generator.describe()
    if args.sync_batchnorm and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    decay_step = round(steps_per_epoch * args.num_epochs * args.lr_decay_epoch / 12)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < decay_step else 0.5)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if args.torch_compile:
        model = torch.compile(model)

    # Resume: model, optimiser, scheduler and RNG from accelerate; epoch and step (the curriculum and sampler
    # position: pairs and views are functions of them) from trainer_state.json.
    global_step, start_epoch, start_micro = 0, 1, 0
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        state = json.loads((resume_dir / "trainer_state.json").read_text())
        global_step, start_epoch, start_micro = state["global_step"], state["epoch"], state["micro_step"]
        accelerator.print(f"Resumed from {resume_dir} at epoch {start_epoch}, step {global_step}.")

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    tracker_config = {k: v for k, v in dataclasses.asdict(args).items() if isinstance(v, (int, float, str, bool))}
    if args.report_to != "none":
        accelerator.init_trackers("comface", config=tracker_config)

    def save_checkpoint(epoch: int, micro_step: int) -> None:
        final = output_dir / f"checkpoint-{global_step:07d}"
        with atomic_directory(final, accelerator) as tmp:
            accelerator.save_state(str(tmp))
            if accelerator.is_main_process:
                (tmp / "trainer_state.json").write_text(json.dumps(
                    {"global_step": global_step, "epoch": epoch, "micro_step": micro_step,
                     "s": curriculum.range_at(epoch), "args": tracker_config}, indent=2))
        if accelerator.is_main_process:
            prune_checkpoints(output_dir, args.checkpoints_total_limit)

    debug = {"pairs": [], "rank": accelerator.process_index}
    nan_step = int(os.environ.get("COMFACE_DEBUG_NAN_AT_STEP", "-1"))  # tests: exercise the NaN stop
    # --profile_steps: one warm-up step, then N recorded steps, all inside the first epoch (validation renders too).
    profiling = contextlib.ExitStack()
    profiler = None
    if args.profile_steps:
        left = min(steps_per_epoch - start_micro // accumulation, total_steps - global_step)
        if args.profile_steps + 1 > left:
            raise ValueError(f"--profile_steps {args.profile_steps} needs {args.profile_steps + 1} steps before the "
                             f"first validation of this run, and it has {left}; lower --profile_steps or raise "
                             "--samples_per_epoch.")
        activities = ["cpu", "cuda"] if accelerator.device.type == "cuda" else ["cpu"]

        def on_trace_ready(prof) -> None:
            if accelerator.is_main_process:
                path = write_profile(prof, output_dir / "profile", args.profile_steps, accelerator.device,
                                     f"preset {args.preset}, {args.backbone} at {args.image_size} px, global batch "
                                     f"{args.global_batch_size}, photographic {args.photographic}")
                accelerator.print(f"Profile of {args.profile_steps} steps: {path}\n{path.read_text()}")

        profiler = profiling.enter_context(accelerator.profile(ProfileKwargs(
            activities=activities, schedule_option={"wait": 0, "warmup": 1, "active": args.profile_steps, "repeat": 1},
            on_trace_ready=on_trace_ready)))
    progress = tqdm(total=total_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                    desc="pretrain", unit="step")
    metrics: dict[str, float] = {}
    history: list[dict] = []  # every logged step, kept in metrics.json
    data_time = compute_time = 0.0
    pairs_seen, window_start = 0, time.perf_counter()
    model.train()
    done = global_step >= total_steps
    for epoch in range(start_epoch, args.num_epochs + 1):
        if done:
            break
        s = curriculum.range_at(epoch)
        first_micro = start_micro if epoch == start_epoch else 0
        batches = iter(epoch_loader(train_source, args, epoch, s, first_micro, micro_per_epoch, accelerator))
        t0 = time.perf_counter()
        for batch in batches:
            micro = batch["micro"]
            with stage("to_model_input"):
                x1, x2, yv = (to_model_input(batch[k].to(accelerator.device), processor) for k in ("x1", "x2", "y"))
                if args.channels_last:
                    x1, x2, yv = (v.contiguous(memory_format=torch.channels_last) for v in (x1, x2, yv))
            t1 = time.perf_counter()
            if args.debug_dump_dir and len(debug["pairs"]) < 4:
                debug["pairs"].append([batch["identity"].tolist(), batch["alpha_x"].tolist(), batch["alpha_y"].tolist()])
            with accelerator.accumulate(model), stage("model_step"):
                with accelerator.autocast():
                    if args.method == "facecycle":
                        out = model(x1, yv)
                    else:
                        out = model(
                            x1, None if args.learning == "intra" else x2, None if args.learning == "inter" else yv,
                            alpha_x=None if args.learning == "inter" else batch["alpha_x"].to(accelerator.device),
                            alpha_y=None if args.learning == "inter" else batch["alpha_y"].to(accelerator.device),
                        )
                loss = out.loss
                if global_step == nan_step:
                    loss = loss * float("nan")
                # Every process must stop together: decide on the gathered losses.
                losses = accelerator.gather(loss.detach().float().reshape(1))
                if not torch.isfinite(losses).all():
                    last = find_checkpoint(output_dir, "latest", missing_ok=True)
                    raise FloatingPointError(
                        f"The loss became NaN/inf at step {global_step} (epoch {epoch}); the weights were not "
                        f"updated. Last good checkpoint: {last or 'none yet'}. Lower --learning_rate or use "
                        "--mixed_precision bf16 instead of fp16, then resume with --resume_from_checkpoint latest."
                    )
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            data_time += t1 - t0  # waiting for the next batch (rendering + augmentation not hidden by the worker)
            compute_time += t2 - t1
            t0 = t2
            pairs_seen += args.per_device_batch_size * world
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            if profiler is not None:
                profiler.step()
            progress.update(1)
            if global_step % args.logging_steps == 0 or global_step == total_steps:
                elapsed = time.perf_counter() - window_start
                log = {"loss": losses.mean().item(), "lr": scheduler.get_last_lr()[0], "S": s, "epoch": epoch,
                       "pairs_per_second": pairs_seen / elapsed, "images_per_second": 3 * pairs_seen / elapsed,
                       "data_wait_share": data_time / max(data_time + compute_time, 1e-9),
                       "seconds_per_step": elapsed * args.global_batch_size / pairs_seen,
                       "compute_seconds_per_step": compute_time * args.global_batch_size / pairs_seen}
                for name in LOSS_TERMS[args.method]:
                    term = getattr(out, name)
                    if term is not None:
                        log[name] = accelerator.gather(term.detach().float().reshape(1)).mean().item()
                accelerator.log(log, step=global_step)
                history.append({"step": global_step, **log})
                progress.set_postfix(loss=f"{log['loss']:.3f}", S=f"{s:.2f}", pairs_s=f"{log['pairs_per_second']:.0f}")
                metrics.update({k: log[k] for k in ("pairs_per_second", "data_wait_share")})
                pairs_seen, data_time, compute_time, window_start = 0, 0.0, 0.0, time.perf_counter()
            # (The end of an epoch has its own checkpoint, after validation.)
            if args.checkpointing_steps and global_step % args.checkpointing_steps == 0 and micro + 1 < micro_per_epoch:
                save_checkpoint(epoch, micro + 1)
            if global_step >= total_steps:
                done = True
                break
        if done and micro + 1 < micro_per_epoch:
            break
        # End of epoch: validate, checkpoint at the start of the next epoch.
        sync_buffers(model, accelerator)
        metrics.update(validate(model, val_source, args, accelerator, processor, s_max))
        accelerator.log({k: v for k, v in metrics.items() if k.startswith("val_")}, step=global_step)
        accelerator.print(f"epoch {epoch}: S={s:.2f} " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("val_")))
        save_checkpoint(epoch + 1, 0)
    progress.close()
    profiling.close()
    sync_buffers(model, accelerator)
    if not any(k.startswith("val_") for k in metrics):
        metrics.update(validate(model, val_source, args, accelerator, processor, s_max))

    # Save: a from_pretrained folder (safetensors, config, processor, model card), written atomically.
    final_dir = output_dir / "model"
    unwrapped = accelerator.unwrap_model(model)
    if args.sync_batchnorm and world > 1:
        unwrapped = _revert_sync_batchnorm(unwrapped)
    with atomic_directory(final_dir, accelerator, replace=True) as tmp:
        if accelerator.is_main_process:
            if isinstance(unwrapped, ComFaceModel):
                unwrapped.save_pretrained(tmp, model_card=model_card_values(args, metrics, global_step, world,
                                                                            stream_generator=getattr(train_source, "generator", None)))
            else:
                unwrapped.save_pretrained(tmp)
            processor.save_pretrained(tmp)
    if accelerator.is_main_process and isinstance(unwrapped, ComFaceModel):  # same-person threshold + pipeline (issue 15)
        from comface_hf.monitoring.calibration import finish_model_folder
        finish_model_folder(str(final_dir), generator_seed=args.generator_seed, renderer_version=args.renderer_version,
                            num_identities=max(8, min(200, args.num_identities)))
    # --- probe validation (issue 24; comface_hf/pretraining/validation.py) ---
    if args.validation == "probe" and accelerator.is_main_process and isinstance(unwrapped, ComFaceModel):
        from comface_hf.pretraining.validation import trainer_probe_validation

        metrics.update(trainer_probe_validation(unwrapped, args.image_size, processor.image_mean, processor.image_std))
    # --- end probe validation ---
    if args.debug_dump_dir:
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in unwrapped.state_dict().values())).hexdigest()
        Path(args.debug_dump_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.debug_dump_dir) / f"rank{accelerator.process_index}.json").write_text(
            json.dumps({**debug, "weights_sha256": digest, "world_size": world, **metrics}))
    accelerator.end_training()
    if accelerator.is_main_process:
        (output_dir / "metrics.json").write_text(
            json.dumps({"global_step": global_step, **metrics, "history": history}, indent=2))
        if args.push_to_hub:
            from comface_hf.hub import push_folder_to_hub

            # The saved folder itself (weights, processor, card, same-person calibration, pipeline and remote code);
            # the model's and processor's own push_to_hub would re-save only their part into a temporary folder.
            repo = push_folder_to_hub(final_dir, args.hub_model_id or final_dir.resolve().parent.name)
            print(f"Pushed {final_dir.resolve()} to https://huggingface.co/{repo}")
        name = type(unwrapped).__name__
        lines = [
            "Validation on held-out identities: "
            + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("val_")),
            *(["Probe validation (ridge probe of f on measured changes of held-out DCGAN faces, grouped CV; "
               "README): " + ", ".join(f"{k[6:-8]} r={v:.3f}" for k, v in metrics.items()
                                      if k.startswith("probe_") and k.endswith("_pearson"))]
              if "probe_seconds" in metrics else []),  # probe validation (issue 24)
            f"Model saved to {final_dir.resolve()}",
            "Load it with:",
            f"  from comface_hf import {name}",
            f"  model = {name}.from_pretrained('{final_dir.resolve()}')",
        ]
        if isinstance(unwrapped, ComFaceModel):
            lines += ["  from comface_hf import ComFaceForChangeEstimation  # transfer f and l to a downstream task",
                      f"  change_model = ComFaceForChangeEstimation.from_pretrained('{final_dir.resolve()}')"]
        print("\n" + "\n".join(lines))
    return final_dir


def sync_buffers(model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Copy the main process's buffers (BatchNorm running statistics) to all processes.

    DDP broadcasts buffers at the start of each forward, so after the last training step every process holds
    statistics of its own last batch; validation and the saved model use the same ones everywhere.
    """
    if accelerator.num_processes > 1:
        for buffer in accelerator.unwrap_model(model).buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def check_process_count(world: int) -> None:
    """A launcher that started several processes which Accelerate treats as one would train N unsynchronised copies."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and world == 1:
        raise RuntimeError(
            f"{launched} processes were launched but Accelerate sees a single process (no GPU here, so --multi_gpu does "
            "not apply). On CPUs launch with `accelerate launch --cpu --multi_gpu --num_processes N` or set "
            "ACCELERATE_USE_CPU=true."
        )


def _revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """SyncBatchNorm -> BatchNorm2d so that the saved model loads on one device."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.SyncBatchNorm):
            bn = torch.nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            _revert_sync_batchnorm(child)
    return module


def model_card_values(args: PretrainArguments, metrics: dict, steps: int, world: int, stream_generator=None) -> dict:
    data = (
        f"Rendered on the fly by the embedded parametric face generator (`comface_hf.synthesis`, seed "
        f"{args.generator_seed}, renderer {args.renderer_version}"
        f"{'' if args.craniofacial_growth else ' without craniofacial growth'}, photographic capture strength "
        f"{args.photographic}): "
        f"{args.num_identities} identities split 90/10 by identity, attributes: "
        f"{args.attributes}, alpha in [{args.alpha_min}, {args.alpha_max}] step {args.alpha_step}, {args.image_size} px."
        if args.data_source == "stream"
        else f"The `comface_synthetic` corpus, configuration `{args.corpus_config}`, train split (90% of identities)."
    )
    if uses_generator_specs(args) and stream_generator is not None:
        data = stream_card_text(args, stream_generator)
    procedure = (
        f"`training/pretrain.py --preset {args.preset}`: {args.learning} learning, intra target {args.intra_target}, "
        f"curriculum {'off' if args.no_curriculum else 'on (Eq. 2, S_max = corpus span, stages ' + args.curriculum_stage_epochs + ' of 12 epochs, scaled)'}; "
        f"{args.num_epochs} epochs, {steps} optimiser steps, global batch {args.global_batch_size} on {world} process(es); "
        f"Adam lr {args.learning_rate} halved at epoch {args.lr_decay_epoch} of 12 (scaled); seed {args.seed}."
    )
    validation = {k: v for k, v in metrics.items() if k.startswith("val_")}
    return {"training_data": data, "training_procedure": procedure, "validation": validation,
            "model_id": args.hub_model_id or f"comface-{args.preset}"}


if __name__ == "__main__":
    run_cli(main)

"""Pretrain ComFace (Sec. 3.2-3.3, 4.1) with Accelerate, on one CPU, one GPU or many.

    accelerate launch training/pretrain.py                       # the embedded default (small, CPU, minutes)
    accelerate launch training/pretrain.py --preset paper        # ResNet50, 224 px, 35 M images, 12 epochs, batch 1024
    accelerate launch --multi_gpu --num_processes 8 training/pretrain.py --preset paper --mixed_precision bf16
    accelerate launch training/pretrain.py --resume_from_checkpoint latest
    accelerate launch training/pretrain.py --learning intra      # Table 7 (b); also inter, --intra_target signed,
                                                                  # --no_curriculum

Read top to bottom: arguments and presets -> data (pairs from the generator or a built corpus) -> model, optimiser,
schedule -> resume -> training loop (curriculum, augmentation, losses, checkpoints) -> validation -> save.

The library parts live in :mod:`comface_hf.pretraining`: ``presets`` (PRESETS, EMBEDDED_ATTRIBUTES), ``generators``
(the run's GeneratorSpecs), ``sources`` (pair sources, augmented epoch batches, to_model_input), ``methods`` (ComFace
and FaceCycle: model, step, validation, saving) and ``distributed``; ``pairs`` and ``augment`` below them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProfileKwargs, set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from comface_hf import ComFaceImageProcessor  # noqa: E402
from comface_hf.errors import run_cli  # noqa: E402
from comface_hf.pretraining.augment import augmentation_config  # noqa: E402
from comface_hf.pretraining.distributed import (  # noqa: E402
    check_process_count,
    revert_sync_batchnorm,
    sync_buffers,
)
from comface_hf.pretraining.generators import run_generator_specs  # noqa: E402
from comface_hf.pretraining.methods import LOSS_TERMS, METHODS, get_method, validate  # noqa: E402, F401
from comface_hf.pretraining.pairs import Curriculum  # noqa: E402

# EMBEDDED_ATTRIBUTES(_R1), DCGAN_DIRECTIONS, to_model_input and _attribute_indices were defined here before the
# library code moved to comface_hf.pretraining; tests and benchmarks still import them from this script.
from comface_hf.pretraining.presets import (  # noqa: E402, F401
    DCGAN_DIRECTIONS,
    EMBEDDED_ATTRIBUTES,
    EMBEDDED_ATTRIBUTES_R1,
    PRESETS,
)
from comface_hf.pretraining.profiling import stage, write_profile  # noqa: E402
from comface_hf.pretraining.sources import (  # noqa: E402, F401
    GeneratorPairs,
    _attribute_indices,
    build_data,
    epoch_loader,
    to_model_input,
)
from comface_hf.synthesis import DEFAULT_RENDERER_VERSION  # noqa: E402
from comface_hf.synthesis.spec import specs_to_config  # noqa: E402
from training.checkpointing import (  # noqa: E402
    atomic_directory,
    find_checkpoint,
    hold_output_dir,
    list_checkpoints,
    prune_checkpoints,
    release_output_dir,
)


# ----------------------------------------------------------------------------------------------------------------
# Arguments and presets
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class PretrainArguments:
    preset: str = field(default="embedded", metadata={"help": "embedded (default, CPU minutes), dcgan, dcgan-mix "
                        "(`make pretrain`), cpu-hour or paper."})
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
    shared_capture_p: float = field(default=0.0, metadata={"help": "Probability that a pair's two images share one "
                                    "capture (same camera and session, e.g. video frames); 0: each image its own photo."})
    pair_geometry: str = field(default="independent", metadata={"help": "independent (the paper: y cropped and flipped "
                               "on its own) or shared (y cropped and flipped as the view it is compared with, as real "
                               "pairs are aligned into one face frame)."})
    augmentation: str = field(default="half", metadata={"help": "Strength of the SimCLR views: half (default: crops "
                              "from 80% of the area, jitter 0.2) or simclr (ImageNet SimCLR's: crops from 8%, jitter 0.4)."})
    crop_scale_min: Optional[float] = field(default=None, metadata={"help": "Smallest crop's share of the image area "
                                            "(default: the --augmentation's)."})
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
    warps: str = field(default="", metadata={"help": "latent-edit: landmark-driven warp attributes added to the "
                       "directions (growth, adiposity, smile_warp; comma-separated). Needs the generator's "
                       "face_template.json beside its boundaries (comface directions writes it)."})
    canonical_frame: bool = field(default=False, metadata={"help": "latent-edit: resample every generated face into the "
                                  "canonical face frame real photos are aligned into (placed by face_template.json)."})
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
                               "trace; comface_hf/pretraining/profiling.py). 0: off."})
    validation: str = field(default="synthetic", metadata={"help": "synthetic (val_pearson etc. on held-out generated "
                            "identities, every epoch) or probe (also, after the final save, the probe validation: a "
                            "ridge probe of f's features on measured changes of held-out DCGAN faces)."})


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
                          ("data_source", ("stream", "corpus")), ("method", tuple(METHODS))):
        if getattr(args, name) not in allowed:
            parser.error(f"--{name} must be one of {', '.join(allowed)}, got {getattr(args, name)!r}")
    if args.validation not in ("synthetic", "probe"):  # probe validation (issue 24)
        parser.error(f"--validation must be synthetic or probe, got {args.validation!r}")
    if args.validation == "probe" and not METHODS[args.method].has_probe_validation:
        parser.error(f"--validation probe probes ComFace's backbone f; --method {args.method} has none: use "
                     "--validation synthetic")
    if args.pair_geometry not in ("independent", "shared"):
        parser.error(f"--pair_geometry must be independent or shared, got {args.pair_geometry!r}")
    try:  # the names and bounds live with the augmentations themselves
        augmentation_config(args.augmentation, args.crop_scale_min)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0.0 <= args.shared_capture_p <= 1.0:
        parser.error(f"--shared_capture_p is a probability in [0, 1], got {args.shared_capture_p}")
    if args.profile_steps < 0:
        parser.error(f"--profile_steps must be >= 0 (0: no profile), got {args.profile_steps}")
    if not args.craniofacial_growth and args.renderer_version == "1.1.0":
        parser.error("--craniofacial_growth False needs renderer 2 (renderer 1.1.0 has no growth to switch off); "
                     "drop it or pick --renderer_version 2.1.0")
    return args


def _explicit_flags(argv: list[str]) -> set[str]:
    return {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> Path:
    args = parse_arguments(argv)
    method = get_method(args)  # ComFace or FaceCycle: the model, a step's forward, validation, what is saved
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,
        # Parameters without gradients in a step (a head whose loss weight is 0) must be declared to DDP.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=method.find_unused_parameters)],
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

    # One run per output folder: a second one would delete or race this run's checkpoints (held until exit).
    if accelerator.is_main_process:
        hold_output_dir(output_dir)
    accelerator.wait_for_everyone()

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
    model = method.build_model()
    processor = ComFaceImageProcessor(crop_size=args.image_size)
    if args.data_source == "stream":  # what rendered the training data, in config.json (comface calibrate reads it)
        model.config.generator_spec = specs_to_config(run_generator_specs(args))
    if isinstance(train_source, GeneratorPairs):
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
                    out = method.forward(model, x1, x2, yv, batch, accelerator.device)
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
                for name in method.loss_terms:
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
        metrics.update(validate(method, model, val_source, accelerator, processor, s_max))
        accelerator.log({k: v for k, v in metrics.items() if k.startswith("val_")}, step=global_step)
        accelerator.print(f"epoch {epoch}: S={s:.2f} " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("val_")))
        save_checkpoint(epoch + 1, 0)
    progress.close()
    profiling.close()
    sync_buffers(model, accelerator)
    if not any(k.startswith("val_") for k in metrics):
        metrics.update(validate(method, model, val_source, accelerator, processor, s_max))

    # Save: a from_pretrained folder (safetensors, config, processor, model card), written atomically.
    final_dir = output_dir / "model"
    unwrapped = accelerator.unwrap_model(model)
    if args.sync_batchnorm and world > 1:
        unwrapped = revert_sync_batchnorm(unwrapped)
    with atomic_directory(final_dir, accelerator, replace=True) as tmp:
        if accelerator.is_main_process:
            method.save(unwrapped, tmp, metrics, global_step, world, getattr(train_source, "generator", None))
            processor.save_pretrained(tmp)
    if accelerator.is_main_process:
        method.finish(final_dir)  # ComFace: same-person threshold + pipeline files (issue 15)
        metrics.update(method.final_validation(unwrapped, processor))  # --validation probe (issue 24)
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
        lines = [
            "Validation on held-out identities: "
            + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("val_")),
            *(["Probe validation (ridge probe of f on measured changes of held-out DCGAN faces, grouped CV; "
               "README): " + ", ".join(f"{k[6:-8]} r={v:.3f}" for k, v in metrics.items()
                                      if k.startswith("probe_") and k.endswith("_pearson"))]
              if "probe_seconds" in metrics else []),  # probe validation (issue 24)
            f"Model saved to {final_dir.resolve()}",
            *method.load_hint(final_dir.resolve()),
        ]
        print("\n" + "\n".join(lines))
        release_output_dir(output_dir)
    return final_dir


if __name__ == "__main__":
    run_cli(main)

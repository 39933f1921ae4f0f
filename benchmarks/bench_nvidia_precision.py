"""Seconds per 32 images from NVIDIA's own StyleGAN2-ADA synthesis, before and after issue 25, for each precision.

    python -m benchmarks.bench_nvidia_precision [--device cpu] [--resolution 128] [--repeats 3]
        [--out results.json]

NVIDIA's network code is read from ``../shared/nvidia/stylegan2-ada-pytorch`` (tests/nvidia_fixture.py); the generator
is built with random weights by NVIDIA's ``construct_class_by_name`` in NVIDIA's FFHQ shape (z and w 512, 8 mapping
layers, the 4 highest resolutions in fp16 with conv_clamp 256) at a width this CPU can run, and pickled as NVIDIA's
training loop does. Same run, same machine, same latents (z-space edits of 32 identities):

* before: what ``LatentEditGenerator`` called until issue 25: ``G.synthesis(ws, noise_mode='const')`` for float32
  (NVIDIA's fp16 blocks then run in fp16 on a CPU), and the same under ``torch.autocast`` for bfloat16 / float16
  (NVIDIA's ``assert x.dtype == dtype`` stops it: recorded as the error);
* after: ``LatentEditGenerator.render`` with ``synthesis_dtype`` float32 (``force_fp32=True``), bfloat16 (per-layer
  autocast in float32 blocks) and float16 (NVIDIA's fp16 layers on CUDA; float32 on a CPU, with a warning).

Each figure is the median (and range) of ``--repeats`` timed calls after one warm-up call; the largest pixel difference
against the float32 "after" images says what each precision costs in pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from comface_hf.errors import ComFaceInputError
from comface_hf.synthesis.latent_edit import LatentEditGenerator
from comface_hf.synthesis.stylegan import load_nvidia_pickle
from tests.nvidia_fixture import INTERFACEGAN, STYLEGAN2_ADA, build_nvidia_pickle, require_shared

DTYPES = ("float32", "bfloat16", "float16")


def timed(fn, repeats: int, device: torch.device) -> tuple:
    out = fn()  # warm-up (and the images compared)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--channel_base", type=int, default=4096)
    parser.add_argument("--channel_max", type=int, default=128)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    require_shared()
    sys.path.append(str(STYLEGAN2_ADA))  # after this repository: its training/ package must win
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.pkl"
        build_nvidia_pickle(path, z_dim=512, w_dim=512, mapping_layers=8, img_resolution=args.resolution,
                            channel_base=args.channel_base, channel_max=args.channel_max, num_fp16_res=4)
        G = load_nvidia_pickle(path)
    ids = torch.arange(args.images)
    attrs = torch.zeros(args.images, dtype=torch.long)
    alphas = torch.linspace(-5, 5, args.images)
    boundaries = INTERFACEGAN / "stylegan2_ffhq_z"
    results = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "resolution": args.resolution,
               "channel_base": args.channel_base, "channel_max": args.channel_max, "images": args.images, "rows": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float16 on a CPU warns that it runs float32: recorded in the table instead
        after = {d: LatentEditGenerator(G, boundaries, attribute_names=["age"], latent_space="z", image_size=None,
                                        synthesis_dtype=d, device=device) for d in DTYPES}
    reference = None
    print(f"\n| StyleGAN2-ADA {args.resolution} px, {args.images} images | dtype | s per {args.images} images "
          "(median, range) | vs before float32 | max pixel diff vs after float32 | what runs |")
    print("|---|---|---|---|---|---|")
    rows = []
    for dtype in DTYPES:  # before
        autocast = None if dtype == "float32" else getattr(torch, dtype)

        def before():
            latents = after["float32"].latents(ids, attrs, alphas)  # the same mapping work as render's
            with torch.no_grad(), torch.autocast(device.type, dtype=autocast or torch.bfloat16,
                                                 enabled=autocast is not None):
                return (G.synthesis(latents, noise_mode="const").float().clamp(-1, 1) + 1) / 2
        try:
            images, times = timed(before, args.repeats if dtype == "float32" else 0, device)
            rows.append(("before", dtype, images, times, f"NVIDIA's fp16 blocks in fp16 on the {device.type}"))
        except (AssertionError, RuntimeError) as err:
            rows.append(("before", dtype, None, [], f"{type(err).__name__} {str(err)[:80] or '(bare)'}"))
    for dtype in DTYPES:  # after
        gen = after[dtype]
        try:
            images, times = timed(lambda: gen.render(ids, attrs, alphas), args.repeats, device)
        except ComFaceInputError as err:  # bfloat16 where NVIDIA's CUDA plugins compiled: no bfloat16 kernels
            rows.append(("after", dtype, None, [], str(err)[:160]))
            continue
        rows.append(("after", dtype, images, times, gen.synthesis_precision))
        if dtype == "float32":
            reference = images
    base = statistics.median(rows[0][3]) if rows[0][3] else None
    for when, dtype, images, times, what in rows:
        med = statistics.median(times) if times else None
        diff = float((images - reference).abs().max()) if images is not None else None
        rng = f"{med:.2f} ({min(times):.2f}-{max(times):.2f})" if times else "crash"
        print(f"| {when} | {dtype} | {rng} | {f'{base / med:.2f}x' if med and base else '-'} | "
              f"{f'{diff:.4f}' if diff is not None else '-'} | {what} |")
        results["rows"].append({"when": when, "dtype": dtype, "seconds": times, "max_pixel_diff": diff, "what": what})
    print(f"load average after: {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

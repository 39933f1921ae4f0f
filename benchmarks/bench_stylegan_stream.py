"""Streaming from a StyleGAN-shaped generator: generator images/s and trainer pairs/s, measured in one run.

    python -m benchmarks.bench_stylegan_stream [--device cpu] [--steps 12] [--out results.json]

Uses the test network (tests/stylegan_fixture.py: mapping MLP, modulated 3x3 convs, toRGB skips) at a size this CPU
can run, so the figures are about the streaming machinery, not about a real StyleGAN's cost (see
benchmarks/estimate_gpu_cost.py for that, on paper). Same run, same machine:

1. generator images/s for pairs of a batch: the naive way (each identity's w recomputed, x and y in two synthesis
   calls) against the streamed way (w cached, x and y in one call), float32 and bfloat16 synthesis, and the embedded
   renderer at the same output size as the baseline;
2. trainer pairs/s and data-wait share (training/pretrain.py in-process, ResNet18 at 64 px) with the StyleGAN-shaped
   generator and with the embedded renderer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from comface_hf.synthesis import EmbeddedFaceGenerator
from comface_hf.synthesis.latent_edit import LatentEditGenerator
from tests.stylegan_fixture import make_generator, unit_directions

NET = {"img_resolution": 128, "channels": 16, "z_dim": 64, "w_dim": 64}
ATTRIBUTES = ["weight", "age", "smile"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pair_batches(batch: int, count: int, num_identities: int = 225_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        ids = torch.from_numpy(rng.integers(0, num_identities, batch))
        attrs = torch.from_numpy(rng.integers(0, len(ATTRIBUTES), batch))
        ax = torch.from_numpy(rng.integers(-50, 51, batch) / 10).float()
        ay = torch.from_numpy(rng.integers(-50, 51, batch) / 10).float()
        yield ids, attrs, ax, ay


def generator_rate(gen, batch: int, iters: int, one_call: bool, repeats: int = 3) -> list[float]:
    """Images/s rendering x and y of `batch` pairs per iteration (2 * batch images)."""
    device = torch.device(getattr(gen, "device", "cpu"))
    warm = list(pair_batches(batch, 1, seed=99))[0]
    gen.render(torch.cat([warm[0], warm[0]]), torch.cat([warm[1], warm[1]]), torch.cat([warm[2], warm[3]]))
    rates = []
    for r in range(repeats):
        batches = list(pair_batches(batch, iters, seed=r))
        _sync(device)
        t0 = time.perf_counter()
        for ids, attrs, ax, ay in batches:
            if one_call:
                gen.render(torch.cat([ids, ids]), torch.cat([attrs, attrs]), torch.cat([ax, ay]))
            else:
                gen.render(ids, attrs, ax)
                gen.render(ids, attrs, ay)
        _sync(device)
        rates.append(2 * batch * iters / (time.perf_counter() - t0))
    return rates


def trainer_rate(generator: str, steps: int, device: str, tmp: Path) -> dict:
    from training.pretrain import main

    out = tmp / f"train-{generator}"
    args = ["--backbone", "resnet18", "--image_size", "64", "--global_batch_size", "32", "--samples_per_epoch",
            str(32 * steps), "--num_epochs", "1", "--validation_pairs", "32", "--num_workers", "0", "--report_to",
            "none", "--logging_steps", str(steps), "--output_dir", str(out), "--attributes", ",".join(ATTRIBUTES)]
    if generator == "stylegan":
        dirs = tmp / "dirs"
        dirs.mkdir(exist_ok=True)
        for name, v in unit_directions(ATTRIBUTES, w_dim=NET["w_dim"]).items():
            np.save(dirs / f"{name}.npy", v)
        args += ["--generator", "latent-edit", "--generator_loader", "tests.stylegan_fixture:make_generator",
                 "--trust_loader_code", "--generator_kwargs", json.dumps(NET), "--directions_dir", str(dirs),
                 "--latent_space", "w"]
    if device == "cuda":
        args += ["--mixed_precision", "bf16"]
    main(args)
    last = json.loads((out / "metrics.json").read_text())["history"][-1]
    return {k: last[k] for k in ("pairs_per_second", "data_wait_share", "seconds_per_step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32, help="pairs per render")
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="trainer steps per measured run")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    dirs = unit_directions(ATTRIBUTES, w_dim=NET["w_dim"])
    G = make_generator(**NET)
    variants = {
        "stylegan-shaped, w recomputed, x and y in 2 calls (naive)":
            (LatentEditGenerator(G, dirs, image_size=64, device=device, identity_cache_size=0), False),
        "stylegan-shaped, w cached, x and y in 1 call (streamed, fp32)":
            (LatentEditGenerator(G, dirs, image_size=64, device=device), True),
        "stylegan-shaped, w cached, 1 call, bf16 synthesis":
            (LatentEditGenerator(G, dirs, image_size=64, device=device, synthesis_dtype="bfloat16"), True),
        "embedded renderer, 1 call (baseline)": (EmbeddedFaceGenerator(image_size=64, device=device), True),
    }
    results = {"device": str(device), "threads": torch.get_num_threads(), "net": NET, "generator": {}, "trainer": {}}
    naive = None
    print(f"\n| generator ({NET['img_resolution']} px net, output 64 px, {args.batch} pairs/batch) | images/s (median, range) | vs naive |")
    print("|---|---|---|")
    for name, (gen, one_call) in variants.items():
        rates = generator_rate(gen, args.batch, args.iters, one_call)
        med = statistics.median(rates)
        naive = naive or med
        results["generator"][name] = rates
        print(f"| {name} | {med:.1f} ({min(rates):.1f}-{max(rates):.1f}) | {med / naive:.2f}x |")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n| trainer (ResNet18, 64 px, batch 32) | pairs/s | data wait share | s/step |")
        print("|---|---|---|---|")
        for generator in ("stylegan", "embedded"):
            r = trainer_rate(generator, args.steps, device.type, Path(tmp))
            results["trainer"][generator] = r
            print(f"| {generator} | {r['pairs_per_second']:.1f} | {r['data_wait_share']:.2f} | {r['seconds_per_step']:.2f} |")
    print(f"load average after: {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Trainer overhead and data wait, measured in one run.

    python -m benchmarks.bench_pretrain [--backbone resnet18 --image_size 64 --batch 64 --steps 30]

1. `training/pretrain.py` (under `accelerate launch`, streaming pairs, one process, `--num_workers` batch producers)
   runs `--steps` optimiser steps;
   its logged steady-state `seconds_per_step`, `compute_seconds_per_step` and `data_wait_share` are read from
   metrics.json (the first logging window, which holds start-up, is left out).
2. A bare PyTorch loop does the same forward and backward (ComFaceModel, Adam) on one fixed batch of the same
   size, in this process, right after.
Overhead = trainer compute time per step / bare step time - 1 (goal < 10%); data wait share = time spent producing
pairs (render + augment) / step time (goal < 5%).
On a GPU add `--mixed_precision bf16` to measure pairs/s at 224 px (the paper: ~166 pairs/s per A100).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def trainer_run(args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", args.mixed_precision, "--dynamo_backend", "no", str(REPO / "training" / "pretrain.py"),
           "--output_dir", str(out), "--backbone", args.backbone, "--image_size", str(args.image_size),
           "--global_batch_size", str(args.batch), "--samples_per_epoch", str(args.batch * args.steps),
           "--num_epochs", "1", "--validation_pairs", str(args.batch), "--report_to", "none",
           "--logging_steps", str(args.window), "--attributes", args.attributes, "--num_workers", str(args.num_workers)]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    history = json.loads((out / "metrics.json").read_text())["history"][1:]  # drop the warm-up window
    mean = lambda key: sum(h[key] for h in history) / len(history)  # noqa: E731
    return {k: mean(k) for k in ("seconds_per_step", "compute_seconds_per_step", "data_wait_share", "pairs_per_second")}


def bare_loop(args) -> float:
    from comface_hf import ComFaceConfig, ComFaceModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ComFaceModel(ComFaceConfig(backbone=args.backbone, image_size=args.image_size,
                                       projection_hidden_size=512)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-4)
    views = [torch.randn(args.batch, 3, args.image_size, args.image_size, device=device) for _ in range(3)]
    alpha_x, alpha_y = torch.zeros(args.batch, device=device), torch.rand(args.batch, device=device) * 5
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = model(*views, alpha_x=alpha_x, alpha_y=alpha_y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = times[args.window:]
    return sum(steady) / len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--attributes", default="all")
    parser.add_argument("--mixed_precision", default="no")
    parser.add_argument("--num_workers", type=int, default=1,
                        help="trainer's batch-producing workers; 0 renders in the loop (isolates the trainer's overhead)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_run(args, Path(tmp) / "run")
    bare = bare_loop(args)
    overhead = trainer["compute_seconds_per_step"] / bare - 1
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()}-core CPU"
    print(f"| device | backbone | px | batch | workers | bare step (s) | trainer compute step (s) | overhead | "
          f"trainer step incl. data (s) | data wait share | pairs/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {device} | {args.backbone} | {args.image_size} | {args.batch} | {args.num_workers} | {bare:.3f} | "
          f"{trainer['compute_seconds_per_step']:.3f} | {overhead:+.1%} | {trainer['seconds_per_step']:.3f} | "
          f"{trainer['data_wait_share']:.1%} | {trainer['pairs_per_second']:.1f} |")


if __name__ == "__main__":
    main()

"""Throughput of the embedded face generator (images/s), batched, after warm-up.

    PYTHONPATH=. python benchmarks/bench_generator.py [--batch 256] [--sizes 112,224] [--iters 3]

Prints a Markdown table (CPU with the current torch thread count; CUDA if available).
"""

from __future__ import annotations

import argparse
import time

import torch

from comface_hf.synthesis import EmbeddedFaceGenerator


def bench(size: int, device: str, batch: int, iters: int) -> float:
    """Images per second rendering ``batch`` mixed (identity, attribute, alpha) triples."""
    gen = EmbeddedFaceGenerator(image_size=size, device=device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250_000, (batch,), generator=g)
    attrs = torch.randint(0, len(gen.attribute_names), (batch,), generator=g)
    alphas = torch.randint(-50, 51, (batch,), generator=g).float() / 10.0
    gen.render(ids, attrs, alphas)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(iters):
        gen.render(ids + i * batch, attrs, alphas)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sizes", default="112,224")
    p.add_argument("--iters", type=int, default=3)
    a = p.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("Command: PYTHONPATH=. python benchmarks/bench_generator.py " f"--batch {a.batch} --sizes {a.sizes} --iters {a.iters}")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}\n")
    print("| device | image size | internal size | batch | images/s |")
    print("|---|---|---|---|---|")
    for dev in devices:
        for s in [int(x) for x in a.sizes.split(",")]:
            ips = bench(s, dev, a.batch, a.iters)
            internal = EmbeddedFaceGenerator(image_size=s).internal_size
            print(f"| {dev} | {s} | {internal} | {a.batch} | {ips:,.0f} |")
    if not torch.cuda.is_available():
        print("| cuda | - | - | - | not measured (no GPU) |")


if __name__ == "__main__":
    main()

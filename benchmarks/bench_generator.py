"""Throughput of the embedded face generator (images/s), eager and compiled, batched, after warm-up.

    python -m benchmarks.bench_generator [--batch 256] [--sizes 64,112,224] [--iters 5]

Prints a Markdown table: for each device (CPU with the current torch thread count; CUDA if
available) and size, eager and ``compile=True`` images/s (median and range of the repeats), their
ratio (same run), and the time of the compiled renderer's first call (compilation, or loading
inductor's on-disk cache).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from comface_hf.synthesis import EmbeddedFaceGenerator


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(gen: EmbeddedFaceGenerator, batch: int, iters: int, repeats: int) -> tuple[list[float], float]:
    """Images/s of ``repeats`` timed runs (``iters`` batches each) and the seconds of the first (warm-up) call."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250_000, (batch,), generator=g)
    attrs = torch.randint(0, len(gen.attribute_names), (batch,), generator=g)
    alphas = torch.randint(-50, 51, (batch,), generator=g).float() / 10.0
    t0 = time.perf_counter()
    gen.render(ids, attrs, alphas)  # warm-up (compiles when compile=True)
    _sync(str(gen.device))
    first = time.perf_counter() - t0
    gen.render(ids + batch, attrs, alphas)  # second warm-up: allocator and caches settle
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(iters):
            gen.render(ids + (2 + r * iters + i) * batch, attrs, alphas)
        _sync(str(gen.device))
        rates.append(batch * iters / (time.perf_counter() - t0))
    return rates, first


def _fmt(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sizes", default="64,112,224")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--renderer-versions", default="2.0.0,1.1.0", help="renderer versions to time (same run)")
    p.add_argument("--no-compile", action="store_true", help="eager only (skips the compiled column)")
    a = p.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("Command: python -m benchmarks.bench_generator " f"--batch {a.batch} --sizes {a.sizes} --iters {a.iters} "
          f"--repeats {a.repeats} --renderer-versions {a.renderer_versions}" + (" --no-compile" if a.no_compile else ""))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}\n")
    print("| device | renderer | image size | internal size | batch | eager images/s | compiled images/s | compiled / eager "
          "| compiled first call (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dev in devices:
        for s in [int(x) for x in a.sizes.split(",")]:
            for version in a.renderer_versions.split(","):
                eager, _ = bench(EmbeddedFaceGenerator(image_size=s, device=dev, renderer_version=version), a.batch, a.iters, a.repeats)
                if a.no_compile:
                    print(f"| {dev} | {version} | {s} | - | {a.batch} | {_fmt(eager)} | not run | - | - |", flush=True)
                    continue
                compiled_gen = EmbeddedFaceGenerator(image_size=s, device=dev, compile=True, renderer_version=version)
                compiled, first = bench(compiled_gen, a.batch, a.iters, a.repeats)
                if compiled_gen._compiled is None:
                    raise SystemExit("compile=True fell back to eager (see the warning): nothing to compare")
                ratio = statistics.median(compiled) / statistics.median(eager)
                print(f"| {dev} | {version} | {s} | {compiled_gen.internal_size} | {a.batch} | {_fmt(eager)} | {_fmt(compiled)} "
                      f"| {ratio:.1f}x | {first:.1f} |", flush=True)
    if not torch.cuda.is_available():
        print("| cuda | - | - | - | not measured (no GPU) | not measured | - | - |")


if __name__ == "__main__":
    main()

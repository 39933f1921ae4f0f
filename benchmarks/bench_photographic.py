"""Time ``photographic()`` per JPEG backend (Pillow vs torchvision) and without JPEG, on one device.

    python -m benchmarks.bench_photographic                   # CPU, one thread, 128 images of 64 px
    python -m benchmarks.bench_photographic --device cuda --images 512 --size 112

Each timing is the median of ``--repeats`` calls, the backends interleaved so that a load change on shared cores
hits all of them alike; on CUDA the device is synchronised around each call. The load average is printed alongside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch

from comface_hf.synthesis.photographic import CaptureRanges, photographic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io's JPEG is deprecated in favour of TorchCodec
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    smooth = torch.rand(args.images, 3, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(smooth, size=args.size, mode="bilinear", align_corners=False).to(dev)
    runs = {"pillow": {"jpeg_backend": "pillow"}, "torchvision": {"jpeg_backend": "torchvision"},
            "no JPEG": {"ranges": CaptureRanges(jpeg_p=0.0)}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats + 1):  # the first round warms up (nvJPEG handles, allocator) and is dropped
        for name, kwargs in runs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            photographic(x, torch.Generator().manual_seed(repeat), **kwargs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if repeat:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.images} images of {args.size} px on {dev} ({args.threads} thread(s)), median of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for name, t in median.items():
        print(f"  {name:12s} {1000 * t:8.1f} ms")
    print(f"  pillow / torchvision: {median['pillow'] / median['torchvision']:.2f}")


if __name__ == "__main__":
    main()

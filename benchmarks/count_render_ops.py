"""How many aten operators (each at least one kernel launch on a GPU) one step's data path dispatches, per stage.

    python -m benchmarks.count_render_ops            # renderer 2.1.0 at 64 px, one render call of 32 / 128 / 512 faces

A ``TorchDispatchMode`` counts every operator dispatched, on the CPU with the GPU's chunking (one render call per
batch; seeded draws, so the counts repeat). The CPU renderer skips blends whose mask is zero in every row and a GPU
does not, so the GPU's count differs by a few operators either way. BENCHMARKS.md turns the counts into a
launch-cost estimate.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from comface_hf.pretraining.augment import augment_batch
from comface_hf.synthesis.photographic import photographic
from comface_hf.synthesis import EmbeddedFaceGenerator


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count(fn) -> int:
    with CountOps() as counter:
        fn()
    return counter.count


def main() -> None:
    torch.set_num_threads(1)
    gen = EmbeddedFaceGenerator(image_size=64)
    draws = torch.Generator().manual_seed(0)
    for n in (32, 128, 512):
        attributes = torch.randint(0, len(gen.attribute_names), (n,), generator=draws)
        params = gen.edited_params(torch.arange(n), attributes, torch.rand(n, generator=draws) * 10 - 5)
        ops = count(lambda: gen._impl.render_images(params, gen.internal_size, gen._taps))  # one call, as on a GPU
        print(f"render {n:3d} faces in one call: {ops} operators")
    images = gen.render(torch.arange(128), torch.zeros(128, dtype=torch.long), torch.zeros(128))
    print(f"photographic capture of 128 faces: {count(lambda: photographic(images, torch.Generator().manual_seed(0)))} "
          "operators (plus the JPEG round trips)")
    print(f"augmentation of one view of 64 faces: {count(lambda: augment_batch(images[:64], torch.Generator().manual_seed(0)))} operators")


if __name__ == "__main__":
    main()

"""How much each attribute edit changes the picture: mean |render(alpha=+-5) - render(0)| per attribute, renderer
1.1.0, 2.0.0 and 2.1.0 at the same size (pixel values in [0, 1]; mean over 16 identities, both signs, all pixels).

    PYTHONPATH=. python benchmarks/attribute_visibility.py smile,Smiling,weight,age [--size 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comface_hf.synthesis import EmbeddedFaceGenerator  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attributes")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--identities", type=int, default=16)
    a = p.parse_args()
    ids = torch.arange(a.identities)
    n = len(ids)
    print(f"Command: PYTHONPATH=. python benchmarks/attribute_visibility.py {a.attributes} --size {a.size}\n")
    versions = ("1.1.0", "2.0.0", "2.1.0")
    print("| attribute | " + " | ".join(f"renderer {v}" for v in versions) + " |\n|---|" + "---|" * len(versions))
    gens = {v: EmbeddedFaceGenerator(image_size=a.size, renderer_version=v) for v in versions}
    for name in a.attributes.split(","):
        cells = []
        for g in gens.values():
            if name not in g.attribute_names:
                cells.append("-")
                continue
            attr = torch.full((n,), g.attribute_index(name))
            x0 = g.render(ids, attr, torch.zeros(n))
            d = [(g.render(ids, attr, torch.full((n,), s)) - x0).abs().mean().item() for s in (-5.0, 5.0)]
            cells.append(f"{sum(d) / 2:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""How much each attribute edit changes the picture: mean |render(alpha=+-5) - render(0)| per attribute, renderer
1.1.0, 2.0.0 and 2.1.0 at the same size (pixel values in [0, 1]; mean over 16 identities, both signs, all pixels).

    python -m benchmarks.attribute_visibility smile,Smiling,weight,age [--size 64]

``--split`` adds, for the default renderer, where the change is: per sign and per band of the canonical face frame
(above the eyes / eyes to mouth / mouth and below; bands from :data:`comface_hf.face_frame.CANONICAL_KEY_POINTS`).
A smile is local, weight and age move the whole outline: the split shows it.

``--direction NAME=JSON`` (repeatable) asks "what if": the default renderer with attribute NAME's direction changed by
the given parameter values (e.g. ``smile={"smile": 1.5, "jaw_drop": 0.3}``), as an extra column. Nothing is saved.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

from comface_hf.face_frame import CANONICAL_KEY_POINTS
from comface_hf.synthesis import EmbeddedFaceGenerator
from comface_hf.synthesis import renderer

#: Bands of the canonical frame (fractions of the side): down to 0.05 above the eye line (hair, forehead, brows), from
#: there to 0.05 above the mouth centre (eyes, nose, cheeks), and the rest (mouth, chin, neck).
_EYE_Y, _MOUTH_Y = float(CANONICAL_KEY_POINTS[0, 1]), float(CANONICAL_KEY_POINTS[2, 1])
BANDS = {"above the eyes": (0.0, _EYE_Y - 0.05), "eyes to mouth": (_EYE_Y - 0.05, _MOUTH_Y - 0.05),
         "mouth and below": (_MOUTH_Y - 0.05, 1.0)}


def edit_change(g: EmbeddedFaceGenerator, name: str, ids: torch.Tensor, sign: float) -> torch.Tensor:
    """``FloatTensor[H, W]``: mean over identities and channels of |render(sign * 5) - render(0)|."""
    attr = torch.full((len(ids),), g.attribute_index(name))
    x0 = g.render(ids, attr, torch.zeros(len(ids)))
    return (g.render(ids, attr, torch.full((len(ids),), 5.0 * sign)) - x0).abs().mean(dim=(0, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attributes")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--identities", type=int, default=16)
    p.add_argument("--split", action="store_true", help="per sign and per band of the face frame (default renderer)")
    p.add_argument("--direction", action="append", default=[], metavar="NAME=JSON",
                   help="what-if column: the default renderer with NAME's direction updated by these parameter values")
    a = p.parse_args()
    ids = torch.arange(a.identities)
    names = a.attributes.split(",")
    print(f"Command: python -m benchmarks.attribute_visibility {shlex.join(sys.argv[1:])}\n")
    versions = ("1.1.0", "2.0.0", renderer.DEFAULT_RENDERER_VERSION)
    gens = {f"renderer {v}": EmbeddedFaceGenerator(image_size=a.size, renderer_version=v) for v in versions}
    for spec in a.direction:
        name, _, values = spec.partition("=")
        try:
            update = json.loads(values)
            unknown = set(update) - set(renderer.PARAM_NAMES)
        except json.JSONDecodeError as e:
            p.error(f"--direction {spec!r}: the part after '=' is not JSON ({e}); write e.g. smile='{{\"smile\": 1.5}}'")
        if unknown or name not in renderer.DIRECTIONS_BY_VERSION[versions[-1]]:
            p.error(f"--direction {spec!r}: unknown attribute or parameters {sorted(unknown) or name!r}; parameters are "
                    f"{', '.join(renderer.PARAM_NAMES)}")
        g = EmbeddedFaceGenerator(image_size=a.size, renderer_version=versions[-1])
        table = {**renderer.DIRECTIONS_BY_VERSION[versions[-1]]}
        table[name] = {**table[name], **update}
        renderer.DIRECTIONS_BY_VERSION["what-if"] = table  # for this process only: direction_matrix reads it by key
        g._directions = renderer.direction_matrix(g.attribute_names, "what-if")
        del renderer.DIRECTIONS_BY_VERSION["what-if"]
        gens[f"{versions[-1]} with {name} = {json.dumps(table[name])}"] = g
    print("| attribute | " + " | ".join(gens) + " |\n|---|" + "--:|" * len(gens))
    for name in names:
        cells = []
        for g in gens.values():
            if name not in g.attribute_names:
                cells.append("-")
                continue
            cells.append(f"{sum(edit_change(g, name, ids, s).mean().item() for s in (-1.0, 1.0)) / 2:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    if not a.split:
        return
    print(f"\nWhere the change is (renderer {versions[-1]} and what-if columns; bands of the canonical frame):\n")
    rows = {label: (lo, hi) for label, (lo, hi) in BANDS.items()}
    bands = " | ".join(f"{k} (y {lo:.2f}-{hi:.2f})" for k, (lo, hi) in rows.items())
    print(f"| renderer | attribute | alpha | whole picture | {bands} |\n|---|---|--:|--:|" + "--:|" * len(rows))
    for label, g in list(gens.items())[2:]:
        what_if = label.split(" with ")[1].split(" = ")[0] if " with " in label else None
        for name in names:
            if name not in g.attribute_names or what_if not in (None, name):  # a what-if changes one attribute
                continue
            for s in (-1.0, 1.0):
                d = edit_change(g, name, ids, s)
                bands = [d[int(lo * a.size):int(hi * a.size)].mean().item() for lo, hi in rows.values()]
                print(f"| {label.split(' with ')[0]}{' (what-if)' if ' with ' in label else ''} | {name} | {5 * s:+.0f} | "
                      f"{d.mean().item():.4f} | " + " | ".join(f"{b:.4f}" for b in bands) + " |", flush=True)


if __name__ == "__main__":
    main()

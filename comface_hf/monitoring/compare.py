"""``comface compare BEFORE AFTER --model M``: the change between two photos of one person, and a picture of it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..face_comparison import Comparison
from .cli import add_align_arguments, align_from_args


def save_figure_atomically(figure: Any, path: str, **kwargs: Any) -> None:
    """``figure.savefig`` into a temporary file next to ``path``, then a rename."""
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise FileNotFoundError(f"the folder of {path!r} does not exist; create it or choose another --out")
    suffix = target.suffix.lower() or ".png"
    tmp = target.with_name(f".{target.name}.tmp{suffix}")
    figure.savefig(tmp, **kwargs)
    os.replace(tmp, target)


def pair_picture(comparison: Comparison, path: str) -> None:
    """The two aligned faces side by side, with the change, the distance and the same-person check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(6, 3.6))
    names = (comparison.before, comparison.after)
    for ax, crop, label, name in zip(axes, comparison.crops, ("before", "after"), names):
        ax.imshow(crop)
        ax.set_title(f"{label}: {Path(name).name[:28]}", fontsize=8)
        ax.axis("off")
    same = ("same person: not checked" if comparison.similarity is None else
            f"similarity {comparison.similarity:.2f}" + ("" if comparison.same_person is None else
                                                        " (same person)" if comparison.same_person else
                                                        " - DIFFERENT PEOPLE?"))
    figure.suptitle(f"change {comparison.change:+.2f} {comparison.units}   distance {comparison.distance:.2f}\n{same}",
                    fontsize=9)
    figure.tight_layout()
    save_figure_atomically(figure, path, dpi=120)
    plt.close(figure)


def run_compare(args: Any) -> Comparison:
    from ..face_comparison import FaceComparer

    comparer = FaceComparer.from_pretrained(args.model, align=align_from_args(args), identity=args.identity)
    result = comparer.compare(args.before, args.after)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    if args.out:
        pair_picture(result, args.out)
        if not args.json:
            print(f"picture: {args.out}")
    return result


def add_arguments(parser: Any) -> None:
    parser.add_argument("before", help="the earlier photo (any image file; the face is found and aligned)")
    parser.add_argument("after", help="the later photo of the same person")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for machines)")
    parser.add_argument("--out", help="write a picture of the two aligned faces with the numbers (e.g. pair.png)")
    add_align_arguments(parser)

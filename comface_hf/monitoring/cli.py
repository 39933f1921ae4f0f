"""The ``comface`` command: ``compare`` two photos, ``track`` a series, ``calibrate`` the same-person check,
``directions`` (attribute boundaries of a generator, InterFaceGAN's procedure).

    comface compare before.jpg after.jpg --model outputs/comface-dcgan-mix/model [--json] [--out pair.png]
    comface track photos/ --model outputs/comface-dcgan-mix/model [--baseline photos/first.jpg] [--out-dir track]
    comface calibrate outputs/comface-embedded/model [--out calibrated-model] [--num-identities 200]
    comface directions --loader gan-face-generate --out directions/dcgan [--samples 2500]

Bad input (a non-image, a photo without a face, a CSV without its columns...) ends with one line naming the file and
the fix, and exit status 2 (``COMFACE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

from ..errors import run_cli

DEFAULT_MODEL = "outputs/comface-embedded/model"
#: ``--align`` words of ``compare``/``track``: the shared vocabulary less ``landmarks``, which a command line has no way
#: to give.
CLI_ALIGN_MODES = ("auto", "face", "detector", "none")


def add_align_arguments(parser: argparse.ArgumentParser) -> None:
    """``--align`` (the shared vocabulary, :data:`comface_hf.face_alignment.ALIGN_MODES`) and the old ``--no-align``."""
    parser.add_argument("--align", choices=CLI_ALIGN_MODES, default=None,
                        help="how each photo is brought into the face frame: face (default: the detector must find a "
                             "face), auto (a photo without a face is used whole), detector, or none (the photos "
                             "already are aligned face crops: only resize them)")
    parser.add_argument("--no-align", action="store_true", help="deprecated: use --align none")


def align_from_args(args: Any) -> str:
    """The ``--align`` word of parsed arguments; ``--no-align`` still works and says its new spelling."""
    if getattr(args, "no_align", False):
        if args.align not in (None, "none"):
            raise SystemExit(f"comface: --no-align contradicts --align {args.align}; use --align only")
        print("comface: --no-align is deprecated; use --align none", file=sys.stderr)
        return "none"
    return args.align or "face"


def build_parser() -> argparse.ArgumentParser:
    from . import compare, track

    parser = argparse.ArgumentParser(prog="comface", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module, text in (("compare", compare, "the change between two photos of one person"),
                               ("track", track, "a series of photos against a baseline")):
        sub = commands.add_parser(name, help=text, description=text)
        module.add_arguments(sub)
        sub.add_argument("--model", default=os.environ.get("COMFACE_MODEL", DEFAULT_MODEL),
                         help=f"a saved ComFace folder (default: $COMFACE_MODEL or {DEFAULT_MODEL})")
        sub.add_argument("--identity", choices=["comface", "dlib"], default="comface",
                         help="same-person check: the model's g(f(.)) cosine (default; calibrated on rendered faces) "
                              "or dlib's face-recognition descriptors (far better on real photos: BENCHMARKS.md)")
    sub = commands.add_parser("calibrate", help="measure the same-person threshold on rendered identities and make a "
                                                "saved folder a pipeline folder")
    sub.add_argument("model", help="a saved pretrained ComFace folder")
    sub.add_argument("--out", help="write a calibrated copy here instead of updating the folder's config.json")
    sub.add_argument("--num-identities", type=int, default=200)
    sub.add_argument("--target-far", type=float, default=0.01)
    sub.add_argument("--align", action="store_true", help="run the renders through the face aligner first "
                                                        "(align='auto': a missed render is used whole)")
    sub.add_argument("--renderer-version", help="the embedded renderer to calibrate with (default: the one the model's "
                                               "config.json records, else the current one)")
    from ..synthesis import directions

    text = "attribute directions of a generator (sample, render, label offline, fit, condition, check)"
    directions.add_arguments(commands.add_parser("directions", help=text, description=text))
    return parser


def main(argv: Optional[list[str]] = None):
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        from .compare import run_compare

        return run_compare(args)
    if args.command == "track":
        from .track import run_track

        return run_track(args)
    if args.command == "directions":
        from ..synthesis.directions import run_directions

        return run_directions(args)
    from .calibration import finish_model_folder

    figures = finish_model_folder(args.model, args.out, num_identities=args.num_identities, target_far=args.target_far,
                                  align="auto" if args.align else "none", renderer_version=args.renderer_version)
    print(json.dumps({k: v for k, v in figures.items() if k != "fit"}, indent=2))
    return figures


def console_main() -> None:
    run_cli(main)


if __name__ == "__main__":
    console_main()

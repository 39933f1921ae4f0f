"""Convert a pickle-only checkpoint folder (pytorch_model.bin) to model.safetensors.

    python -m comface_hf.convert_to_safetensors FOLDER

Loads with `torch.load(weights_only=True)`, which refuses to run code embedded in the pickle.
"""

from __future__ import annotations

import argparse
import os

import torch
from safetensors.torch import save_file


def convert(folder: str) -> str:
    source = os.path.join(folder, "pytorch_model.bin")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source!r} does not exist; nothing to convert.")
    state = torch.load(source, map_location="cpu", weights_only=True)
    target = os.path.join(folder, "model.safetensors")
    tmp = target + ".tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, target)  # atomic: never a half-written model.safetensors
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    print(convert(parser.parse_args(argv).folder))


if __name__ == "__main__":
    main()

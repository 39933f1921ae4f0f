"""Pack a pretraining output's model folder for a trip through a channel with a per-file size limit (the lent GPU's
$OUT returns files of at most 16 MiB): the small files as one tar, the weights split into numbered chunks, optionally
cast to float16 (``--half``) or quantised to int8 per output channel (``--int8``: every weight matrix / conv kernel
as int8 with one float32 scale per output channel, everything else float32; a ResNet18 then travels in 11 MiB instead
of 44 MiB; say so wherever such a copy is evaluated). ``--unpack`` joins them again (back to float32).

    python -m benchmarks.gpu_pack /tmp/gpu_runs/cpu-hour/model $OUT/cpuhour [--half | --int8]
    python -m benchmarks.gpu_pack --unpack <folder with cpuhour.*> cpuhour /work/ckpts/cpu-hour
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tarfile
from pathlib import Path

import torch

CHUNK = 15 * 1024 * 1024
SCALE = ".__int8_scale__"  # suffix of the per-channel scale stored beside each quantised tensor


def quantize_int8(tensors: dict) -> dict:
    """Symmetric per-output-channel int8 for floating tensors of rank >= 2; the rest unchanged."""
    out = {}
    for k, v in tensors.items():
        if v.is_floating_point() and v.dim() >= 2:
            v = v.float()
            scale = v.abs().flatten(1).amax(1).clamp(min=1e-12) / 127.0
            shape = (-1,) + (1,) * (v.dim() - 1)
            out[k] = (v / scale.view(shape)).round().clamp(-127, 127).to(torch.int8)
            out[k + SCALE] = scale
        else:
            out[k] = v
    return out


def dequantize_int8(tensors: dict) -> dict:
    out = {}
    for k, v in tensors.items():
        if k.endswith(SCALE):
            continue
        if k + SCALE in tensors:
            scale = tensors[k + SCALE]
            v = v.float() * scale.view((-1,) + (1,) * (v.dim() - 1))
        out[k] = v
    return out


def pack(folder: Path, prefix: Path, half: bool, int8: bool = False) -> None:
    if half and int8:
        raise SystemExit("choose one of --half and --int8")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    weights = (folder / "model.safetensors").read_bytes()
    if half or int8:
        from safetensors.torch import load, save

        tensors = load(weights)
        tensors = quantize_int8(tensors) if int8 else {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
        weights = save(tensors, metadata={"format": "pt"})
    with tarfile.open(f"{prefix}.files.tar.gz", "w:gz") as tar:
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name != "model.safetensors":
                tar.add(p, arcname=p.name)
        note = f"sha256 {hashlib.sha256(weights).hexdigest()} half {half} int8 {int8}\n".encode()
        info = tarfile.TarInfo("transport.txt")
        info.size = len(note)
        tar.addfile(info, io.BytesIO(note))
    for i in range(0, len(weights), CHUNK):
        Path(f"{prefix}.w{i // CHUNK}").write_bytes(weights[i:i + CHUNK])


def unpack(src: Path, name: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src / f"{name}.files.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    chunks = sorted(src.glob(f"{name}.w*"), key=lambda p: int(p.name.rsplit(".w", 1)[1]))
    weights = b"".join(p.read_bytes() for p in chunks)
    note = (dest / "transport.txt").read_text()
    if hashlib.sha256(weights).hexdigest() != note.split()[1]:
        raise SystemExit(f"{name}: weights damaged in transport (sha256 differs); fetch them again")
    if "half True" in note or "int8 True" in note:
        from safetensors.torch import load, save

        tensors = dequantize_int8(load(weights)) if "int8 True" in note else load(weights)
        weights = save({k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()},
                       metadata={"format": "pt"})
    tmp = dest / "model.safetensors.tmp"  # atomic: an interrupted unpack never leaves half a weights file
    tmp.write_bytes(weights)
    os.replace(tmp, dest / "model.safetensors")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unpack", action="store_true")
    p.add_argument("--half", action="store_true")
    p.add_argument("--int8", action="store_true")
    p.add_argument("args", nargs="+")
    a = p.parse_args()
    if a.unpack:
        unpack(Path(a.args[0]), a.args[1], Path(a.args[2]))
    else:
        pack(Path(a.args[0]), Path(a.args[1]), a.half, a.int8)


if __name__ == "__main__":
    main()

"""Pack a pretraining output's model folder for a trip through a channel with a per-file size limit (the lent GPU's
$OUT returns files of at most 16 MiB): the small files as one tar, the weights split into numbered chunks, optionally
cast to float16 (``--half``; say so wherever such a copy is evaluated). ``--unpack`` joins them again.

    python benchmarks/gpu_pack.py /tmp/gpu_runs/cpu-hour/model $OUT/cpuhour [--half]
    python benchmarks/gpu_pack.py --unpack <folder with cpuhour.*> cpuhour /work/ckpts/cpu-hour
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tarfile
from pathlib import Path

CHUNK = 15 * 1024 * 1024


def pack(folder: Path, prefix: Path, half: bool) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    weights = (folder / "model.safetensors").read_bytes()
    if half:
        from safetensors.torch import load, save

        weights = save({k: (v.half() if v.is_floating_point() else v) for k, v in load(weights).items()},
                       metadata={"format": "pt"})
    with tarfile.open(f"{prefix}.files.tar.gz", "w:gz") as tar:
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name != "model.safetensors":
                tar.add(p, arcname=p.name)
        note = f"sha256 {hashlib.sha256(weights).hexdigest()} half {half}\n".encode()
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
    expected = (dest / "transport.txt").read_text().split()[1]
    if hashlib.sha256(weights).hexdigest() != expected:
        raise SystemExit(f"{name}: weights damaged in transport (sha256 differs); fetch them again")
    if "half True" in (dest / "transport.txt").read_text():
        from safetensors.torch import load, save

        weights = save({k: (v.float() if v.is_floating_point() else v) for k, v in load(weights).items()},
                       metadata={"format": "pt"})
    tmp = dest / "model.safetensors.tmp"  # atomic: an interrupted unpack never leaves half a weights file
    tmp.write_bytes(weights)
    os.replace(tmp, dest / "model.safetensors")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unpack", action="store_true")
    p.add_argument("--half", action="store_true")
    p.add_argument("args", nargs="+")
    a = p.parse_args()
    if a.unpack:
        unpack(Path(a.args[0]), a.args[1], Path(a.args[2]))
    else:
        pack(Path(a.args[0]), Path(a.args[1]), a.half)


if __name__ == "__main__":
    main()

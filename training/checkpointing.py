"""Checkpoints that are never half-written, and finding the one to resume from."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Optional

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


@contextlib.contextmanager
def atomic_directory(final: Path, accelerator, replace: bool = False) -> Iterator[Path]:
    """Every process writes into `final.tmp`; once all are done the main process renames it to `final`.

    A crash before the rename leaves only the `.tmp` folder, which resuming ignores and the next save clears.
    """
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    yield tmp
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(tmp)
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} already exists; refusing to overwrite it.")
            old = final.with_name(final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    accelerator.wait_for_everyone()


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if (m := CHECKPOINT_PATTERN.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def find_checkpoint(output_dir: Path, spec: str, missing_ok: bool = False) -> Optional[Path]:
    """`latest` -> the newest complete checkpoint in `output_dir`; otherwise `spec` must be a checkpoint folder."""
    if spec == "latest":
        checkpoints = list_checkpoints(output_dir)
        if checkpoints:
            return checkpoints[-1]
        if missing_ok:
            return None
        raise FileNotFoundError(
            f"--resume_from_checkpoint latest: no complete checkpoint-* folder in {output_dir}. "
            "Start without --resume_from_checkpoint, or pass the run's --output_dir."
        )
    path = Path(spec)
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"{spec!r} is not a training checkpoint (no {STATE_FILE}): resume from a checkpoint-* folder written by "
            "this trainer, or use 'latest'. A save_pretrained folder is loaded with from_pretrained instead."
        )
    return path


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    if keep and keep > 0:
        for path in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)

"""Checkpoints that are never half-written, verified before a resume, and finding the one to resume from.

Every `checkpoint-*` folder gets a manifest (each file's size and sha256, written at save time, after every process
finished writing and before the folder is renamed into place). Resuming verifies it: `latest` skips a damaged
checkpoint (a truncated `model.safetensors`, a file changed or lost after the save) with a warning that names it and
resumes from the newest intact one; a named damaged checkpoint is a clear error. Checkpoints from before manifests
existed are checked structurally (every safetensors header readable, the trainer state parseable).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Iterator, Optional

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "checkpoint_manifest.json"


class DamagedCheckpointError(ValueError):
    """A checkpoint whose files no longer match what was saved (or cannot be read)."""


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
        if CHECKPOINT_PATTERN.match(final.name):
            write_manifest(tmp)
        _fsync_tree(tmp)
        if final.exists() and CHECKPOINT_PATTERN.match(final.name) and verify_checkpoint(final):
            # A damaged checkpoint that `latest` skipped: this run has reached its step again. Keep it aside.
            aside = final.with_name(final.name + ".damaged")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(final, aside)
            warnings.warn(f"Replaced the damaged checkpoint {final} (moved to {aside}).", stacklevel=3)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Record every file's size and sha256 in `folder/checkpoint_manifest.json`."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    path = folder / MANIFEST_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": 1, "files": files}, indent=1))
    os.replace(tmp, path)
    return path


def verify_checkpoint(folder: Path) -> list[str]:
    """Problems that make `folder` unusable for a resume (empty list: intact)."""
    folder = Path(folder)
    problems = []
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, OSError) as exc:
            return [f"its {MANIFEST_FILE} is unreadable ({exc})"]
        for name, entry in files.items():
            path = folder / name
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif path.stat().st_size != entry["size"]:
                problems.append(f"{name} has {path.stat().st_size} bytes, {entry['size']} were saved (truncated?)")
            elif _sha256(path) != entry["sha256"]:
                problems.append(f"{name} differs from what was saved (sha256 mismatch)")
        return problems
    # Saved before manifests existed: check what can be checked without one.
    try:
        json.loads((folder / STATE_FILE).read_text())
    except (ValueError, OSError) as exc:
        problems.append(f"{STATE_FILE} is unreadable ({exc})")
    from safetensors import safe_open

    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            problems.append(f"{path.relative_to(folder)} is unreadable ({exc})")
    return problems


#: The lock file a running training holds in its output folder (see :func:`hold_output_dir`).
LOCK_FILE = ".training.lock"
_HELD: dict = {}  # resolved output folder -> this process's open lock file


def hold_output_dir(output_dir: Path):
    """Take ``output_dir`` for this run: an exclusive ``flock`` on ``output_dir/.training.lock``, held by the returned
    open file until :func:`release_output_dir` or the process ends (the kernel releases it even after a SIGKILL, so a
    killed run never leaves a stale lock). A second run into the same folder, with ``--overwrite_output_dir`` or
    ``--resume_from_checkpoint``, would delete or race the first one's checkpoints; it stops here instead, naming the
    holder. Returns ``None`` where ``fcntl`` does not exist (Windows): no lock, as before."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the project's machines
        return None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    release_output_dir(output_dir)  # this process's earlier run into the folder, ended by an exception (in-process use)
    handle = open(output_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FileExistsError(
            f"{output_dir} is in use by another training run ({holder}): wait for it to finish, or choose another "
            "--output_dir. Nothing was changed."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    _HELD[output_dir.resolve()] = handle
    return handle


@atexit.register
def _release_every_output_dir() -> None:  # the kernel would release them anyway; this closes the files cleanly
    for folder in list(_HELD):
        release_output_dir(folder)


def release_output_dir(output_dir: Path) -> None:
    """Let another run have ``output_dir`` (the end of :func:`hold_output_dir`'s hold; a no-op if not held here)."""
    handle = _HELD.pop(Path(output_dir).resolve(), None)
    if handle is not None:
        handle.close()


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if (m := CHECKPOINT_PATTERN.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def find_checkpoint(output_dir: Path, spec: str, missing_ok: bool = False, verify: bool = True) -> Optional[Path]:
    """`latest` -> the newest intact checkpoint in `output_dir` (damaged ones skipped with a warning); otherwise
    `spec` must be an intact checkpoint folder."""
    if spec == "latest":
        checkpoints = list_checkpoints(output_dir)
        damaged = []
        for path in reversed(checkpoints):
            problems = verify_checkpoint(path) if verify else []
            if not problems:
                return path
            damaged.append(path)
            warnings.warn(
                f"Skipping the damaged checkpoint {path}: {'; '.join(problems)}. Resuming from an older one instead; "
                "this one is replaced when the run reaches its step again.", stacklevel=2)
        if missing_ok:
            return None
        if damaged:
            raise DamagedCheckpointError(
                f"--resume_from_checkpoint latest: every checkpoint in {output_dir} is damaged "
                f"({', '.join(p.name for p in damaged)}). Start afresh with --overwrite_output_dir."
            )
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
    problems = verify_checkpoint(path) if verify else []
    if problems:
        intact = [p.name for p in list_checkpoints(path.parent)
                  if p.resolve() != path.resolve() and not verify_checkpoint(p)]
        raise DamagedCheckpointError(
            f"The checkpoint {path} is damaged: {'; '.join(problems)}. It cannot be resumed from. "
            + (f"Intact checkpoints beside it: {', '.join(intact)}; pass one of them, or 'latest' to take the newest "
               "intact one." if intact else "No intact checkpoint lies beside it; start afresh.")
        )
    return path


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    if keep and keep > 0:
        for path in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)

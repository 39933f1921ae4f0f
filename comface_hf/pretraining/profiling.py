"""Where a pretraining step's time goes: named stages for torch.profiler, and the report ``--profile_steps`` writes.

The trainer marks each stage of a step with :func:`stage` (``comface/draw_pairs``, ``render``, ``capture``,
``augment``, ``to_model_input``, ``model_step``); outside a profiling window these marks cost a few microseconds.
``training/pretrain.py --profile_steps N`` profiles N optimiser steps after one warm-up step (through
``Accelerator.profile``) and :func:`write_profile` leaves in ``<output_dir>/profile/``:

* ``stages.md``: milliseconds per step in each stage, host (CPU, inclusive: waits on the device count where the host
  waits) and, on CUDA, device time of the kernels the stage launched;
* ``ops.txt``: the operators with the most self time (device time on CUDA, CPU time otherwise);
* ``trace.json``: the Chrome trace (open in https://ui.perfetto.dev or chrome://tracing).

On a CPU the data stages run in a DataLoader worker (``--num_workers``), outside this process's profile; profile
with ``--num_workers 0`` to see them. On a GPU they run in the training process itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

PREFIX = "comface/"
#: The stages in step order (a stage the run does not use, e.g. capture without --photographic, is left out).
STAGES = ("draw_pairs", "render", "capture", "augment", "to_model_input", "model_step")


def stage(name: str) -> torch.profiler.record_function:
    """Context manager naming one stage of a step in the profile."""
    return torch.profiler.record_function(PREFIX + name)


def _device_time(event) -> float:
    # torch >= 2.4 calls it device time; older releases only had the CUDA name.
    return float(getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0.0)))


def stage_rows(prof, steps: int) -> list[tuple[str, float, float, int]]:
    """``(stage, host ms per step, device ms per step, calls)`` for each marked stage, in :data:`STAGES` order."""
    found = {e.key[len(PREFIX):]: e for e in prof.key_averages() if e.key.startswith(PREFIX)}
    return [(name, found[name].cpu_time_total / 1e3 / steps, _device_time(found[name]) / 1e3 / steps, found[name].count)
            for name in STAGES if name in found]


def write_profile(prof, folder: Path, steps: int, device: torch.device, title: str) -> Path:
    """Write ``stages.md``, ``ops.txt`` and ``trace.json`` for ``steps`` profiled steps into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cuda = device.type == "cuda"
    lines = [f"# Pretraining step profile: {title}", "",
             f"{steps} optimiser steps after one warm-up step, device {device}. Host time is inclusive (it counts the "
             "host waiting for the device where it does); device time is the kernels each stage launched.", "",
             "| stage | host ms / step | device ms / step | calls |", "|---|--:|--:|--:|"]
    for name, host, dev, calls in stage_rows(prof, steps):
        lines.append(f"| {name} | {host:.2f} | {dev:.2f} | {calls} |" if cuda else f"| {name} | {host:.2f} | - | {calls} |")
    (folder / "stages.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    (folder / "ops.txt").write_text(prof.key_averages().table(sort_by=sort_by, row_limit=25), encoding="utf-8")
    prof.export_chrome_trace(str(folder / "trace.json"))
    return folder / "stages.md"


__all__ = ["PREFIX", "STAGES", "stage", "stage_rows", "write_profile"]

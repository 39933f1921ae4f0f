"""What the pretraining loop needs to run on several processes and save a model that loads on one."""

from __future__ import annotations

import os

import torch


def sync_buffers(model: torch.nn.Module, accelerator) -> None:
    """Copy the main process's buffers (BatchNorm running statistics) to all processes.

    DDP broadcasts buffers at the start of each forward, so after the last training step every process holds
    statistics of its own last batch; validation and the saved model use the same ones everywhere.
    """
    if accelerator.num_processes > 1:
        for buffer in accelerator.unwrap_model(model).buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def check_process_count(world: int) -> None:
    """A launcher that started several processes which Accelerate treats as one would train N unsynchronised copies."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and world == 1:
        raise RuntimeError(
            f"{launched} processes were launched but Accelerate sees a single process (no GPU here, so --multi_gpu does "
            "not apply). On CPUs launch with `accelerate launch --cpu --multi_gpu --num_processes N` or set "
            "ACCELERATE_USE_CPU=true."
        )


def revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """SyncBatchNorm -> BatchNorm2d so that the saved model loads on one device."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.SyncBatchNorm):
            bn = torch.nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            revert_sync_batchnorm(child)
    return module


__all__ = ["check_process_count", "revert_sync_batchnorm", "sync_buffers"]

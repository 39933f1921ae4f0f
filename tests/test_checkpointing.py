"""Checkpoint manifests: written at save time, verified before a resume; damaged checkpoints skipped or refused."""

import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from training.checkpointing import (
    MANIFEST_FILE, DamagedCheckpointError, atomic_directory, find_checkpoint, list_checkpoints, verify_checkpoint,
)

SINGLE = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)


def save(output_dir, step):
    with atomic_directory(output_dir / f"checkpoint-{step:07d}", SINGLE) as tmp:
        save_file({"w": torch.arange(64, dtype=torch.float32) * step}, tmp / "model.safetensors")
        torch.save({"lr": 0.1}, tmp / "optimizer.bin")
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return output_dir / f"checkpoint-{step:07d}"


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_manifest_records_every_file_at_save_time(tmp_path):
    folder = save(tmp_path, 2)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    assert set(manifest) == {"model.safetensors", "optimizer.bin", "trainer_state.json"}
    assert manifest["model.safetensors"]["size"] == (folder / "model.safetensors").stat().st_size
    assert verify_checkpoint(folder) == []
    assert not list(tmp_path.glob("*.tmp"))


def test_every_kind_of_damage_is_found(tmp_path):
    folder = save(tmp_path, 2)
    truncate(folder / "model.safetensors")
    assert "model.safetensors has" in verify_checkpoint(folder)[0] and "truncated" in verify_checkpoint(folder)[0]
    folder = save(tmp_path, 4)
    data = bytearray((folder / "optimizer.bin").read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    (folder / "optimizer.bin").write_bytes(bytes(data))
    assert "sha256 mismatch" in verify_checkpoint(folder)[0]
    folder = save(tmp_path, 6)
    (folder / "optimizer.bin").unlink()
    assert verify_checkpoint(folder) == ["optimizer.bin is missing"]


def test_latest_skips_a_damaged_checkpoint_with_a_warning_naming_it(tmp_path):
    save(tmp_path, 2)
    save(tmp_path, 4)
    truncate(tmp_path / "checkpoint-0000004" / "model.safetensors")
    with pytest.warns(UserWarning, match=r"Skipping the damaged checkpoint .*checkpoint-0000004: model.safetensors has"):
        assert find_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-0000002"
    truncate(tmp_path / "checkpoint-0000002" / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DamagedCheckpointError, match="every checkpoint .* is damaged"):
            find_checkpoint(tmp_path, "latest")
        assert find_checkpoint(tmp_path, "latest", missing_ok=True) is None


def test_a_named_damaged_checkpoint_is_a_clear_error_that_points_to_intact_ones(tmp_path):
    save(tmp_path, 2)
    damaged = save(tmp_path, 4)
    truncate(damaged / "model.safetensors")
    with pytest.raises(DamagedCheckpointError, match=r"checkpoint-0000004 is damaged: .*Intact checkpoints beside it: checkpoint-0000002"):
        find_checkpoint(tmp_path, str(damaged))
    assert find_checkpoint(tmp_path, str(tmp_path / "checkpoint-0000002")) == tmp_path / "checkpoint-0000002"


def test_checkpoints_saved_before_manifests_are_checked_structurally(tmp_path):
    old = save(tmp_path, 2)
    (old / MANIFEST_FILE).unlink()
    assert verify_checkpoint(old) == []
    truncate(old / "model.safetensors")
    assert "model.safetensors is unreadable" in verify_checkpoint(old)[0]


def test_saving_over_a_skipped_damaged_checkpoint_keeps_it_aside(tmp_path):
    save(tmp_path, 2)
    damaged = save(tmp_path, 4)
    truncate(damaged / "model.safetensors")
    with pytest.warns(UserWarning, match="Replaced the damaged checkpoint"):
        save(tmp_path, 4)  # the resumed run reaches step 4 again
    assert verify_checkpoint(tmp_path / "checkpoint-0000004") == []
    assert (tmp_path / "checkpoint-0000004.damaged").is_dir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-0000002", "checkpoint-0000004"]
    with pytest.raises(FileExistsError):  # an intact checkpoint is never overwritten
        save(tmp_path, 4)

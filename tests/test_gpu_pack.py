"""benchmarks/gpu_pack.py: a model folder survives the trip through a channel of 15 MiB files, exactly or as float16."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmarks import gpu_pack


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({"w": torch.randn(1024, 1024, generator=g) * 3, "steps": torch.arange(5)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"a": 1}')
    return folder


def test_round_trip_is_exact_and_chunked(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_pack, "CHUNK", 1024 * 1024)  # 4 MiB of weights -> 5 chunks
    folder = _folder(tmp_path)
    gpu_pack.pack(folder, tmp_path / "out" / "m", half=False)
    assert len(list((tmp_path / "out").glob("m.w*"))) == 5
    gpu_pack.unpack(tmp_path / "out", "m", tmp_path / "back")
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert (tmp_path / "back" / "config.json").read_text() == '{"a": 1}'


def test_half_copy_is_close_and_damage_is_refused(tmp_path):
    folder = _folder(tmp_path)
    gpu_pack.pack(folder, tmp_path / "out" / "m", half=True)
    gpu_pack.unpack(tmp_path / "out", "m", tmp_path / "back")
    a, b = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert b["w"].dtype == torch.float32 and torch.equal(a["steps"], b["steps"])
    torch.testing.assert_close(b["w"], a["w"], rtol=1e-3, atol=1e-3)
    assert not torch.equal(b["w"], a["w"])  # it really is a rounded copy
    chunk = tmp_path / "out" / "m.w0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="damaged"):
        gpu_pack.unpack(tmp_path / "out", "m", tmp_path / "back2")


def test_int8_copy_is_a_quarter_and_within_half_a_step_per_channel(tmp_path):
    folder = _folder(tmp_path)
    conv = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 1, 8).view(8, 1, 1, 1)
    save_file({**load_file(str(folder / "model.safetensors")), "conv": conv, "bias": torch.randn(8)},
              str(folder / "model.safetensors"))
    gpu_pack.pack(folder, tmp_path / "out" / "m", half=False, int8=True)
    packed = sum(p.stat().st_size for p in (tmp_path / "out").glob("m.w*"))
    assert packed < 0.26 * (folder / "model.safetensors").stat().st_size
    gpu_pack.unpack(tmp_path / "out", "m", tmp_path / "back")
    a, b = load_file(str(folder / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert set(a) == set(b) and all(b[k].dtype == a[k].dtype for k in a)
    assert torch.equal(a["bias"], b["bias"]) and torch.equal(a["steps"], b["steps"])  # rank < 2 travels exactly
    for k in ("w", "conv"):  # error at most half a quantisation step of its own output channel (scales differ 1e4x)
        step = a[k].abs().flatten(1).amax(1) / 127
        err = (a[k] - b[k]).abs().flatten(1).amax(1)
        assert bool((err <= 0.5 * step * 1.0001).all()) and not torch.equal(a[k], b[k])
    with pytest.raises(SystemExit, match="one of"):
        gpu_pack.pack(folder, tmp_path / "out2" / "m", half=True, int8=True)

"""The ComFaceSynthetic datasets builder (dataset_builders/comface_synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from comface_hf.synthesis import EmbeddedFaceGenerator
from dataset_builders.comface_synthetic import ComFaceSynthetic, ComFaceSyntheticConfig


def test_tiny_build_splits_and_rows(tmp_path: Path) -> None:
    builder = ComFaceSynthetic(config_name="tiny", cache_dir=str(tmp_path))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    cfg = builder.config
    assert len(ds["train"]) + len(ds["validation"]) == 10 * 3 * 5
    assert {k: len(v) for k, v in ds.items()} == cfg.num_rows()
    tr, va = set(ds["train"]["identity"]), set(ds["validation"]["identity"])
    assert tr.isdisjoint(va) and len(va) == 1 and len(tr) == 9
    row = ds["train"][0]
    assert row["image"].size == (32, 32)
    assert row["generator"] == "comface-embedded" and row["generator_version"] == EmbeddedFaceGenerator(image_size=32).version
    assert ds["train"].features["attribute"].names == ["weight", "age", "smile"]
    # stored pixels are exactly what the streaming generator renders (PNG is lossless)
    gen = EmbeddedFaceGenerator(image_size=32, seed=cfg.seed)
    name = ds["train"].features["attribute"].int2str(row["attribute"])
    x = gen.render(torch.tensor([row["identity"]]), torch.tensor([gen.attribute_index(name)]), torch.tensor([row["alpha"]]))
    assert np.array_equal(np.asarray(row["image"]), (x[0] * 255).round().byte().permute(1, 2, 0).numpy())
    # atomic build: no leftover .incomplete directory
    assert not list(tmp_path.rglob("*.incomplete"))


def test_overrides_sampling_and_num_proc(tmp_path: Path) -> None:
    builder = ComFaceSynthetic(config_name="tiny", cache_dir=str(tmp_path), num_identities=20,
                               alphas=None, alpha_step=0.5, alphas_per_identity_attribute=3)
    builder.download_and_prepare(num_proc=2)
    ds = builder.as_dataset()
    assert {k: len(v) for k, v in ds.items()} == {"train": 18 * 3 * 3, "validation": 2 * 3 * 3}
    assert set(ds["train"]["identity"]).isdisjoint(ds["validation"]["identity"])
    alphas = np.asarray(ds["train"]["alpha"])
    assert np.all(np.isin(np.round(alphas, 1), np.round(np.arange(-5, 5.01, 0.5), 1)))
    assert (alphas == 0).sum() == 18 * 3  # neutral face always kept per (identity, attribute)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="Unknown attributes"):
        ComFaceSyntheticConfig(name="x", attributes=["Big_Ears"]).attribute_list()
    with pytest.raises(ValueError, match="outside the alpha range"):
        ComFaceSyntheticConfig(name="x", alphas=[6.0]).alpha_values()
    paper = [c for c in ComFaceSynthetic.BUILDER_CONFIGS if c.name == "paper"][0]
    assert paper.num_identities == 250_000 and len(paper.attribute_list()) == 43
    assert len(paper.alpha_values()) == 101 and paper.image_size == 224

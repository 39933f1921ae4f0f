"""benchmarks/zero_shot_realface.py: a head fitted on rendered pairs only, applied to another table's pairs."""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks import zero_shot_realface as zero_shot


def test_synthetic_pairs_are_unseen_identities_with_signed_alpha_change() -> None:
    x, y, label, subject = zero_shot.synthetic_pairs("smile", 64, 3, 2, seed=0, strength=1.0)
    assert x.shape == y.shape == (6, 3, 64, 64) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert (subject >= zero_shot.IDENTITY_OFFSET).all() and len(set(subject.tolist())) == 3
    assert np.all(np.abs(label) <= 10.0) and np.allclose(label * 10, np.round(label * 10))  # grid steps of 0.1
    x2, _, label2, _ = zero_shot.synthetic_pairs.__wrapped__("smile", 64, 3, 2, seed=0, strength=1.0)
    assert torch.equal(x, x2) and np.array_equal(label, label2)  # deterministic (the cache is only a saving)


def test_run_writes_a_table_run_that_realface_subjects_reads(tmp_path: Path) -> None:
    # A rendered table stands in for the real one (the test suite never reads ../shared).
    data = zero_shot.load_task_dataset("synthetic_smile", image_size=64, synthetic_subjects=3,
                                       synthetic_images_per_subject=4, data_seed=7)
    args = argparse.Namespace(image_size=64, synthetic_subjects=10, synthetic_pairs_per_subject=2, photographic=1.0,
                              real_greyscale=False)
    result = zero_shot.run("Scratch (resnet18)", "scratch", 0, "jaffe", data, args, tmp_path)
    run_dir = tmp_path / "runs" / "jaffe-auto-scratch-resnet18-zeroshot-s0"
    rows = list(csv.DictReader(open(run_dir / "predictions.csv")))
    assert len(rows) == len(zero_shot.sample_task_pairs(data, pairs_per_subject=20, data_seed=0)) > 0
    assert {r["subject"] for r in rows} == set(data.dataset["subject"])
    assert json.loads((run_dir / "results.json").read_text())["mode"] == "zero-shot"
    assert np.isfinite(result["aggregate"]["pearson"]["mean"]) and np.isfinite(result["synthetic_val"]["pearson"])
    assert "| jaffe | Scratch (resnet18) | 0 | smile (20) | 1 | as taken |" in zero_shot.table(tmp_path)
    again = zero_shot.run("Scratch (resnet18)", "scratch", 0, "jaffe", data, args, tmp_path)
    assert again["aggregate"] == result["aggregate"]  # same seed, same init, same head
    args.real_greyscale = True  # greyscale "real" photos: other features, the same rows predicted
    grey = zero_shot.run("Scratch (resnet18)", "scratch", 0, "jaffe", data, args, tmp_path / "grey")
    assert grey["real_greyscale"] and grey["aggregate"] != result["aggregate"]


def test_dcgan_source_renders_edits_of_the_shipped_direction() -> None:
    """--synthetic_source dcgan: the head is fitted on the DCGAN's z edits along the shipped boundary (issue 24)."""
    x, y, label, subject = zero_shot.synthetic_pairs("smile", 64, 3, 2, seed=0, strength=0.0, source="dcgan")
    assert x.shape == y.shape == (6, 3, 64, 64) and len(set(subject.tolist())) == 3
    same = np.abs(label) < 1e-6
    diff = (x - y).abs().mean(dim=(1, 2, 3)).numpy()
    assert np.all(diff[~same] > 0) and np.all(diff[same] < 1e-6)  # an image changes exactly when alpha does
    embedded_x, _, _, _ = zero_shot.synthetic_pairs("smile", 64, 3, 2, seed=0, strength=0.0)
    assert not torch.allclose(x, embedded_x)

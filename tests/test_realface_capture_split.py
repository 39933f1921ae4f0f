"""benchmarks/realface_capture_split.py: greyscale photos, and a run's Corr. split by shared vs mixed capture."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import realface_capture_split as capture_split


def test_is_greyscale() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8).repeat(3, axis=2)
    sepia = np.clip(grey.astype(int) + np.array([3, 1, -2]), 0, 255).astype(np.uint8)  # a scan's faint cast
    colour = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert capture_split.is_greyscale(Image.fromarray(grey)) and capture_split.is_greyscale(Image.fromarray(grey[..., 0]))
    assert capture_split.is_greyscale(Image.fromarray(sepia))
    assert not capture_split.is_greyscale(Image.fromarray(colour))


def test_split_corr_separates_same_and_mixed_capture(tmp_path: Path) -> None:
    greyscale = np.array([True, True, False, False])
    # Same-capture pairs (0,1) and (2,3) predicted perfectly; the mixed pairs predicted backwards.
    pairs = [(0, 1, 1.0, 1.0), (1, 0, -1.0, -1.0), (2, 3, 2.0, 2.0), (3, 2, -2.0, -2.0),
             (0, 2, 3.0, -3.0), (2, 0, -3.0, 3.0), (1, 3, 1.5, -1.5)]
    path = tmp_path / "predictions.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "pair_index", "subject", "index_x", "index_y", "value_x", "value_y", "label", "prediction"])
        for i, (x, y, label, pred) in enumerate(pairs):
            w.writerow([0, i, "A", x, y, 0, label, label, pred])
    out = capture_split.split_corr(path, greyscale, capture_split.load_change_metrics())
    assert out["same capture"] == (pytest.approx(1.0), 4)
    assert out["colour vs greyscale"] == (pytest.approx(-1.0), 3)
    assert out["all"][1] == 7

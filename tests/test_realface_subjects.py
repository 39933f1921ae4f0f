"""benchmarks/realface_subjects.py: per-subject correlations of finished runs, their interval, paired differences."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import realface_subjects


def _run(folder: Path, name: str, method: str, rows: list[tuple[str, float, float]]) -> None:
    run = folder / "runs" / name
    run.mkdir(parents=True)
    with open(run / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "pair_index", "subject", "index_x", "index_y", "value_x", "value_y", "label", "prediction"])
        for i, (subject, label, prediction) in enumerate(rows):
            w.writerow([0, i, subject, 0, 1, 0.0, label, label, prediction])
    (run / "results.json").write_text(json.dumps({"mode": "linear", "method": method,
                                                  "aggregate": {"pearson": {"mean": 0.5}}}))


def test_per_subject_pearson_and_paired_interval(tmp_path: Path, monkeypatch, capsys) -> None:
    labels = [1.0, 2.0, 3.0, 4.0]
    good = [(s, y, y * k) for s, k in (("A", 1.0), ("B", 2.0), ("C", 0.5)) for y in labels]  # r = 1 for every subject
    flat = [(s, y, p) for s in "ABC" for y, p in zip(labels, [2.0, 1.0, 1.0, 2.0])]  # r = 0 for every subject
    _run(tmp_path, "jaffe-auto-good-linear-s0", "Good", good)
    _run(tmp_path, "jaffe-auto-flat-linear-s0", "Flat", flat + [("D", 1.0, 5.0), ("D", 2.0, 5.0)])  # D: constant
    metrics = realface_subjects.load_change_metrics()
    r = realface_subjects.per_subject_pearson(tmp_path / "runs/jaffe-auto-flat-linear-s0/predictions.csv", metrics)
    assert set(r) == {"A", "B", "C"} and np.allclose(list(r.values()), 0.0)  # D undefined: left out
    m, lo, hi = realface_subjects.interval(np.array([0.2, 0.4, 0.6]))
    assert m == pytest.approx(0.4) and hi - m == pytest.approx(4.303 * 0.2 / np.sqrt(3), rel=1e-3)
    monkeypatch.setattr("sys.argv", ["realface_subjects.py", str(tmp_path), "--reference", "Flat"])
    realface_subjects.main()
    out = capsys.readouterr().out
    assert "| jaffe | linear | Good | 0 | 0.500 | 1.000 [1.000, 1.000] | 3 |" in out
    assert "| jaffe | linear | Good | 0 | +1.000 [+1.000, +1.000] | 3 |" in out  # paired on A, B, C


def test_unknown_reference_is_refused(tmp_path: Path, monkeypatch) -> None:
    _run(tmp_path, "fgnet-auto-x-linear-s0", "X", [("A", 1.0, 1.0), ("A", 2.0, 3.0), ("A", 3.0, 2.0)])
    monkeypatch.setattr("sys.argv", ["realface_subjects.py", str(tmp_path), "--reference", "Y"])
    with pytest.raises(SystemExit):
        realface_subjects.main()


def test_pool_averages_runs_per_subject(tmp_path: Path, monkeypatch, capsys) -> None:
    labels = [1.0, 2.0, 3.0]
    _run(tmp_path, "jaffe-auto-a-linear-s0", "P seed 0", [(s, y, y) for s in "AB" for y in labels])  # r = 1
    _run(tmp_path, "jaffe-auto-b-linear-s0", "P seed 1", [(s, y, -y) for s in "AB" for y in labels])  # r = -1
    monkeypatch.setattr("sys.argv", ["realface_subjects.py", str(tmp_path), "--pool", "P seed *"])
    realface_subjects.main()
    assert "| jaffe | linear | P seed *: 2 runs averaged per subject | – | – | 0.000 [" in capsys.readouterr().out


def test_pooled_difference_pairs_two_pools_subject_by_subject():
    """consolidate_results' "A* vs B*": per subject, mean over A's runs minus mean over B's runs, on shared subjects."""
    from benchmarks.consolidate_results import POOL_VS, paired_rows

    subjects = {
        "fgnet-a-s0": ("fgnet", "linear", "A s0", 0.5, {"p1": 0.6, "p2": 0.4, "p3": 0.9}),
        "fgnet-a-s1": ("fgnet", "linear", "A s1", 0.5, {"p1": 0.8, "p2": 0.6}),
        "fgnet-b-s0": ("fgnet", "linear", "B s0", 0.4, {"p1": 0.5, "p2": 0.5}),
    }
    (row,) = paired_rows("src", subjects, (), (f"A s*{POOL_VS}B s*",))
    assert row["kind"] == "paired" and row["runs"] == 2 and row["subjects"] == 2  # p3 is not in every run
    assert float(row["mean"]) == pytest.approx(((0.7 - 0.5) + (0.5 - 0.5)) / 2)

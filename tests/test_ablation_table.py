"""benchmarks/ablation_table.py: variants over pretraining seeds, paired differences against the reference."""

import json
from pathlib import Path

import pytest

from benchmarks import ablation_table


def _record(method: str, pearson: float, mode: str = "linear") -> dict:
    agg = {"mae": {"mean": 10 - pearson}, "pearson": {"mean": pearson}, "direction_accuracy": {"mean": 0.7}}
    return {"dataset": "fgnet", "mode": mode, "method": method, "aggregate": agg}


def test_groups_by_variant_and_pairs_seeds(tmp_path: Path) -> None:
    records = [_record("Scratch (resnet18)", 0.3)]
    records += [_record(f"ComFace ablation default seed {s}", p) for s, p in ((1, 0.60), (2, 0.50), (3, 0.70))]
    records += [_record(f"ComFace ablation no-growth seed {s}", p) for s, p in ((1, 0.50), (2, 0.45), (3, 0.55))]
    records += [_record("ComFace ablation no-growth seed 4", 0.9)]  # no reference for seed 4: not in the paired delta
    (tmp_path / "summary.json").write_text(json.dumps({"records": records}))
    table = ablation_table.rows(ablation_table.group(records), "default")
    assert [r["variant"] for r in table] == ["default", "no-growth"]  # scratch left out, the reference first
    ref, ng = table
    assert ref["pearson"]["mean"] == pytest.approx(0.6) and ref["pearson"]["std"] == pytest.approx(0.1)
    assert "minus_reference" not in ref["pearson"]
    assert ng["seeds"] == [1, 2, 3, 4] and ng["pearson"]["mean"] == pytest.approx(0.6)
    delta = ng["pearson"]["minus_reference"]
    assert delta["seeds"] == [1, 2, 3] and delta["mean"] == pytest.approx(-0.1)
    text = ablation_table.markdown(table, "default")
    assert "| no-growth | 4 |" in text and "-0.100" in text


def test_a_table_without_seeded_rows_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"records": [_record("Scratch (resnet18)", 0.3)]}))
    monkeypatch.setattr("sys.argv", ["ablation_table.py", str(tmp_path)])
    with pytest.raises(SystemExit, match="no rows named"):
        ablation_table.main()

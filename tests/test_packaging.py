"""The built wheel carries everything an installed comface_hf needs: the metric modules, cards and templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_metrics_and_cards(tmp_path: Path) -> None:
    # Build from a copy of the tracked files, so nothing stale in ./build ends up in the wheel.
    src = tmp_path / "src"
    for name in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split():
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name, follow_symlinks=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("comface_hf-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("metrics/mae/mae.py", "metrics/pearson/pearson.py", "metrics/direction_accuracy/direction_accuracy.py",
                     "comface_hf/model_card_template.md", "dataset_builders/comface_synthetic/README.md",
                     "training/pretrain.py"):
        assert required in names, f"{required} missing from {wheel.name}"

    # An installed wheel (unpacked, first on the path) finds its metrics without the repository.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import json; from comface_hf.transfer.metrics import METRICS_DIR, load_change_metrics; "
            "m = load_change_metrics(); "
            "print(json.dumps([str(METRICS_DIR), m['mae'].compute(predictions=[1.0, 2.0], references=[2.0, 2.0])]))")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    metrics_dir, mae = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(metrics_dir) == site / "metrics"
    assert mae == {"mae": 0.5}


def test_moved_module_paths_still_import_with_a_warning() -> None:
    # The package was grouped by stage; old paths forward to the new modules (the same objects) and say where to go.
    import importlib

    from comface_hf._moved import MOVED
    from comface_hf.transfer.pairs import sample_change_pairs
    from dataset_builders.base import ManualDataBuilder

    old = importlib.import_module("comface_hf.transfer_data")
    with pytest.warns(DeprecationWarning, match="comface_hf.transfer.pairs"):
        assert old.sample_change_pairs is sample_change_pairs
    with pytest.warns(DeprecationWarning, match="dataset_builders.base"):
        assert old.ManualDataBuilder is ManualDataBuilder
    with pytest.raises(AttributeError, match="moved to"):
        old.no_such_name  # noqa: B018
    for name, targets in MOVED.items():  # every target exists, so no alias points nowhere
        for target in targets:
            importlib.import_module(target)


def test_readme_pipeline_table_names_files_that_exist() -> None:
    # The pipeline table is how a newcomer finds a stage's file: every path it names must be there.
    import re

    text = (REPO / "README.md").read_text()
    table = text[text.index("## The pipeline"):text.index("## Real photos in")]
    named = set()
    for cell in re.findall(r"`([^`]+)`", table):
        if re.fullmatch(r"[\w./{},-]+/[\w./{},-]*", cell) and not cell.startswith("python"):
            base, _, alternatives = cell.partition("{")
            for part in (alternatives.rstrip("}").split(",") if alternatives else [""]):
                named.add(base + part.split("}")[0])
    assert len(named) >= 10
    missing = sorted(p for p in named if not (REPO / p.rstrip("/")).exists())
    assert not missing, f"README's pipeline table names paths that do not exist: {missing}"
    for short in re.findall(r"`(\w+\.py)`", table):  # bare file names must exist somewhere in the package
        assert list(REPO.glob(f"**/{short}")), short

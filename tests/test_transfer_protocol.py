"""The downstream transfer protocol (Sec. 4.2): folds, inits, modes, outputs, CLI, reports and bad inputs.

Tiny everything: timm `test_resnet` at 32 px, 8 synthetic subjects x 4 images, 1 epoch, 2 folds where the fold count
does not matter (the 4-fold split itself is checked without training).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from comface_hf import ComFaceConfig, ComFaceModel, FaceCycleConfig, FaceCycleModel
from comface_hf.transfer.reports import format_markdown, load_results, main as reports_main, write_table
from comface_hf.transfer import (
    TransferSettings,
    build_change_model,
    load_task_dataset,
    make_folds,
    run_fold,
    run_protocol,
    sample_task_pairs,
)

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
FAST = TransferSettings(epochs=1, batch_size=16, lr=1e-2, show_progress=False)
FAST_SGD = TransferSettings(epochs=1, batch_size=16, lr=1e-2, show_progress=False, linear_solver="sgd")


@pytest.fixture(scope="module")
def task():
    """8 unseen synthetic identities x 4 smile intensities at 32 px (rendered once for the module)."""
    return load_task_dataset("synthetic_smile", image_size=SIZE, synthetic_subjects=8, synthetic_images_per_subject=4)


@pytest.fixture(scope="module")
def comface_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("comface") / "model"
    ComFaceModel(ComFaceConfig(backbone="test_resnet", image_size=SIZE, projection_hidden_size=32)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def facecycle_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("facecycle") / "model"
    config = FaceCycleConfig(
        image_size=SIZE, base_channels=4, expression_dim=8, identity_dim=8, encoder_hidden_dim=16,
        num_generator_blocks=1, num_normalizer_blocks=1,
    )
    FaceCycleModel(config).save_pretrained(folder)
    return str(folder)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(task, init: str, mode: str, out: Path, **kwargs) -> dict:
    return run_protocol(
        "synthetic_smile", init, mode, data=task, output_dir=str(out), folds=2, pairs_per_subject=3,
        backbone="test_resnet", settings=FAST, **kwargs,
    )


# ------------------------------------------------------------------------------------------------ protocol


def test_scratch_and_comface_linear_and_finetune(task, comface_folder, tmp_path: Path) -> None:
    runs = {
        ("scratch", "linear"): _run(task, "scratch", "linear", tmp_path / "s_lin", image_size=SIZE),
        ("scratch", "finetune"): _run(task, "scratch", "finetune", tmp_path / "s_ft", image_size=SIZE),
        ("comface", "linear"): _run(task, comface_folder, "linear", tmp_path / "c_lin"),
        ("comface", "finetune"): _run(task, comface_folder, "finetune", tmp_path / "c_ft"),
    }
    for (kind, mode), result in runs.items():
        assert result["mode"] == mode and len(result["folds"]) == 2
        assert set(result["aggregate"]) == {"mae", "pearson", "direction_accuracy"}
        assert result["aggregate"]["mae"]["mean"] > 0
        assert result["settings"]["image_size"] == SIZE
    assert runs[("comface", "linear")]["init_kind"] == "comface"
    # Identical pairs for every method: sampled from the task and the fixed data seed only.
    pairs = {key: (tmp_path / d / "pairs.csv").read_bytes() for key, d in zip(runs, ("s_lin", "s_ft", "c_lin", "c_ft"))}
    assert len(set(pairs.values())) == 1
    out = tmp_path / "c_ft"
    for name in ("results.json", "predictions.csv", "scatter.png", "pairs.csv"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "synthetic_smile" and saved["folds"][0]["test"].keys() == {"mae", "pearson", "direction_accuracy"}


def test_folds_are_subject_disjoint_and_predictions_on_test_subjects(task, tmp_path: Path) -> None:
    pairs = sample_task_pairs(task, pairs_per_subject=3)
    subjects = {p.subject for p in pairs}
    folds = make_folds(pairs, n_folds=4)
    assert sorted(s for f in folds for s in f.test) == sorted(subjects)  # test folds partition the subjects
    for f in folds:
        assert not (set(f.train) & set(f.val) or set(f.train) & set(f.test) or set(f.val) & set(f.test))
        assert len(f.val) >= 1 and set(f.train) | set(f.val) | set(f.test) == subjects
    result = _run(task, "scratch", "finetune", tmp_path / "run", image_size=SIZE)
    for fold in result["folds"]:
        test = set(fold["test_subjects"])
        subjects_predicted = {pairs[i].subject for k, i, _, _ in result["predictions"] if k == fold["fold"]}
        assert subjects_predicted == test


def test_linear_freezes_backbone_and_finetune_trains_it(task, comface_folder) -> None:
    pairs = sample_task_pairs(task, pairs_per_subject=3)
    fold = make_folds(pairs, n_folds=2)[0]
    checkpoint = ComFaceModel.from_pretrained(comface_folder)

    linear = build_change_model(comface_folder, "linear")
    assert _same(_state(linear.model.backbone), _state(checkpoint.backbone))  # f transferred
    head_before = _state(linear.model.difference_head)
    assert not _same(head_before, _state(checkpoint.difference_head))  # l re-initialised
    result = run_fold(linear, "linear", task, pairs, fold, FAST)
    assert _same(_state(result.model.backbone), _state(checkpoint.backbone))  # weights and BN statistics
    assert not _same(_state(result.model.difference_head), head_before)

    finetune = build_change_model(comface_folder, "finetune")
    assert _same(_state(finetune.model.difference_head), _state(checkpoint.difference_head))  # l transferred too
    result = run_fold(finetune, "finetune", task, pairs, fold, FAST)
    assert not _same(_state(result.model.backbone), _state(checkpoint.backbone))


def test_gradient_clipping_bounds_each_step(task, comface_folder, monkeypatch) -> None:
    """--max_grad_norm clips the gradient norm before every optimiser step (default: no clipping)."""
    import dataclasses

    pairs = sample_task_pairs(task, pairs_per_subject=3)
    fold = make_folds(pairs, n_folds=2)[0]
    norms: list[float] = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad.norm() for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack(grads))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    run_fold(build_change_model(comface_folder, "finetune"), "finetune", task, pairs, fold, FAST)
    free = list(norms)
    norms.clear()
    clipped = dataclasses.replace(FAST, max_grad_norm=1e-3)
    run_fold(build_change_model(comface_folder, "finetune"), "finetune", task, pairs, fold, clipped)
    assert max(free) > 1e-2 and max(norms) <= 1e-3 * 1.001, (free, norms)
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        dataclasses.replace(FAST, max_grad_norm=0.0).check()


def test_encoder_lr_scale_sets_the_encoders_learning_rate(task, comface_folder) -> None:
    """--encoder_lr_scale: the head l learns at lr, the encoder f at lr x scale (0: f stays as transferred)."""
    import dataclasses

    pairs = sample_task_pairs(task, pairs_per_subject=3)
    fold = make_folds(pairs, n_folds=2)[0]
    checkpoint = build_change_model(comface_folder, "finetune").model
    frozen_f = run_fold(build_change_model(comface_folder, "finetune"), "finetune", task, pairs, fold,
                        dataclasses.replace(FAST, encoder_lr_scale=0.0))
    weights = lambda m: {k: v for k, v in _state(m).items() if "running" not in k and "num_batches" not in k}  # noqa: E731
    assert _same(weights(frozen_f.model.backbone), weights(checkpoint.backbone))  # BN statistics still follow the data
    assert not _same(_state(frozen_f.model.difference_head), _state(checkpoint.difference_head))
    moved = run_fold(build_change_model(comface_folder, "finetune"), "finetune", task, pairs, fold,
                     dataclasses.replace(FAST, encoder_lr_scale=0.1))
    assert not _same(weights(moved.model.backbone), weights(checkpoint.backbone))
    with pytest.raises(ValueError, match="encoder_lr_scale must be"):
        dataclasses.replace(FAST, encoder_lr_scale=-1.0).check()


def test_linear_feature_cache_matches_running_the_backbone(task, comface_folder) -> None:
    pairs = sample_task_pairs(task, pairs_per_subject=3)
    fold = make_folds(pairs, n_folds=2)[1]
    outcomes = []
    for cache in (True, False):
        torch.manual_seed(0)
        spec = build_change_model(comface_folder, "linear")
        settings = TransferSettings(
            epochs=2, batch_size=8, lr=1e-2, show_progress=False, cache_features=cache, linear_solver="sgd"
        )
        outcomes.append(run_fold(spec, "linear", task, pairs, fold, settings))
    cached, direct = outcomes
    assert cached.best_epoch == direct.best_epoch
    for key in ("mae", "pearson", "direction_accuracy"):
        assert cached.metrics[key] == pytest.approx(direct.metrics[key], abs=1e-4)


def test_facecycle_init(task, facecycle_folder, tmp_path: Path) -> None:
    from comface_hf.modeling_facecycle import FaceCycleForChangeEstimation

    spec = build_change_model(f"facecycle:{facecycle_folder}", "linear")
    assert isinstance(spec.model, FaceCycleForChangeEstimation)
    assert spec.image_size == SIZE and spec.image_mean == [0.0] * 3  # FaceCycle's [0, 1] inputs
    source = FaceCycleModel.from_pretrained(facecycle_folder).expression_encoder
    assert _same(_state(spec.model.backbone), _state(source))
    assert not any(p.requires_grad for p in spec.model.backbone.parameters())
    # Detected from config.json without the prefix, too.
    assert build_change_model(facecycle_folder, "finetune").init_kind == "facecycle"
    result = _run(task, f"facecycle:{facecycle_folder}", "finetune", tmp_path / "fc")
    assert result["init_kind"] == "facecycle" and (tmp_path / "fc" / "scatter.png").is_file()
    with pytest.raises(ValueError, match="conflicts with init"):
        build_change_model(f"facecycle:{facecycle_folder}", "linear", image_size=64)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_end_to_end_on_disfa_layout(tmp_path: Path) -> None:
    from tests.fixtures_downstream import write_disfa_fixture

    subjects = [f"SN{i:03d}" for i in range(1, 7)]  # 4 folds need >= 6 subjects
    data = write_disfa_fixture(tmp_path / "disfa", subjects=subjects, frames=12, layout="frames", aus=(12,))
    # One corrupt frame (intensity >= 1, so it is a candidate): skipped and reported, not fatal.
    (data / "Frames_LeftCamera" / "SN001" / "00001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training" / "transfer.py"),
        "--task", "disfa_au12", "--data_dir", str(data), "--cache_dir", str(tmp_path / "cache"),
        "--init", "scratch", "--backbone", "test_resnet", "--image_size", str(SIZE), "--mode", "finetune",
        "--epochs", "1", "--batch_size", "16", "--pairs_per_subject", "4", "--output_dir", str(out),
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("results.json", "predictions.csv", "pairs.csv", "scatter.png", "table.md", "table.csv"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "disfa_au12" and len(results["folds"]) == 4
    assert len(results["data"]["build_report"]["bad_images"]) == 1
    assert "1 unreadable skipped" in proc.stdout
    assert "disfa_au12 Fine-tuning MAE↓" in (out / "table.md").read_text()


# ------------------------------------------------------------------------------------------------ reports


def _fake_result(method: str, task: str, mode: str, mae: float) -> dict:
    stats = lambda m: {"mean": m, "std": 0.1}  # noqa: E731
    return {
        "method": method, "task": task, "mode": mode,
        "aggregate": {"mae": stats(mae), "pearson": stats(0.5), "direction_accuracy": stats(0.8)},
    }


def test_report_table_from_two_result_files(tmp_path: Path, capsys) -> None:
    paths = []
    for i, result in enumerate(
        [_fake_result("Scratch", "synthetic_age", "finetune", 2.0), _fake_result("ComFace", "synthetic_age", "linear", 1.5)]
    ):
        path = tmp_path / f"r{i}" / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps(result))
        paths.append(str(path))
    reports_main([*paths, "--out", str(tmp_path / "table")])
    markdown = (tmp_path / "table.md").read_text()
    assert "| Scratch |" in markdown and "| ComFace |" in markdown
    # Linear before fine-tuning; missing cells shown as a dash; accuracy in percent.
    assert markdown.index("synthetic_age Linear MAE↓") < markdown.index("synthetic_age Fine-tuning MAE↓")
    assert "–" in markdown and "80.0 ± 10.0" in markdown and "2.000 ± 0.100" in markdown
    header = (tmp_path / "table.csv").read_text().splitlines()[0]
    assert "synthetic_age/linear/mae_mean" in header and "synthetic_age/finetune/direction_accuracy_std" in header
    same_task = [_fake_result("A", "t", "linear", 1.0), _fake_result("B", "t", "linear", 2.0)]
    assert "**1.000 ± 0.100**" in format_markdown(same_task)  # best MAE in bold
    assert len(load_results(paths)) == 2
    write_table(same_task, tmp_path / "x.md")
    assert (tmp_path / "x.md").is_file() and (tmp_path / "x.csv").is_file()


# ------------------------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_have_clear_errors(task, comface_folder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown task 'disfa'.*synthetic_smile"):
        run_protocol("disfa", "scratch", "linear")
    with pytest.raises(ValueError, match="Unknown mode 'probe'.*linear, finetune"):
        build_change_model("scratch", "probe")
    with pytest.raises(OSError, match="Valid forms"):
        build_change_model("no-such-init", "linear")
    with pytest.raises(ValueError, match="is a file"):
        build_change_model(str(Path(comface_folder) / "config.json"), "linear")
    with pytest.raises(ValueError, match="timm:<backbone>:<weights file>"):
        build_change_model("timm:resnet18", "linear")
    with pytest.raises(ValueError, match="conflicts with init.*--image_size 32"):
        build_change_model(comface_folder, "linear", image_size=64)
    with pytest.raises(ValueError, match="pass --data_dir"):
        load_task_dataset("fgnet")
    few = load_task_dataset("synthetic_age", image_size=SIZE, synthetic_subjects=4, synthetic_images_per_subject=3)
    with pytest.raises(ValueError, match="at least 6 subjects.*only 4"):
        run_protocol("synthetic_age", "scratch", "linear", data=few, backbone="test_resnet", image_size=SIZE)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_results([tmp_path / "missing.json"])

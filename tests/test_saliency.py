"""Eigen-CAM saliency (comface_hf.monitoring.saliency): shapes, ranges, the figure, the CLI and the centre-of-face score.

Tiny timm backbones (``test_resnet``, ``test_vit``) keep the file fast; faces are 96 px so ResNet's last stage (stride
32) has a 3 x 3 map rather than a single cell.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf import ComFaceConfig, ComFaceImageProcessor, ComFaceModel
from comface_hf.monitoring.saliency import centre_score, default_target_layer, eigencam, face_images, main, saliency_figure

SIZE = 96


def _model(seed: int, backbone: str = "test_resnet", size: int = SIZE) -> ComFaceModel:
    torch.manual_seed(seed)
    return ComFaceModel(ComFaceConfig(backbone=backbone, image_size=size, projection_hidden_size=16, projection_dim=8))


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return face_images(3, SIZE)


def test_eigencam_shape_range_and_model_dependence(faces):
    x = (faces - 0.5) / 0.5
    a = eigencam(_model(0), x)
    b = eigencam(_model(1), x)
    assert a.shape == (3, SIZE, SIZE) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.max() > 0.0
    assert not np.allclose(a, b), "two differently initialised backbones gave the same saliency"


def test_eigencam_accepts_a_bare_backbone_and_leaves_train_mode(faces):
    model = _model(0).train()
    maps = eigencam(model.backbone, (faces - 0.5) / 0.5)
    assert maps.shape == (3, SIZE, SIZE)
    assert model.backbone.training, "eigencam must restore the backbone's training mode"


def test_vit_default_layer_reshapes_tokens():
    model = _model(0, backbone="test_vit", size=32)
    layer, transform = default_target_layer(model.backbone)
    assert transform is not None
    with pytest.warns(UserWarning, match="nearly uniform"):  # a 2 x 2 patch grid at 32 px
        maps = eigencam(model, torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32)


def test_unsupported_backbone_names_the_fix():
    with pytest.raises(ValueError, match="target_layer"):
        default_target_layer(torch.nn.Linear(3, 3))


def test_centre_score_range_and_ordering():
    centre = np.zeros((1, 32, 32), dtype=np.float32)
    centre[0, 12:20, 12:20] = 1.0
    border = np.zeros((1, 32, 32), dtype=np.float32)
    border[0, :4, :] = 1.0
    uniform = np.ones((1, 32, 32), dtype=np.float32)
    scores = [float(centre_score(m)[0]) for m in (centre, border, uniform)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[2] > scores[1]
    assert scores[2] == pytest.approx(0.25)
    assert np.isnan(centre_score(np.zeros((1, 8, 8)))[0])
    with pytest.raises(ValueError):
        centre_score(centre, fraction=0.0)


def test_figure_size(faces):
    figure = saliency_figure({"A": _model(0), "B": (_model(1), [0.5] * 3, [0.5] * 3)}, faces[:2], cell=40)
    assert isinstance(figure, Image.Image)
    assert figure.size == (3 * 40, 18 + 2 * 40)


def test_cli_writes_png_and_scores(tmp_path):
    folder = tmp_path / "ckpt"
    _model(3).save_pretrained(folder)
    ComFaceImageProcessor(crop_size=SIZE).save_pretrained(folder)
    out = tmp_path / "saliency.png"
    report = main(["--models", f"ComFace={folder}", "Scratch=scratch:test_resnet", "--out", str(out),
                   "--num_images", "2", "--score_images", "4", "--cell", "32"])
    assert out.is_file() and Image.open(out).size == (3 * 32, 18 + 2 * 32)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["centre_score"]) == {"ComFace", "Scratch"} == set(report["centre_score"])
    assert saved["image_size"] == SIZE  # taken from the checkpoint's config
    assert all(0.0 <= v["mean"] <= 1.0 for v in saved["centre_score"].values())


def test_cli_rejects_bad_model_argument(tmp_path):
    with pytest.raises(SystemExit):
        main(["--models", "no-equals-sign", "--out", str(tmp_path / "x.png")])
    with pytest.raises(FileNotFoundError, match="scratch:<backbone>"):
        main(["--models", f"A={tmp_path / 'missing'}", "--out", str(tmp_path / "x.png")])


def test_tiny_activation_grid_warns():
    with pytest.warns(UserWarning, match="nearly uniform"):
        eigencam(_model(0, size=32), torch.randn(1, 3, 32, 32))


def test_saliency_faces_come_from_the_models_own_renderer():
    """A model's config.generator_spec picks the embedded renderer the figure's faces come from."""
    from comface_hf.monitoring.saliency import FACE_IDENTITY_OFFSET, face_images
    from comface_hf.synthesis import EmbeddedFaceGenerator

    spec = {"generator": "embedded", "renderer_version": "1.1.0", "seed": 3, "image_size": 32}
    got = face_images(2, 32, generator_spec=spec)
    ids = torch.arange(FACE_IDENTITY_OFFSET, FACE_IDENTITY_OFFSET + 2)
    old = EmbeddedFaceGenerator(image_size=32, seed=3, renderer_version="1.1.0").render(ids, torch.zeros(2).long(),
                                                                                         torch.zeros(2))
    assert torch.equal(got, old) and not torch.equal(got, face_images(2, 32))

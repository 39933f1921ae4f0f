"""ComFaceModel / ComFaceForChangeEstimation: shapes, gradients, symmetry, save/load, bad input."""

import os

import pytest
import torch

from comface_hf import ComFaceConfig, ComFaceForChangeEstimation, ComFaceModel


def batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, size, size, generator=g) for _ in range(3)]


def test_forward_shapes_and_losses(tiny_config):
    model = ComFaceModel(tiny_config)
    x1, x2, y = batch()
    out = model(x1, x2, y, alpha_x=torch.zeros(4), alpha_y=torch.ones(4))
    assert out.distance.shape == (4,)
    assert out.features_x1.shape == out.features_y.shape == (4, model.backbone.num_features)
    assert out.projections_x1.shape == out.projections_x2.shape == (4, 16)
    torch.testing.assert_close(out.loss, out.inter_personal_loss + out.intra_personal_loss)
    assert model.get_image_features(x1).shape == (4, model.backbone.num_features)
    assert model.compare(x1, y).shape == (4,)


def test_loss_weights_select_terms():
    cfg = ComFaceConfig(backbone="resnet18", image_size=32, projection_hidden_size=32, projection_dim=8, inter_loss_weight=0.0)
    model = ComFaceModel(cfg)
    x1, x2, y = batch()
    out = model(x1, x2, y, alpha_x=torch.zeros(4), alpha_y=torch.ones(4))
    torch.testing.assert_close(out.loss, out.intra_personal_loss)


def test_gradient_reaches_f_g_and_l(tiny_config):
    model = ComFaceModel(tiny_config)
    x1, x2, y = batch()
    model(x1, x2, y, alpha_x=torch.zeros(4), alpha_y=torch.full((4,), 2.0)).loss.backward()
    for name, module in (("f", model.backbone), ("g", model.projection_head), ("l", model.difference_head)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_symmetric_change_flips_sign_exactly(tiny_config):
    tiny_config.symmetric_change = True
    model = ComFaceForChangeEstimation(tiny_config).eval()
    x, _, y = batch()
    forward, backward = model(x, y).change, model(y, x).change
    torch.testing.assert_close(forward, -backward, rtol=0, atol=1e-6)
    assert forward.abs().max() > 0


def test_change_estimation_loss_is_mse_on_signed_change(tiny_config):
    model = ComFaceForChangeEstimation(tiny_config).eval()
    x, _, y = batch()
    labels = torch.tensor([1.0, -2.0, 0.5, 0.0])
    out = model(x, y, labels=labels)
    torch.testing.assert_close(out.loss, ((out.change - labels) ** 2).mean())


def test_save_load_round_trip_and_transfer(tmp_path, tiny_config):
    model = ComFaceModel(tiny_config).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "README.md"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert "not a medical device" in (tmp_path / "README.md").read_text()
    loaded = ComFaceModel.from_pretrained(tmp_path).eval()
    x1, x2, y = batch()
    torch.testing.assert_close(loaded.compare(x1, y), model.compare(x1, y), rtol=0, atol=0)
    torch.testing.assert_close(
        loaded(x1, x2).projections_x1, model(x1, x2).projections_x1, rtol=0, atol=0
    )
    # f and l transfer to the change-estimation model; g is dropped.
    change = ComFaceForChangeEstimation.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(change(x1, y).change, model.compare(x1, y), rtol=0, atol=0)


def test_linear_evaluation_freezes_f_and_reinitialises_l(tmp_path, tiny_config):
    ComFaceModel(tiny_config).save_pretrained(tmp_path)
    model = ComFaceForChangeEstimation.from_pretrained(tmp_path)
    before = model.difference_head.linear.weight.clone()
    model.prepare_linear_evaluation().train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.difference_head.parameters())
    assert not model.backbone.training  # BatchNorm statistics stay frozen
    assert not torch.equal(before, model.difference_head.linear.weight)


def test_timm_weights_from_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False)  # a stand-in for ImageNet weights, with classifier
    save_file(source.state_dict(), str(tmp_path / "resnet18.safetensors"))
    model = ComFaceForChangeEstimation.from_timm_weights("resnet18", str(tmp_path / "resnet18.safetensors"), image_size=32)
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    with pytest.raises(ValueError, match="does not match"):
        ComFaceForChangeEstimation.from_timm_weights("resnet34", str(tmp_path / "resnet18.safetensors"), image_size=32)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101", "vit_base_patch16_224"])
def test_paper_backbones_build_without_download(backbone):
    cfg = ComFaceConfig(backbone=backbone, image_size=32 if "vit" not in backbone else 32, projection_hidden_size=32)
    model = ComFaceModel(cfg).eval()
    with torch.no_grad():
        assert model.get_image_features(torch.randn(1, 3, 32, 32)).shape[0] == 1


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match="resnet50"):
        ComFaceConfig(backbone="resnet5O")


def test_bad_inputs_have_clear_errors(tmp_path, tiny_config):
    model = ComFaceModel(tiny_config)
    x1, x2, y = batch()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(4, 1, 32, 32))
    with pytest.raises(ValueError, match="pixels but the model expects"):
        model(torch.randn(4, 3, 48, 48))
    with pytest.raises(ValueError, match="Batch sizes differ"):
        model(x1, x2, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        model(x1, x2, y, alpha_x=torch.tensor([0.0, float("nan"), 0, 0]), alpha_y=torch.zeros(4))
    with pytest.raises(ValueError, match="both"):
        model(x1, x2, y, alpha_x=torch.zeros(4))
    # A folder without weights, and one with pickle weights only.
    model.save_pretrained(tmp_path / "ok")
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        ComFaceModel.from_pretrained(missing)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        ComFaceModel.from_pretrained(pickled)
    with pytest.raises(FileNotFoundError, match="config.json"):
        ComFaceModel.from_pretrained(tmp_path)  # the parent folder: no config.json


def test_pickle_checkpoint_converts_to_safetensors(tmp_path, tiny_config):
    from comface_hf.convert_to_safetensors import convert

    model = ComFaceModel(tiny_config).eval()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    convert(str(tmp_path))
    loaded = ComFaceModel.from_pretrained(tmp_path).eval()
    x1, _, y = batch()
    torch.testing.assert_close(loaded.compare(x1, y), model.compare(x1, y))

"""FaceCycle baseline (issue 7): shapes, losses, learning, save/load, picture, and input errors. Tiny and CPU-only."""

import math

import pytest
import torch

from comface_hf.configuration_facecycle import FaceCycleConfig
from comface_hf.facecycle_picture import make_facecycle_picture
from comface_hf.modeling_facecycle import FaceCycleModel, FaceCycleOutput

SIZE = 32
LOSS_NAMES = (
    "loss",
    "reconstruction_loss",
    "motion_cycle_loss",
    "symmetry_loss",
    "flow_smoothness_loss",
    "identity_cycle_loss",
    "mean_face_loss",
)


def tiny_facecycle_config(**overrides) -> FaceCycleConfig:
    kwargs = dict(
        image_size=SIZE,
        base_channels=4,
        expression_dim=8,
        identity_dim=8,
        encoder_hidden_dim=16,
        num_generator_blocks=1,
        num_normalizer_blocks=1,
    )
    kwargs.update(overrides)
    return FaceCycleConfig(**kwargs)


def face_batch(batch: int = 2, seed: int = 0) -> tuple:
    """(expressive frames, other frames of the same people) in [0, 1]: smooth blobs with a frame-specific shift."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, 4, 4, generator=generator)
    base = torch.nn.functional.interpolate(base, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    other = torch.roll(base, shifts=2, dims=-1)  # the same "face" with a small motion
    return base, other


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FaceCycleModel(tiny_facecycle_config())


def test_config_validation():
    assert FaceCycleConfig().image_size == 64 and FaceCycleConfig.model_type == "facecycle"
    with pytest.raises(ValueError, match="multiple of 16"):
        FaceCycleConfig(image_size=30)
    with pytest.raises(ValueError, match="ssim_weight"):
        FaceCycleConfig(ssim_weight=-1.0)
    with pytest.raises(ValueError, match="base_channels"):
        FaceCycleConfig(base_channels=0)


def test_forward_shapes_and_losses(model):
    x, other = face_batch(batch=3)
    out = model(x, pixel_values_other=other)
    assert isinstance(out, FaceCycleOutput)
    for name in LOSS_NAMES:
        value = getattr(out, name)
        assert value.dim() == 0, name
        assert math.isfinite(value.item()) and value.item() >= 0.0, (name, value)
    for name in ("neutral_face", "reconstruction", "identity_reconstruction", "mean_face", "reidentified_face"):
        assert getattr(out, name).shape == (3, 3, SIZE, SIZE), name
    assert out.flow.shape == out.backflow.shape == (3, 2, SIZE // 4, SIZE // 4)
    assert out.flow.abs().max() <= model.config.max_flow
    assert out.expression_features.shape == (3, model.expression_dim)
    assert out.identity_features.shape == (3, model.config.identity_dim)
    out.loss.backward()  # every trainable part receives a gradient
    assert model.expression_encoder.head[1].weight.grad is not None
    assert model.normalizer.reidentify.scale.weight.grad is not None

    single = model(x)  # without other frames, each face is re-expressed from its own neutral face
    assert torch.isfinite(single.loss)
    assert model(x, return_dict=False)[0].dim() == 0


def test_feature_api(model, tmp_path):
    """The features handed to transfer learning are the expression code the cycle losses trained (forward's
    `expression_features`), not the identity code, and the change-estimation model built from a saved folder gets
    the same ones."""
    from comface_hf.modeling_facecycle import FaceCycleForChangeEstimation

    x, other = face_batch(batch=2)
    model.eval()
    features = model.get_expression_features(x)
    identity = model.get_identity_features(x)
    assert features.shape == (2, model.expression_dim) and identity.shape == (2, model.identity_dim)
    with torch.no_grad():
        trained = model(x, pixel_values_other=other)
    torch.testing.assert_close(features, trained.expression_features)
    torch.testing.assert_close(identity, trained.identity_features)
    assert not torch.allclose(features, identity, atol=1e-4)  # two encoders, two codes
    assert not torch.allclose(features[0], features[1], atol=1e-4)  # the code depends on the face
    assert isinstance(model.expression_encoder, torch.nn.Module)

    model.save_pretrained(tmp_path)
    transferred = FaceCycleForChangeEstimation.from_facecycle(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(transferred.backbone(x), features)


def test_motion_cycle_learns(model):
    torch.manual_seed(0)
    x, other = face_batch(batch=2, seed=1)

    def cycle_error() -> float:
        model.eval()
        with torch.no_grad():
            return (model(x, pixel_values_other=other).reconstruction - x).abs().mean().item()

    before = cycle_error()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        model(x, pixel_values_other=other).loss.backward()
        optimizer.step()
    after = cycle_error()
    assert after < 0.6 * before, (before, after)


def test_save_load_roundtrip(model, tmp_path):
    x, other = face_batch(batch=2)
    model.train()
    model(x, pixel_values_other=other)  # fills the running mean face buffer, which must be saved too
    model.eval()
    with torch.no_grad():
        reference = model(x, pixel_values_other=other)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))

    reloaded = FaceCycleModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.image_size == SIZE
    with torch.no_grad():
        again = reloaded(x, pixel_values_other=other)
    for name in ("loss", "neutral_face", "reconstruction", "mean_face", "flow", "expression_features"):
        assert torch.equal(getattr(reference, name), getattr(again, name)), name


def test_auto_classes(model, tmp_path):
    from transformers import AutoConfig, AutoModel

    AutoConfig.register("facecycle", FaceCycleConfig, exist_ok=True)
    AutoModel.register(FaceCycleConfig, FaceCycleModel, exist_ok=True)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoModel.from_pretrained(tmp_path), FaceCycleModel)


def test_picture_size(model):
    x, _ = face_batch(batch=3)
    model.train()
    picture = make_facecycle_picture(model, x, padding=2)
    assert picture.size == (4 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2)
    assert picture.mode == "RGB"
    assert model.training  # the model's mode is restored


def test_picture_command(model, tmp_path):
    # The command renders its faces with the package's own generator: a broken import must fail, not skip.
    import comface_hf.synthesis  # noqa: F401
    from comface_hf.facecycle_picture import main

    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "picture.png"
    main(["--model", str(tmp_path / "model"), "--out", str(out), "--rows", "2"])
    from PIL import Image

    assert Image.open(out).size == (4 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)


def test_bad_inputs(model):
    x, other = face_batch(batch=2)
    with pytest.raises(ValueError, match=r"3 channels, got 1"):
        model(x[:, :1])
    with pytest.raises(ValueError, match=r"32x32.*got 16x16"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="batch dimension"):
        model(x[0])
    with pytest.raises(ValueError, match=r"batch sizes 1 and 2"):
        model(x, pixel_values_other=other[:1])
    with pytest.raises(ValueError, match="pixel_values_other"):
        model(x, pixel_values_other=torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="3 channels"):
        model.get_expression_features(torch.rand(2, 4, SIZE, SIZE))

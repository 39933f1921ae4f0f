"""The transfer diagnostics (benchmarks/transfer_diagnostics.py): AdaBN, feature ensembles, greyscale capture."""

import pytest
import torch
from torch import nn

from benchmarks.transfer_diagnostics import adabn, ensemble, greyscale_capture, main
from comface_hf.transfer.inputs import _backbone_features


class _Tiny(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())


def _images(n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 8, 8, generator=g) * 3 + 2 for _ in range(n)]  # far from BN's initial statistics


def test_adabn_re_estimates_batchnorm_on_the_given_images():
    model, images = _Tiny(0), _images()
    before, _ = _backbone_features(model, images, range(6), 2, "cpu")
    after, row_of = adabn(_backbone_features)(model, images, [4, 0, 2, 0], 2, "cpu")
    bn = model.backbone[1]
    conv = model.backbone[0](torch.stack([images[i] for i in (0, 2, 4)]))
    torch.testing.assert_close(bn.running_mean, conv.mean((0, 2, 3)))  # the mean over exactly those images
    assert not bn.training and row_of == {0: 0, 2: 1, 4: 2}
    assert not torch.allclose(after, before[[0, 2, 4]])  # the features did change
    with pytest.raises(ValueError, match="BatchNorm"):
        plain = nn.Module()
        plain.backbone = nn.Flatten()
        adabn(_backbone_features)(plain, images, [0], 2, "cpu")


def test_ensemble_concatenates_each_models_features_in_order():
    models, images = [_Tiny(0), _Tiny(1), _Tiny(2)], _images()
    joined, row_of = ensemble(_backbone_features, models[1:])(models[0], images, [1, 3], 2, "cpu")
    parts = [_backbone_features(m, images, [1, 3], 2, "cpu")[0] for m in models]
    torch.testing.assert_close(joined, torch.cat(parts, 1))
    assert joined.shape == (2, 12) and row_of == {1: 0, 3: 1}


def test_greyscale_capture_gives_equal_channels_and_keeps_the_capture():
    from comface_hf.synthesis.photographic import photographic

    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    grey = greyscale_capture(photographic)(x, torch.Generator().manual_seed(3), 1.0)
    colour = photographic(x, torch.Generator().manual_seed(3), 1.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(grey[:, 0], 0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2])


def test_bad_invocations_name_the_fix():
    with pytest.raises(SystemExit, match="usage"):
        main(["nothing"])
    with pytest.raises(SystemExit, match="--ensemble DIR"):
        main(["ensemble", "--checkpoint", "a=b"])


def test_low_resolution_keeps_the_size_and_removes_the_detail():
    import numpy as np

    from benchmarks.transfer_diagnostics import low_resolution

    rng = np.random.default_rng(0)
    crop = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    out = np.asarray(low_resolution(12)(crop), dtype=np.float64)
    assert out.shape == crop.shape
    detail = lambda a: np.abs(np.diff(a, axis=0)).mean()  # noqa: E731 - neighbouring rows differ by this much
    assert detail(out) < 0.5 * detail(crop.astype(np.float64))
    same = np.asarray(low_resolution(48)(crop))
    np.testing.assert_array_equal(same, crop)  # at its own size nothing changes

"""Curriculum (Eq. 2), pair sampling (S, identities, attributes, determinism) and the batched augmentation."""

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from comface_hf.pretraining.augment import AugmentationConfig, augment_batch, color_jitter, step_generator
from comface_hf.pretraining.pairs import CorpusPairSampler, Curriculum, StreamingPairSampler, split_identities

GRID = np.round(np.arange(-50, 51) / 10, 1)


def test_curriculum_paper_values():
    c = Curriculum(s_max=10.0, num_epochs=12)
    expected = [10] * 3 + [5] * 3 + [10 / 3] * 3 + [2.5] * 3  # S_max / S_e, e = (3, 6, 9, 12)
    assert [c.range_at(e) for e in range(1, 13)] == pytest.approx(expected)


def test_curriculum_scales_boundaries_with_epochs_and_switches_off():
    c = Curriculum(s_max=10.0, num_epochs=24)
    assert [c.stage(e) for e in (1, 6, 7, 12, 13, 18, 19, 24)] == [1, 1, 2, 2, 3, 3, 4, 4]
    c4 = Curriculum(s_max=10.0, num_epochs=4)
    assert [c4.range_at(e) for e in range(1, 5)] == pytest.approx([10, 5, 10 / 3, 2.5])
    off = Curriculum(s_max=10.0, num_epochs=12, enabled=False)
    assert {off.range_at(e) for e in range(1, 13)} == {10.0}


def corpus(identities=6, attributes=3, alphas=GRID[::5]):
    rows = [(i, a, al) for i in range(identities) for a in range(attributes) for al in alphas]
    ident, attr, alpha = map(np.array, zip(*rows))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))  # rows in any order
    return ident[order], attr[order], alpha[order]


@pytest.mark.parametrize("s", [10.0, 2.5, 0.5])
def test_corpus_pairs_respect_s_and_never_cross(s):
    ident, attr, alpha = corpus()
    sampler = CorpusPairSampler(ident, attr, alpha, seed=3)
    pairs = sampler.epoch_pairs(epoch=2, s=s)
    x, y = pairs[:, 0], pairs[:, 1]
    assert (ident[x] == ident[y]).all() and (attr[x] == attr[y]).all()
    delta = np.abs(alpha[y] - alpha[x])
    assert (delta > 0).all() and (delta <= s + 1e-6).all()
    assert len(np.unique(x)) == len(x) == len(alpha)  # every row is x once per epoch
    # Re-drawn each epoch, identical for the same (seed, epoch).
    assert np.array_equal(pairs, sampler.epoch_pairs(epoch=2, s=s))
    assert not np.array_equal(pairs, sampler.epoch_pairs(epoch=3, s=s))


def test_corpus_without_enough_alphas_is_refused():
    ident, attr, alpha = corpus(alphas=np.array([0.0]))
    with pytest.raises(ValueError, match="at least two alpha values"):
        CorpusPairSampler(ident, attr, alpha)
    ident, attr, alpha = corpus(alphas=np.array([-5.0, 0.0, 5.0]))
    sampler = CorpusPairSampler(ident, attr, alpha)
    with pytest.raises(ValueError, match="grid step"):
        sampler.check_range(Curriculum(s_max=10, num_epochs=12).range_at(12))


def test_streaming_pairs_deterministic_and_in_range():
    sampler = StreamingPairSampler(np.arange(100), 43, GRID, seed=1)
    a = sampler.draw(epoch=1, start=0, count=600, s=2.5)
    b = sampler.draw(epoch=1, start=250, count=100, s=2.5)  # any slice gives the same samples
    for key in a:
        assert np.array_equal(a[key][250:350], b[key])
    delta = np.abs(a["alpha_y"] - a["alpha_x"])
    assert (delta > 0).all() and (delta <= 2.5 + 1e-5).all()
    assert set(np.round(a["alpha_y"] * 10).astype(int)) <= set(np.round(GRID * 10).astype(int))
    # Small |dalpha| must be drawn too, not only the edges of the range.
    assert (delta < 1.0).mean() > 0.2


def test_identity_split_is_disjoint_90_10():
    train, val = split_identities(1000, 0.1, seed=0)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)


def test_augmentation_views_differ_and_are_reproducible():
    images = torch.rand(8, 3, 32, 32)
    a = augment_batch(images, step_generator(0, 1, 5, 0, 0))
    b = augment_batch(images, step_generator(0, 1, 5, 0, 0))
    c = augment_batch(images, step_generator(0, 1, 5, 0, 1))
    assert a.shape == images.shape and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().mean() > 0.01
    # Per-image parameters: two copies of one image get different views in the same call.
    same = augment_batch(images[:1].expand(8, -1, -1, -1).contiguous(), step_generator(0, 0, 0, 0, 0))
    assert (same[0] - same[1:]).abs().flatten(1).mean(1).min() > 0


def test_shared_pair_geometry_crops_and_flips_y_as_x1():
    images = torch.rand(8, 3, 32, 32)
    x1, geometry = augment_batch(images, step_generator(0, 1, 5, 0, 0), return_geometry=True)
    torch.testing.assert_close(x1, augment_batch(images, step_generator(0, 1, 5, 0, 0)), rtol=0, atol=0)
    own = augment_batch(images, step_generator(0, 1, 5, 0, 2))
    shared = augment_batch(images, step_generator(0, 1, 5, 0, 2), geometry=geometry)
    assert (own - shared).abs().mean() > 0.01  # a different crop
    # With colour off, a view cropped and flipped as x1 is x1 itself; the independent view is not.
    plain = AugmentationConfig(jitter_p=0.0, grayscale_p=0.0)
    a, geo = augment_batch(images, step_generator(0, 1, 5, 0, 0), plain, return_geometry=True)
    torch.testing.assert_close(augment_batch(images, step_generator(0, 1, 5, 0, 2), plain, geometry=geo), a,
                               rtol=0, atol=0)
    assert (augment_batch(images, step_generator(0, 1, 5, 0, 2), plain) - a).abs().mean() > 0.01
    with pytest.raises(ValueError, match="geometry"):
        augment_batch(images[:4], step_generator(0, 1, 5, 0, 2), geometry=geometry)


def test_named_augmentations_and_the_crop_override():
    from comface_hf.pretraining.augment import AUGMENTATIONS, augmentation_config, crop_boxes

    assert augmentation_config() == AugmentationConfig()  # the default views are the ones every run drew before
    simclr = augmentation_config("simclr")
    assert simclr.crop_scale == (0.08, 1.0) and simclr.brightness == 0.4 and set(AUGMENTATIONS) == {"half", "simclr"}
    assert augmentation_config("simclr", 0.25).crop_scale == (0.25, 1.0)
    assert augmentation_config("simclr", 0.25).brightness == 0.4  # only the crop changes
    area = {}
    for name, low in (("half", None), ("simclr", None), ("simclr", 0.25)):
        boxes = crop_boxes(4000, 64, 64, augmentation_config(name, low), torch.Generator().manual_seed(0))
        area[(name, low)] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 64**2)
    assert area[("half", None)].min() > 0.55 and area[("simclr", None)].min() < 0.1  # clamped by aspect at the top
    assert 0.1 < area[("simclr", 0.25)].min() and area[("simclr", None)].mean() < area[("simclr", 0.25)].mean()
    with pytest.raises(ValueError, match="must be one of half, simclr"):
        augmentation_config("strong")
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        augmentation_config("half", 0.0)


def test_same_session_pairs_share_capture_with_the_given_probability():
    from comface_hf.pretraining.sources import StreamingPairs

    source = StreamingPairs.__new__(StreamingPairs)  # only the capture index is under test
    source.seed, source.shared_capture_p = 3, 0.0
    assert source.same_session(0, 0, 64) is None  # off: every image its own photo (the stream as before)
    source.shared_capture_p = 0.5
    index = source.same_session(2, 128, 400)
    torch.testing.assert_close(index, source.same_session(2, 128, 400), rtol=0, atol=0)  # a function of the step
    assert torch.equal(index[:400], torch.arange(400))  # the first photos keep their own capture
    shared = index[400:] < 400
    assert torch.equal(index[400:][shared], torch.arange(400)[shared])  # y takes its own x's settings
    assert 0.4 < float(shared.float().mean()) < 0.6
    assert not torch.equal(index, source.same_session(3, 128, 400))


def test_color_jitter_matches_torchvision_per_operation():
    images = torch.rand(4, 3, 16, 16) * 0.5 + 0.25  # away from the clamps torchvision applies between steps
    one, zero = torch.ones(4), torch.zeros(4)
    cases = [
        ((one * 1.3, one, one, zero), TF.adjust_brightness(images, 1.3)),
        ((one, one * 0.6, one, zero), TF.adjust_contrast(images, 0.6)),
        ((one, one, one * 1.4, zero), TF.adjust_saturation(images, 1.4)),
        ((one, one, one, zero), images),
    ]
    for factors, expected in cases:
        torch.testing.assert_close(color_jitter(images, *factors), expected, atol=1e-5, rtol=0)
    # Hue turns chroma but keeps grey pixels grey.
    grey = torch.full((4, 3, 8, 8), 0.5)
    torch.testing.assert_close(color_jitter(grey, one, one, one, one * 0.3), grey, atol=1e-5, rtol=0)

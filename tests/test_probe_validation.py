"""The probe validation (comface_hf/pretraining/validation.py) on a tiny generator and fake labellers: labels are what
the labeller measures on the rendered images, pairs stay within an identity, the labelled set is cached, and a model
whose features encode the measured labels scores far above one whose features do not."""

import numpy as np
import pytest
import torch
from torch import nn

from comface_hf.errors import ComFaceInputError
from comface_hf.pretraining import validation as pv


class TinyGenerator(nn.Module):
    """A DCGAN-shaped stand-in: identity mapping, z (8 values) -> 3 x 16 x 16 in [-1, 1]."""

    z_dim = w_dim = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 3 * 16 * 16)
        self.mapping = None

    def synthesis(self, w):
        return torch.tanh(self.proj(w)).view(-1, 3, 16, 16)


def top_red(images):
    return images[:, 0, :8].mean(dim=(1, 2)).double().numpy()


def bottom_green(images):
    return images[:, 1, 8:].mean(dim=(1, 2)).double().numpy()


class FakeLabeller:
    """'age' = mean red of the top half, 'smile' = mean green of the bottom half; every 7th image it 'finds no face'."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        age, smile = top_red(images) * 50, bottom_green(images)
        missed = (images[:, 2].mean(dim=(1, 2)).numpy() * 1000).astype(int) % 7 == 0
        age[missed] = smile[missed] = np.nan
        return {"age": age, "smile": smile}


class Encoder(nn.Module):
    """Features that encode both measured labels (normalisation undone first)."""

    def forward(self, x):
        x = x * 0.5 + 0.5
        v = torch.stack([x[:, 0, :8].mean(dim=(1, 2)), x[:, 1, 8:].mean(dim=(1, 2))], dim=1)
        return torch.cat([v, -v], dim=1)


class Unrelated(nn.Module):
    """Features that ignore the image (a random, fixed vector per call position)."""

    def forward(self, x):
        return torch.randn(len(x), 4, generator=torch.Generator().manual_seed(int(x.shape[0])))


DIRECTIONS = {"age": np.eye(8)[0], "smile": np.eye(8)[1]}
CONFIG = pv.ProbeValidationConfig(identities=40, images_per_identity=4, alpha=2.0, directions=("age", "smile"),
                                  labels=("age", "smile"))


@pytest.fixture(scope="module")
def tiny():
    G = TinyGenerator().eval().requires_grad_(False)
    labeller = FakeLabeller()
    probe_set = pv.build_probe_set(G, DIRECTIONS, labeller, CONFIG, batch_size=32, log=lambda s: None)
    images = pv.render(G, pv.direction_matrix(DIRECTIONS, CONFIG.directions), probe_set.identity, probe_set.alphas,
                       CONFIG.seed)
    return G, probe_set, images


def test_labels_are_measured_on_the_rendered_images_and_pairs_stay_within_an_identity(tiny):
    G, probe_set, images = tiny
    assert images.shape == (160, 3, 16, 16) and probe_set.alphas.shape == (160, 2)
    measured = top_red(images) * 50
    found = np.isfinite(probe_set.label("age"))
    assert 0.6 < found.mean() < 1.0  # the fake detector's misses are dropped, not filled in
    np.testing.assert_allclose(probe_set.label("age")[found], measured[found])
    ix, iy, y, groups = pv.probe_pairs(probe_set, "age")
    assert np.all(probe_set.identity[ix] == probe_set.identity[iy]) and np.all(groups == probe_set.identity[ix])
    np.testing.assert_allclose(y, measured[iy] - measured[ix])  # measured change, not alpha_y - alpha_x
    assert np.isfinite(y).all() and len(set(zip(ix, iy))) == len(ix) and (ix != iy).all()
    # both orders occur, so a head cannot win by predicting one sign
    assert 0.2 < np.mean(ix < iy) < 0.8
    # an edit moves the image, and the same identity with the same alphas renders the same pixels
    dirs = pv.direction_matrix(DIRECTIONS, ("age", "smile"))
    a = pv.render(G, dirs, np.array([5, 5, 5]), np.array([[0, 0], [0, 0], [2, 0]], np.float32), CONFIG.seed)
    assert torch.equal(a[0], a[1]) and (a[2] - a[0]).abs().mean() > 1e-3


def test_features_that_encode_the_measured_change_beat_unrelated_features(tiny):
    _, probe_set, images = tiny
    kw = dict(probe_set=probe_set, images=images, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    good = pv.probe_validation(Encoder(), **kw)["scores"]
    bad = pv.probe_validation(Unrelated(), **kw)["scores"]
    for name in ("age", "smile"):
        assert good[name]["pearson"] > 0.9, good
        assert abs(bad[name]["pearson"]) < 0.4, bad
        assert good[name]["pearson"] > bad[name]["pearson"] + 0.5
        assert good[name]["pairs"] == bad[name]["pairs"] > 100 and good[name]["identities"] >= 30
    assert "age r=" in pv.format_scores(good)


def test_the_labelled_set_is_cached_and_rebuilt_only_for_another_configuration(tmp_path):
    G = TinyGenerator().eval().requires_grad_(False)
    labeller = FakeLabeller()
    kw = dict(cache_dir=tmp_path, shipped=None, log=lambda s: None)
    first = pv.probe_set_for(G, DIRECTIONS, CONFIG, labeller=labeller, **kw)
    calls = labeller.calls
    assert calls > 0

    def refuse(images):
        raise AssertionError("labelled again although the set is cached")

    again = pv.probe_set_for(G, DIRECTIONS, CONFIG, labeller=refuse, **kw)
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_array_equal(again.alphas, first.alphas)
    # the cache written is also a valid shipped set for the same configuration
    shipped = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert pv.probe_set_for(G, DIRECTIONS, CONFIG, labeller=refuse, cache_dir=None, shipped=shipped).meta["key"]
    # another configuration, or other directions, is labelled afresh
    other = pv.ProbeValidationConfig(**{**CONFIG.__dict__, "identities": 20})
    assert len(pv.probe_set_for(G, DIRECTIONS, other, labeller=labeller, **kw).identity) == 80
    turned = {"age": np.eye(8)[2], "smile": np.eye(8)[1]}
    pv.probe_set_for(G, turned, CONFIG, labeller=labeller, **kw)
    assert labeller.calls > calls + 2
    with pytest.raises(ComFaceInputError, match="no direction for"):
        pv.probe_set_for(G, {"age": np.eye(8)[0]}, CONFIG, labeller=labeller, **kw)


def test_pretrain_validation_probe_prints_and_records_the_probe_validation(tmp_path, monkeypatch, capsys):
    import json

    from training.pretrain import main, parse_arguments

    G = TinyGenerator().eval().requires_grad_(False)
    monkeypatch.setattr(pv, "load_probe_generator", lambda: (G, DIRECTIONS))
    real = pv.probe_set_for
    monkeypatch.setattr(pv, "probe_set_for", lambda G, d, config, cache_dir, labeller, shipped, log: real(
        G, d, CONFIG, cache_dir, FakeLabeller(), None, log))
    monkeypatch.setenv("COMFACE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    main(["--backbone", "test_resnet", "--image_size", "32", "--num_identities", "40", "--attributes", "weight,age",
          "--projection_hidden_size", "32", "--projection_dim", "16", "--global_batch_size", "16",
          "--samples_per_epoch", "32", "--num_epochs", "1", "--validation_pairs", "16", "--report_to", "none",
          "--num_workers", "0", "--validation", "probe", "--output_dir", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"probe_age_pearson", "probe_smile_pearson", "probe_seconds", "val_pearson"} <= set(metrics)
    assert np.isfinite(metrics["probe_age_pearson"])
    printed = capsys.readouterr().out
    assert "Probe validation" in printed and "age r=" in printed and "smile r=" in printed
    assert parse_arguments([]).validation == "synthetic"  # the embedded default is untouched
    with pytest.raises(SystemExit):
        parse_arguments(["--validation", "real"])

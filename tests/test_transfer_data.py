"""Pairs, subject k-fold, ChangePairDataset and synthetic downstream tasks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf.transfer.pairs import ChangePairDataset, load_pairs, pairs_for_subjects, sample_change_pairs, save_pairs, subject_kfold
from comface_hf.transfer.synthetic_task import make_synthetic_task


def _table(num_subjects: int = 6, per_subject: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    subjects = [f"s{i}" for i in range(num_subjects) for _ in range(per_subject)]
    values = rng.integers(0, 60, size=len(subjects)).astype(float).tolist()
    return subjects, values


# ------------------------------------------------------------------------------ pairs


def test_pairs_same_subject_and_labels() -> None:
    subjects, values = _table()
    pairs = sample_change_pairs(subjects, values, num_pairs_per_subject=20, seed=1)
    assert Counter(p.subject for p in pairs) == {f"s{i}": 20 for i in range(6)}
    for p in pairs:
        assert subjects[p.index_x] == subjects[p.index_y] == p.subject
        assert p.index_x != p.index_y
        assert (p.value_x, p.value_y) == (values[p.index_x], values[p.index_y])
        assert p.label == pytest.approx(p.value_y - p.value_x) and p.label != 0
    assert len({(p.index_x, p.index_y) for p in pairs} | {(p.index_y, p.index_x) for p in pairs}) == 2 * len(pairs)


def test_pairs_balanced_directions() -> None:
    subjects, values = _table(num_subjects=7, per_subject=9)
    pairs = sample_change_pairs(subjects, values, num_pairs_per_subject=11, seed=0)  # odd per subject
    up = sum(p.label > 0 for p in pairs)
    assert abs(up - (len(pairs) - up)) <= 1
    for s in {p.subject for p in pairs}:  # and per subject within one
        labels = [p.label for p in pairs if p.subject == s]
        assert abs(sum(x > 0 for x in labels) - sum(x < 0 for x in labels)) <= 1


def test_pairs_deterministic_by_seed() -> None:
    subjects, values = _table()
    a = sample_change_pairs(subjects, values, num_pairs_per_subject=15, seed=5)
    assert a == sample_change_pairs(subjects, values, num_pairs_per_subject=15, seed=5)
    assert a != sample_change_pairs(subjects, values, num_pairs_per_subject=15, seed=6)


def test_pairs_small_and_large_subjects() -> None:
    # 3 images -> at most 3 unordered pairs; 2000 images -> rejection sampling path.
    subjects = ["small"] * 3 + ["big"] * 2000 + ["flat"] * 4
    values = [1.0, 2.0, 3.0] + [float(i % 5) for i in range(2000)] + [2.0] * 4
    with pytest.warns(UserWarning, match="flat"):
        pairs = sample_change_pairs(subjects, values, num_pairs_per_subject=50, seed=0)
    counts = Counter(p.subject for p in pairs)
    assert counts == {"small": 3, "big": 50}
    zero = sample_change_pairs(subjects, values, num_pairs_per_subject=50, seed=0, allow_zero_change=True)
    assert Counter(p.subject for p in zero)["flat"] == 6


def test_pairs_input_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        sample_change_pairs(["a", "a"], [1.0])
    with pytest.raises(ValueError, match="finite"):
        sample_change_pairs(["a", "a"], [1.0, float("nan")])


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_pairs_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    subjects, values = _table()
    values = [v + 0.1 for v in values]  # non-trivial floats must round-trip exactly
    pairs = sample_change_pairs(subjects, values, num_pairs_per_subject=5, seed=2)
    path = save_pairs(pairs, tmp_path / f"pairs{suffix}")
    assert load_pairs(path) == pairs
    with pytest.raises(ValueError, match=".csv or .json"):
        save_pairs(pairs, tmp_path / "pairs.txt")


# ------------------------------------------------------------------------------ k-fold


@pytest.mark.parametrize("n_subjects", [8, 27, 82])
def test_subject_kfold(n_subjects: int) -> None:
    subjects = [f"sub{i}" for i in range(n_subjects) for _ in range(3)]  # one entry per image
    folds = subject_kfold(subjects, n_folds=4, seed=0)
    assert len(folds) == 4
    everyone = {f"sub{i}" for i in range(n_subjects)}
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == everyone and sum(map(len, tests)) == n_subjects  # partition
    for f in folds:
        train, val, test = set(f.train), set(f.val), set(f.test)
        assert not (train & val or train & test or val & test)
        assert train | val | test == everyone
        assert len(val) == max(1, round(0.1 * (n_subjects - len(test))))
    assert subject_kfold(subjects, seed=0) == folds and subject_kfold(subjects, seed=1) != folds


def test_subject_kfold_too_few_subjects() -> None:
    with pytest.raises(ValueError, match="at least"):
        subject_kfold(["a", "b", "c"], n_folds=4)


def test_pairs_for_subjects() -> None:
    subjects, values = _table()
    pairs = sample_change_pairs(subjects, values, num_pairs_per_subject=4)
    fold = subject_kfold(subjects, n_folds=2)[0]
    assert {p.subject for p in pairs_for_subjects(pairs, fold.test)} == set(fold.test)


# ------------------------------------------------------------------ ChangePairDataset


def _image_dataset() -> datasets.Dataset:
    imgs = [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(6)]
    return datasets.Dataset.from_dict(
        {"image": imgs, "subject": ["a"] * 3 + ["b"] * 3, "value": [0.0, 1.0, 2.0, 5.0, 3.0, 4.0]},
        features=datasets.Features(
            {"image": datasets.Image(), "subject": datasets.Value("string"), "value": datasets.Value("float32")}
        ),
    )


def test_change_pair_dataset_hf_and_list() -> None:
    ds = _image_dataset()
    pairs = sample_change_pairs(ds["subject"], ds["value"], num_pairs_per_subject=3, seed=0)
    pair_ds = ChangePairDataset(ds, pairs)
    item = pair_ds[0]
    assert set(item) == {"pixel_values_x", "pixel_values_y", "labels"}
    assert item["pixel_values_x"].shape == (3, 8, 8) and item["labels"].dtype == torch.float32
    p = pairs[0]
    assert item["labels"].item() == pytest.approx(p.label)
    assert item["pixel_values_x"][0, 0, 0].item() == pytest.approx(p.index_x * 20 / 255)
    batch = next(iter(torch.utils.data.DataLoader(pair_ds, batch_size=4)))
    assert batch["pixel_values_y"].shape == (4, 3, 8, 8)

    plain = ChangePairDataset([ds[i]["image"] for i in range(len(ds))], pairs, transform=lambda im: torch.zeros(1))
    assert plain[0]["pixel_values_x"].shape == (1,)
    with pytest.raises(IndexError, match="different"):
        ChangePairDataset(ds.select(range(2)), pairs)


# ------------------------------------------------------------------- synthetic tasks


class _FakeGenerator:
    """Stands in for EmbeddedFaceGenerator: colour encodes identity, brightness the alpha."""

    def __init__(self, image_size: int = 32, **_: object) -> None:
        self.size = image_size
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def attribute_index(self, name: str) -> int:
        return {"weight": 0, "age": 1, "smile": 2}[name]

    def render(self, identities, attributes, alphas):
        self.calls.append((identities, attributes, alphas))
        img = torch.zeros(len(identities), 3, self.size, self.size)
        img[:, 0] = ((identities % 7).float() / 7)[:, None, None]
        img[:, 1] = ((alphas + 5) / 10)[:, None, None]
        return img


def test_make_synthetic_task_with_fake_generator() -> None:
    gen = _FakeGenerator(32)
    ds = make_synthetic_task("age", num_subjects=3, images_per_subject=4, image_size=32, seed=0, generator=gen)
    assert ds.num_rows == 12 and set(ds.column_names) == {"image", "subject", "value"}
    assert ds.features["value"].dtype == "float32"
    ids = torch.cat([c[0] for c in gen.calls])
    assert ids.min().item() == 10_000_000 and ids.max().item() == 10_000_002
    assert torch.cat([c[1] for c in gen.calls]).eq(1).all()
    values = np.array(ds["value"])
    assert values.min() >= -5 and values.max() <= 5
    np.testing.assert_allclose(values * 10, np.round(values * 10), atol=1e-4)  # 0.1 grid
    assert Counter(ds["subject"]) == {"syn10000000": 4, "syn10000001": 4, "syn10000002": 4}
    assert ds[0]["image"].size == (32, 32)
    again = make_synthetic_task("age", 3, 4, 32, seed=0, generator=_FakeGenerator(32))
    assert again["value"] == ds["value"]
    with pytest.raises(ValueError, match="task must be one of"):
        make_synthetic_task("height", generator=gen)


def test_make_synthetic_task_monkeypatched_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``generator=``, the function builds one lazily from a GeneratorSpec (comface_hf.synthesis.spec)."""
    import comface_hf.synthesis.spec as spec_module

    built = []

    def fake_build(spec, device="cpu", trust_code=False):
        built.append(spec)
        return _FakeGenerator(image_size=spec.image_size)

    monkeypatch.setattr(spec_module, "build_generator", fake_build)
    ds = make_synthetic_task("weight", num_subjects=2, images_per_subject=2, image_size=16, seed=3, nuisance=0.0)
    assert ds.num_rows == 4
    assert [(s.generator, s.image_size, s.seed) for s in built] == [("embedded", 16, 3)]


def test_make_synthetic_task_real_generator() -> None:
    # The package's own generator: imported plainly, so a broken comface_hf.synthesis fails here instead of skipping.
    import comface_hf.synthesis  # noqa: F401

    ds = make_synthetic_task("smile", num_subjects=2, images_per_subject=3, image_size=48, seed=0)
    assert ds.num_rows == 6 and ds[0]["image"].size == (48, 48)
    pairs = sample_change_pairs(ds["subject"], ds["value"], num_pairs_per_subject=3)
    item = ChangePairDataset(ds, pairs)[0]
    assert item["pixel_values_x"].shape == (3, 48, 48)
    assert not torch.equal(item["pixel_values_x"], item["pixel_values_y"])

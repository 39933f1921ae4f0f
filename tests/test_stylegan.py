"""Streaming latent edits from StyleGAN-shaped generators: loaders, boundaries, cache, mixture, and the trainer."""

import json
import pickle
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from comface_hf.errors import ComFaceInputError
from comface_hf.synthesis.latent_edit import LatentEditGenerator, check_direction, load_directions
from comface_hf.synthesis.mixture import AttributeSubset, GeneratorMixture
from comface_hf.synthesis.stylegan import load_generator, load_nvidia_pickle
from tests.stylegan_fixture import make_generator, unit_directions

FIXTURE = "tests.stylegan_fixture:make_generator"


def save_directions(folder: Path, directions: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, vector in directions.items():
        np.save(folder / f"{name}.npy", vector)
    return folder


# ------------------------------------------------------------------------------------------------ NVIDIA pickles
FAKE_NETWORKS = """
import torch
from tests.stylegan_fixture import Generator as _Generator


class Generator(_Generator):
    pass


class Discriminator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1)
"""


@pytest.fixture
def nvidia_pickle(tmp_path, monkeypatch):
    """A network pickle shaped like NVIDIA's ({G, D, G_ema}) whose classes live in a stand-in torch_utils package."""
    code = tmp_path / "nvcode"
    (code / "dnnlib").mkdir(parents=True)
    (code / "dnnlib" / "__init__.py").write_text("")
    (code / "torch_utils").mkdir()
    (code / "torch_utils" / "__init__.py").write_text("")
    (code / "torch_utils" / "fake_networks.py").write_text(textwrap.dedent(FAKE_NETWORKS))
    monkeypatch.syspath_prepend(str(code))
    from torch_utils.fake_networks import Discriminator, Generator

    torch.manual_seed(0)
    G_ema = Generator(img_resolution=32)
    G = Generator(img_resolution=32)
    D = Discriminator()
    with open(tmp_path / "network.pkl", "wb") as f:
        pickle.dump({"G": G, "D": D, "G_ema": G_ema, "augment_pipe": None}, f)
    with open(tmp_path / "discriminator.pkl", "wb") as f:
        pickle.dump({"D": D}, f)
    with open(tmp_path / "bare_d.pkl", "wb") as f:
        pickle.dump(D, f)
    yield tmp_path, G_ema, code
    for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib")]:
        del sys.modules[name]


def test_nvidia_pickle_loads_g_ema_and_refuses_non_generators(nvidia_pickle, caplog):
    folder, G_ema, _ = nvidia_pickle
    G = load_nvidia_pickle(folder / "network.pkl")
    assert torch.equal(G.synthesis.const, G_ema.synthesis.const)  # G_ema, not G
    assert not any(p.requires_grad for p in G.parameters()) and not G.training
    assert "a pickle runs code" in caplog.text
    with pytest.raises(ComFaceInputError, match=r"no 'G_ema'.*moving average"):
        load_nvidia_pickle(folder / "discriminator.pkl")
    with pytest.raises(ComFaceInputError, match=r"Discriminator, not a StyleGAN generator"):
        load_nvidia_pickle(folder / "bare_d.pkl")
    with pytest.raises(ComFaceInputError, match="URL"):
        load_nvidia_pickle("https://example.org/network.pkl")
    with pytest.raises(FileNotFoundError, match="No generator checkpoint"):
        load_nvidia_pickle(folder / "missing.pkl")


def test_nvidia_pickle_without_nvidia_code_says_what_to_put_on_the_path(nvidia_pickle, monkeypatch):
    folder, _, code = nvidia_pickle
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(code)])
    for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib")]:
        del sys.modules[name]  # not monkeypatch.delitem: its undo would bring the stand-ins back after the fixture
    with pytest.raises(ComFaceInputError, match=r"(?s)dnnlib and torch_utils cannot be imported.*PYTHONPATH=/path/to/stylegan3"):
        load_nvidia_pickle(folder / "network.pkl")


def test_a_loader_must_return_a_generator():
    with pytest.raises(ComFaceInputError, match="not a StyleGAN generator"):
        load_generator("torch.nn:Linear", None, trust_code=True, in_features=2, out_features=2)
    with pytest.raises(ComFaceInputError, match="Unknown generator loader"):
        load_generator("stylegan-from-the-moon")


def test_an_import_path_loader_is_code_and_runs_only_when_trusted(tmp_path):
    """Issue 23: 'os:system' as a loader would run its checkpoint string as a shell command."""
    marker = tmp_path / "ran"
    with pytest.raises(ComFaceInputError, match=r"(?s)'os:system' is code.*shell command.*--trust_loader_code"):
        load_generator("os:system", f"touch {marker}")
    assert not marker.exists()
    with pytest.raises(ComFaceInputError, match="trust_loader_code"):
        load_generator(FIXTURE)
    assert load_generator(FIXTURE, trust_code=True).z_dim == 32


# ------------------------------------------------------------------------------------------------ boundaries
def test_boundaries_are_checked_for_size_nan_and_unit_norm(tmp_path):
    G = make_generator()
    good = unit_directions(["weight", "age"], w_dim=G.w_dim)
    with pytest.raises(ValueError, match=r"size 31 .*w_dim\) is 32 or num_ws x w_dim = 8 x 32 = 256 \(W\+\)"):
        LatentEditGenerator(G, {**good, "smile": np.ones((1, 31), np.float32) / np.sqrt(31)})
    nan = good["age"].copy()
    nan[0, 3] = np.nan
    folder = save_directions(tmp_path / "nan", {"weight": good["weight"], "age": nan})
    with pytest.raises(ComFaceInputError, match=r"'age' has 1 NaN/inf value"):
        LatentEditGenerator(G, load_directions(folder))
    scaled = {"weight": 3 * good["weight"]}
    with pytest.raises(ComFaceInputError, match=r"norm 3, not 1.*--normalize_directions"):
        LatentEditGenerator(G, scaled)
    gen = LatentEditGenerator(G, scaled, normalize_directions=True)
    assert torch.allclose(gen.directions.norm(dim=-1), torch.ones(1))
    (tmp_path / "text").mkdir()
    np.save(tmp_path / "text" / "age.npy", np.array(["a", "b"]))
    with pytest.raises(ComFaceInputError, match="not numbers"):
        load_directions(tmp_path / "text")


def test_w_plus_boundaries_edit_each_layer_and_w_directions_broadcast():
    G = make_generator()
    wp = unit_directions(["Male"], w_dim=G.w_dim, num_ws=G.num_ws, seed=3)
    w = unit_directions(["age"], w_dim=G.w_dim, seed=4)
    gen = LatentEditGenerator(G, {**wp, **w}, identity_cache_size=0)
    ids, alpha = torch.tensor([7, 7]), torch.tensor([2.0, -1.5])
    edited = gen.latents(ids, torch.tensor([0, 1]), alpha)
    base = gen.latents(ids, torch.tensor([0, 1]), torch.zeros(2))
    assert torch.allclose(edited[0] - base[0], 2.0 * torch.from_numpy(wp["Male"]).view(G.num_ws, G.w_dim), atol=1e-6)
    assert torch.allclose(edited[1] - base[1], -1.5 * torch.from_numpy(w["age"]).expand(G.num_ws, -1), atol=1e-6)


# ------------------------------------------------------------------------------------------------ throughput pieces
def test_identity_w_does_not_depend_on_batch_or_cache_and_pairs_render_in_one_call():
    G = make_generator()
    dirs = unit_directions(["weight", "age"], w_dim=G.w_dim)
    cached = LatentEditGenerator(G, dirs, image_size=32)
    fresh = LatentEditGenerator(make_generator(), dirs, image_size=32, identity_cache_size=0)
    a = cached.identity_w(np.array([3, 900, 3]))
    again = LatentEditGenerator(make_generator(), dirs, image_size=32).identity_w(np.array([900]))
    assert torch.equal(a[1], again[0]) and torch.equal(a[0], a[2])  # bit-identical whatever the batch
    assert len(cached._cache) == 2  # blocks 0 and 3 of 256 identities
    assert torch.allclose(fresh.identity_w(np.array([900, 3])), a[[1, 0]], atol=1e-5) and not fresh._cache
    ids, attrs = torch.tensor([1, 2, 3]), torch.tensor([0, 1, 0])
    ax, ay = torch.tensor([-1.0, 0.5, 4.0]), torch.tensor([1.0, 2.5, -3.0])
    both = cached.render(torch.cat([ids, ids]), torch.cat([attrs, attrs]), torch.cat([ax, ay]))
    assert torch.allclose(both[:3], cached.render(ids, attrs, ax), atol=1e-5)
    assert torch.allclose(both[3:], cached.render(ids, attrs, ay), atol=1e-5)
    assert not torch.allclose(both[:3], both[3:])  # the edit changes the pixels


def test_bf16_synthesis_and_on_device_resize():
    G = make_generator(img_resolution=64)
    dirs = unit_directions(["weight"], w_dim=G.w_dim)
    ids, attrs, alphas = torch.arange(4), torch.zeros(4, dtype=torch.long), torch.linspace(-5, 5, 4)
    full = LatentEditGenerator(G, dirs, image_size=None).render(ids, attrs, alphas)
    small = LatentEditGenerator(G, dirs, image_size=32).render(ids, attrs, alphas)
    half = LatentEditGenerator(G, dirs, image_size=32, synthesis_dtype="bfloat16").render(ids, attrs, alphas)
    assert full.shape == (4, 3, 64, 64) and small.shape == half.shape == (4, 3, 32, 32) and half.dtype == torch.float32
    assert 0 < (half - small).abs().mean() < 0.03  # bf16 is lower precision, not a different image
    with pytest.raises(ValueError, match="synthesis_dtype"):
        LatentEditGenerator(G, dirs, synthesis_dtype="int8")


def test_mixture_routes_attributes_to_their_generator_and_refuses_overlaps():
    a = LatentEditGenerator(make_generator(seed=0), unit_directions(["weight", "age", "smile"], w_dim=32), image_size=32)
    b = LatentEditGenerator(make_generator(seed=1, img_resolution=64), unit_directions(["Male"], w_dim=32, seed=5),
                            image_size=32)
    mix = GeneratorMixture([a, b], ["stylegan", "stylegan3"])
    assert mix.attribute_names == ["weight", "age", "smile", "Male"] and mix.shares() == {"stylegan": 0.75, "stylegan3": 0.25}
    ids, attrs, alphas = torch.tensor([5, 6, 7]), torch.tensor([3, 1, 3]), torch.tensor([1.0, -2.0, 0.0])
    out = mix.render(ids, attrs, alphas)
    assert torch.allclose(out[[0, 2]], b.render(ids[[0, 2]], torch.tensor([0, 0]), alphas[[0, 2]]), atol=1e-5)
    assert torch.allclose(out[1], a.render(ids[1:2], torch.tensor([1]), alphas[1:2])[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"'age' is edited by both"):
        GeneratorMixture([a, LatentEditGenerator(make_generator(), unit_directions(["age"], w_dim=32), image_size=32)])
    from comface_hf.synthesis import get_generator

    embedded = AttributeSubset(get_generator("embedded", image_size=32), ["Bald"])
    assert GeneratorMixture([a, embedded]).render(ids, torch.tensor([3, 0, 3]), alphas).shape == (3, 3, 32, 32)


# ------------------------------------------------------------------------------------------------ the trainer
def trainer_args(tmp_path, out, extra=()):
    dirs_a = save_directions(tmp_path / "dirs_a", unit_directions(["weight", "age", "smile"], w_dim=32, seed=1))
    dirs_b = save_directions(tmp_path / "dirs_b", unit_directions(["Male", "Young"], w_dim=32, num_ws=10, seed=2))
    spec = [{"label": "stylegan", "loader": FIXTURE, "kwargs": {"seed": 0, "channels": 8},
             "directions_dir": str(dirs_a), "latent_space": "w"},
            {"label": "stylegan3", "loader": FIXTURE, "kwargs": {"seed": 1, "img_resolution": 64, "channels": 4},
             "directions_dir": "dirs_b", "latent_space": "w"}]  # relative to the file
    (tmp_path / "generators.json").write_text(json.dumps(spec))
    return ["--generators_file", str(tmp_path / "generators.json"), "--backbone", "test_resnet", "--image_size", "32",
            "--num_identities", "40", "--projection_hidden_size", "32", "--projection_dim", "16",
            "--global_batch_size", "8", "--samples_per_epoch", "32", "--num_epochs", "2", "--validation_pairs", "16",
            "--num_workers", "0", "--report_to", "none", "--logging_steps", "1", "--checkpointing_steps", "2",
            "--output_dir", str(out), "--debug_dump_dir", str(out / "dump"), "--trust_loader_code", *extra]


def test_two_stylegans_stream_through_the_trainer_and_resume_exactly_past_a_damaged_checkpoint(tmp_path):
    """Reference run vs a run stopped at step 6 whose newest checkpoint is then truncated: `latest` skips it with a
    warning naming it, resumes from checkpoint-4 and ends with bit-identical weights."""
    from training.pretrain import main

    reference = tmp_path / "reference"
    main(trainer_args(tmp_path, reference))
    ref = json.loads((reference / "dump" / "rank0.json").read_text())
    identities = ref["pairs"][0][0]
    assert len(identities) == 8
    config = json.loads((reference / "model" / "config.json").read_text())
    labels = [g["label"] for g in config["pretraining_generators"]]
    assert labels == ["stylegan", "stylegan3"] and config["pretraining_generators"][1]["directions"] == "W+"
    card = (reference / "model" / "README.md").read_text()
    assert "60.0% of pairs" in card and "40.0% of pairs" in card

    crashed = tmp_path / "crashed"
    main(trainer_args(tmp_path, crashed, ["--max_steps", "6"]))
    assert sorted(p.name for p in crashed.glob("checkpoint-*")) == ["checkpoint-0000004", "checkpoint-0000006"]
    weights = crashed / "checkpoint-0000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # damaged after it was written

    with pytest.raises(ValueError, match=r"checkpoint-0000006 is damaged: model.safetensors has \d+ bytes.*checkpoint-0000004"):
        main(trainer_args(tmp_path, crashed, ["--resume_from_checkpoint", str(crashed / "checkpoint-0000006")]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(trainer_args(tmp_path, crashed, ["--resume_from_checkpoint", "latest"]))
    messages = [str(w.message) for w in caught]
    assert any("Skipping the damaged checkpoint" in m and "checkpoint-0000006" in m for m in messages), messages
    got = json.loads((crashed / "dump" / "rank0.json").read_text())
    assert got["weights_sha256"] == ref["weights_sha256"]
    assert (crashed / "checkpoint-0000006.damaged").is_dir()  # replaced when the run reached step 6 again


def test_trainer_generator_options_fail_clearly(tmp_path):
    from training.pretrain import main

    base = ["--backbone", "test_resnet", "--image_size", "32", "--report_to", "none", "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ComFaceInputError, match="needs directions_dir"):
        main(base + ["--generator", "latent-edit", "--generator_loader", FIXTURE])
    with pytest.raises(ComFaceInputError, match="network pickle's local path"):
        main(base + ["--generator", "latent-edit", "--directions_dir", str(tmp_path)])
    dirs = save_directions(tmp_path / "d", unit_directions(["age"], w_dim=32))
    spec = [{"loader": FIXTURE, "directions_dir": str(dirs)}, {"generator": "embedded", "attributes": "age"}]
    (tmp_path / "g.json").write_text(json.dumps(spec))
    with pytest.raises(ComFaceInputError, match=r"(?s)--latent_space z \(InterFaceGAN's public.*--latent_space w"):
        main(base + ["--generators_file", str(tmp_path / "g.json"), "--trust_loader_code"])
    with pytest.raises(ComFaceInputError, match=r"is code.*--trust_loader_code"):
        main(base + ["--generators_file", str(tmp_path / "g.json"), "--latent_space", "w"])
    with pytest.raises(ValueError, match="'age' is edited by both"):
        main(base + ["--generators_file", str(tmp_path / "g.json"), "--latent_space", "w", "--trust_loader_code"])
    (tmp_path / "bad.json").write_text(json.dumps([{"loader": FIXTURE, "direction": "x"}]))
    with pytest.raises(ComFaceInputError, match="unknown key"):
        main(base + ["--generators_file", str(tmp_path / "bad.json")])
    assert not (tmp_path / "o" / "model").exists()

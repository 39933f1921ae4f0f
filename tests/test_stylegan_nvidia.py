"""The paper's data path against NVIDIA's own StyleGAN2-ADA code (issue 25): z and W boundaries, precision, provenance.

NVIDIA's code is read from ``../shared`` (tests/nvidia_fixture.py); the generator is built with random weights by
NVIDIA's ``construct_class_by_name`` and pickled as NVIDIA's training loop snapshots it. A missing ``../shared`` fails
these tests with the fix (CI has it), it does not skip them.
"""

import hashlib
import json
import pickle
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch

from comface_hf.errors import ComFaceInputError
from comface_hf.synthesis.latent_edit import PAPER_FROM_CELEBA, LatentEditGenerator, load_directions
from comface_hf.synthesis.stylegan import file_sha256, generator_class_name, load_generator, load_nvidia_pickle
from tests.nvidia_fixture import INTERFACEGAN, SMALL, build_nvidia_pickle, nvidia_on_path, require_shared
from tests.stylegan_fixture import unit_directions

Z_BOUNDARIES = INTERFACEGAN / "stylegan2_ffhq_z"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    require_shared()
    path = tmp_path_factory.mktemp("nvidia") / "network-snapshot-000000.pkl"
    info = build_nvidia_pickle(path)
    return path, info


def _nvidia_modules() -> dict:
    return {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("torch_utils", "dnnlib")}


@pytest.fixture
def nvidia_code(monkeypatch):
    """NVIDIA's dnnlib / torch_utils from ../shared, whatever other tests imported under those names before; the
    earlier modules are put back afterwards and NVIDIA's dropped."""
    saved = _nvidia_modules()
    for name in saved:
        del sys.modules[name]
    nvidia_on_path(monkeypatch)
    yield
    for name in _nvidia_modules():
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
def G(network, nvidia_code):
    return load_nvidia_pickle(network[0])


def _unused_hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


# ------------------------------------------------------------------------------------------------ provenance
def test_the_card_names_nvidias_class_and_the_pickles_hash(network, G):
    path, _ = network
    assert type(G).__qualname__.endswith("Decorator")  # what type() says of NVIDIA's persistent classes
    assert generator_class_name(G) == "training.networks.Generator"
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    gen = LatentEditGenerator(G, Z_BOUNDARIES, attribute_names=["Male"], latent_space="z",
                              provenance={"checkpoint": path.name, "checkpoint_sha256": file_sha256(path)})
    d = gen.describe()
    assert d["generator_class"] == "training.networks.Generator" and d["checkpoint"] == path.name
    assert d["latent_space"] == "z" and d["directions"] == "z" and d["num_ws"] == G.num_ws


# ------------------------------------------------------------------------------------------------ z boundaries
def test_interfacegan_z_boundaries_edit_z_before_nvidias_mapping_and_truncation(G):
    directions = load_directions(Z_BOUNDARIES)
    assert len(directions) == 39 and "Young" in directions and not any(k.startswith("boundary_") for k in directions)
    assert all(v.shape == (512,) for v in directions.values())
    gen = LatentEditGenerator(G, directions, attribute_names=["weight", "age", "smile", "Male"], latent_space="z",
                              truncation_psi=0.7, identity_cache_size=0)
    assert gen.attribute_sources == {"weight": "Chubby", "age": "-Young", "smile": "Smiling"}
    assert torch.equal(gen.directions[1], -directions["Young"]) and torch.equal(gen.directions[0], directions["Chubby"])
    assert set(PAPER_FROM_CELEBA) == {"weight", "age", "smile"}

    from comface_hf.synthesis.latent_edit import identity_z

    ids, attrs, alphas = torch.tensor([3, 3, 11]), torch.tensor([1, 3, 0]), torch.tensor([2.5, -4.0, 1.0])
    z = identity_z(gen.seed, ids.numpy(), 512) + alphas[:, None] * gen.directions[attrs]
    expected = G.mapping(z, None, truncation_psi=0.7)  # NVIDIA's own mapping and truncation
    assert torch.allclose(gen.latents(ids, attrs, alphas), expected, atol=1e-5)
    # the edit happens before the mapping: not a straight line in W
    zero = gen.latents(ids, attrs, torch.zeros(3))
    assert not torch.allclose(gen.latents(ids, attrs, 2 * alphas) - zero, 2 * (gen.latents(ids, attrs, alphas) - zero),
                              atol=1e-4)
    # the same 512-value files read as W boundaries of this 32-d W: refused, naming the fix
    with pytest.raises(ValueError, match=r"size 512 .*w_dim\) is 32.*latent_space 'z'"):
        LatentEditGenerator(G, directions, attribute_names=["Male"], latent_space="w")
    with pytest.raises(KeyError, match=r"'height'.*age from -Young"):
        LatentEditGenerator(G, directions, attribute_names=["height"], latent_space="z")


def test_streamed_pixels_are_nvidias_and_fixed(G):
    gen = LatentEditGenerator(G, Z_BOUNDARIES, attribute_names=["Smiling", "Young"], latent_space="z",
                              image_size=None)
    ids, attrs, alphas = torch.arange(4), torch.tensor([0, 1, 0, 1]), torch.tensor([-5.0, -1.0, 0.5, 5.0])
    images = gen.render(ids, attrs, alphas)
    ws = gen.latents(ids, attrs, alphas)
    reference = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert images.shape == (4, 3, 64, 64)
    assert torch.allclose(images, (reference.clamp(-1, 1) + 1) / 2, atol=1e-6)
    assert torch.equal(images, gen.render(ids, attrs, alphas))  # noise fixed: an image is a function of its triple


# ------------------------------------------------------------------------------------------------ precision
def test_precisions_run_through_nvidias_own_mechanisms_on_cpu(G):
    """bfloat16 used to stop on NVIDIA's `assert x.dtype == dtype`; float32 used to run the fp16 blocks (slow on a
    CPU without fast fp16)."""
    ids, attrs, alphas = torch.arange(6), torch.zeros(6, dtype=torch.long), torch.linspace(-5, 5, 6)

    def make(dtype):
        return LatentEditGenerator(G, Z_BOUNDARIES, attribute_names=["Male"], latent_space="z", image_size=None,
                                   synthesis_dtype=dtype)

    fp32 = make("float32")
    full = fp32.render(ids, attrs, alphas)
    assert fp32._synthesis_kwargs == {"noise_mode": "const", "force_fp32": True}
    ws = fp32.latents(ids, attrs, alphas)
    with pytest.raises(AssertionError):  # the old way: autocast around NVIDIA's synthesis
        with torch.autocast("cpu", dtype=torch.bfloat16):
            G.synthesis(ws, noise_mode="const")
    native = (G.synthesis(ws, noise_mode="const").clamp(-1, 1) + 1) / 2  # NVIDIA's fp16 blocks, emulated on the CPU
    assert 0 < (native - full).abs().max() < 0.02

    bf16 = make("bfloat16")
    half = bf16.render(ids, attrs, alphas)
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert 0 < (half - full).abs().mean() < 0.01 and (half - full).abs().max() < 0.1  # lower precision, same faces
    assert "bfloat16" in bf16.synthesis_precision and "force_fp32" in bf16.synthesis_precision
    assert _unused_hooks(G) == 0 and not torch.is_autocast_enabled("cpu")  # nothing left behind on G
    layer = G.synthesis.b32.conv1

    def broken(*args, **kwargs):
        raise RuntimeError('"bias_act_cuda" not implemented for \'BFloat16\'')  # what NVIDIA's CUDA plugins say

    layer.forward = broken
    try:
        with pytest.raises(ComFaceInputError, match=r"(?s)synthesis_dtype='bfloat16'.*BFloat16.*use --synthesis_dtype "
                                                    r"float16"):
            bf16.render(ids, attrs, alphas)
    finally:
        del layer.forward
    assert _unused_hooks(G) == 0 and not torch.is_autocast_enabled("cpu")  # also when a layer raised

    with pytest.warns(UserWarning, match="no fast float16"):
        fp16 = make("float16")
    assert torch.equal(fp16.render(ids, attrs, alphas), full)


def test_a_layer_that_checks_its_own_precision_refuses_bfloat16_clearly():
    """StyleGAN3's layers hold the fp16 switch themselves and assert their output type inside (a stand-in here, as
    NVIDIA's StyleGAN3 code is not in ../shared): bfloat16 is refused up front, naming float16 and float32."""

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.use_fp16 = False
            self.weight = torch.nn.Parameter(torch.randn(3, 4, 1, 1))

        def forward(self, x, w, noise_mode="random", force_fp32=False):
            return torch.nn.functional.conv2d(x.float(), self.weight)

    class Synthesis(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = Layer()

        def forward(self, ws, **layer_kwargs):
            return self.layer(ws[:, :4, None, None].expand(-1, -1, 8, 8), ws, **layer_kwargs)

    G = types.SimpleNamespace(z_dim=4, mapping=None, synthesis=Synthesis())
    dirs = {"a": np.eye(4, dtype=np.float32)[0]}
    with pytest.raises(ComFaceInputError, match=r"cannot run in bfloat16.*float16.*float32"):
        LatentEditGenerator(G, dirs, latent_space="z", synthesis_dtype="bfloat16")
    assert LatentEditGenerator(G, dirs, latent_space="z")._synthesis_kwargs["force_fp32"] is True


# ------------------------------------------------------------------------------------------------ no mapping network
class IdentityMappingGenerator(torch.nn.Module):
    """A generator without a mapping network (a DCGAN's shape): ``synthesis(z)``, ``mapping = None``."""

    def __init__(self, z_dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.img_resolution, self.mapping = z_dim, 32, None
        self.synthesis = torch.nn.Sequential(torch.nn.Linear(z_dim, 3 * 8 * 8), torch.nn.Tanh(),
                                             torch.nn.Unflatten(1, (3, 8, 8)), torch.nn.Upsample(scale_factor=4))


def make_identity_mapping_generator(checkpoint=None, z_dim: int = 16, seed: int = 0):
    return IdentityMappingGenerator(z_dim, seed).eval().requires_grad_(False)


def test_z_edits_work_without_a_mapping_network():
    G = make_identity_mapping_generator()
    dirs = unit_directions(["age", "smile"], w_dim=16, seed=2)
    gen = LatentEditGenerator(G, dirs, latent_space="z", identity_cache_size=0)
    from comface_hf.synthesis.latent_edit import identity_z

    ids, attrs, alphas = torch.tensor([1, 9]), torch.tensor([0, 1]), torch.tensor([3.0, -2.0])
    z = identity_z(0, ids.numpy(), 16)
    expected = z + alphas[:, None] * torch.from_numpy(np.concatenate([dirs["age"], dirs["smile"]]))
    assert torch.allclose(gen.latents(ids, attrs, alphas), expected, atol=1e-6)
    assert torch.allclose(gen.render(ids, attrs, alphas), (G.synthesis(expected) + 1) / 2, atol=1e-6)
    assert gen.describe()["mapping_network"] is False and gen.describe()["w_dim"] == 16
    assert load_generator("tests.test_stylegan_nvidia:make_identity_mapping_generator", trust_code=True).mapping is None
    with pytest.raises(ValueError, match=r"truncation_psi=0.7 needs .*w_avg"):
        LatentEditGenerator(G, dirs, latent_space="z", truncation_psi=0.7)


# ------------------------------------------------------------------------------------------------ pkg_resources
GRADFIX_LIKE = """
from pkg_resources import {name}  # as NVIDIA's stylegan3 torch_utils/ops/conv2d_gradfix.py does
import torch
from tests.stylegan_fixture import Generator as _Generator

NEW_TORCH = {name}(torch.__version__) >= {name}("1.11.0a")


class Generator(_Generator):
    pass
"""


@pytest.fixture
def own_nvidia_modules():
    """Whatever torch_utils / dnnlib modules a test imports are dropped afterwards and the earlier ones put back."""
    saved = _nvidia_modules()
    for name in saved:
        del sys.modules[name]
    yield
    for name in _nvidia_modules():
        del sys.modules[name]
    sys.modules.update(saved)


def _stand_in_pickle(tmp_path, monkeypatch, name):
    """A pickle whose class lives in a stand-in torch_utils module importing ``name`` from pkg_resources."""
    from packaging.version import parse

    code = tmp_path / f"code_{name}"
    (code / "torch_utils").mkdir(parents=True)
    (code / "torch_utils" / "__init__.py").write_text("")
    (code / "dnnlib").mkdir()
    (code / "dnnlib" / "__init__.py").write_text("")
    (code / "torch_utils" / "gradfix_like.py").write_text(textwrap.dedent(GRADFIX_LIKE.format(name=name)))
    monkeypatch.syspath_prepend(str(code))
    fake = types.ModuleType("pkg_resources")
    setattr(fake, name, parse)
    monkeypatch.setitem(sys.modules, "pkg_resources", fake)  # only to pickle the object
    from torch_utils.gradfix_like import Generator

    path = tmp_path / f"{name}.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Generator()}))
    for module in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib")]:
        del sys.modules[module]  # so that unpickling imports the module again
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # setuptools >= 82: no pkg_resources at all
    return path


def test_nvidia_code_importing_pkg_resources_loads_under_todays_setuptools(tmp_path, monkeypatch, own_nvidia_modules):
    path = _stand_in_pickle(tmp_path, monkeypatch, "parse_version")
    with pytest.raises(ImportError):
        import pkg_resources  # noqa: F401
    G = load_nvidia_pickle(path)
    assert sys.modules["torch_utils.gradfix_like"].NEW_TORCH is True and G.z_dim == 32
    assert sys.modules["pkg_resources"] is None  # the stand-in is gone again: other code still sees no pkg_resources


def test_other_pkg_resources_needs_say_the_exact_fix(tmp_path, monkeypatch, own_nvidia_modules):
    path = _stand_in_pickle(tmp_path, monkeypatch, "require")
    with pytest.raises(ComFaceInputError, match=r'pkg_resources.*Fix: .*pip install "setuptools<82"'):
        load_nvidia_pickle(path)


# ------------------------------------------------------------------------------------------------ the trainer
def trainer_args(tmp_path, network_path, out, extra=()):
    w_dirs = tmp_path / "w_dirs"
    w_dirs.mkdir(exist_ok=True)
    for name, v in unit_directions(["Bald", "Eyeglasses"], w_dim=SMALL["w_dim"], seed=4).items():
        np.save(w_dirs / f"{name}.npy", v)
    z_dirs = tmp_path / "z16_dirs"
    z_dirs.mkdir(exist_ok=True)
    for name, v in unit_directions(["Bangs"], w_dim=16, seed=5).items():
        np.save(z_dirs / f"boundary_{name}.npy", v)
    spec = [{"label": "stylegan2-z", "checkpoint": str(network_path), "directions_dir": str(Z_BOUNDARIES),
             "attributes": "weight,age,smile", "latent_space": "z", "truncation_psi": 0.7},
            {"label": "stylegan2-w", "checkpoint": str(network_path), "directions_dir": str(w_dirs),
             "latent_space": "w", "seed": 1},
            {"label": "no-mapping", "loader": "tests.test_stylegan_nvidia:make_identity_mapping_generator",
             "directions_dir": str(z_dirs), "latent_space": "z"}]
    (tmp_path / "generators.json").write_text(json.dumps(spec))
    return ["--generators_file", str(tmp_path / "generators.json"), "--backbone", "test_resnet", "--image_size", "32",
            "--num_identities", "40", "--projection_hidden_size", "32", "--projection_dim", "16",
            "--global_batch_size", "8", "--samples_per_epoch", "16", "--num_epochs", "2", "--validation_pairs", "8",
            "--num_workers", "0", "--report_to", "none", "--logging_steps", "1", "--checkpointing_steps", "2",
            "--synthesis_dtype", "bfloat16", "--trust_loader_code", "--output_dir", str(out), "--debug_dump_dir",
            str(out / "dump"), *extra]


def test_nvidia_pickle_streams_z_and_w_edits_in_bfloat16_and_resumes_exactly(tmp_path, network, nvidia_code):
    from training.pretrain import main

    path, _ = network
    reference = tmp_path / "reference"
    main(trainer_args(tmp_path, path, reference))
    ref = json.loads((reference / "dump" / "rank0.json").read_text())
    config = json.loads((reference / "model" / "config.json").read_text())
    z_gen, w_gen, plain = config["pretraining_generators"]
    assert plain["mapping_network"] is False and plain["directions"] == "z" and plain["attributes"] == ["Bangs"]
    assert plain["generator_class"] == "tests.test_stylegan_nvidia.IdentityMappingGenerator"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for d in (z_gen, w_gen):
        assert d["generator_class"] == "training.networks.Generator"
        assert d["checkpoint"] == path.name and d["checkpoint_sha256"] == digest
        assert d["synthesis_dtype"] == "bfloat16" and "force_fp32" in d["synthesis_precision"]
    assert z_gen["latent_space"] == "z" and z_gen["directions"] == "z" and z_gen["truncation_psi"] == 0.7
    assert z_gen["attribute_sources"] == {"weight": "Chubby", "age": "-Young", "smile": "Smiling"}
    assert w_gen["latent_space"] == "w" and w_gen["directions"] == "W" and w_gen["attributes"] == ["Bald", "Eyeglasses"]
    card = (reference / "model" / "README.md").read_text()
    assert "training.networks.Generator" in card and digest in card and "Decorator" not in card
    assert "z + alpha * n, then the mapping network" in card and "age = -Young" in card

    stopped = tmp_path / "stopped"
    main(trainer_args(tmp_path, path, stopped, ["--max_steps", "2"]))
    main(trainer_args(tmp_path, path, stopped, ["--resume_from_checkpoint", "latest"]))
    got = json.loads((stopped / "dump" / "rank0.json").read_text())
    assert got["pairs"][0] == ref["pairs"][2] != ref["pairs"][0]  # resumed at step 3 (not restarted), same pairs
    assert got["weights_sha256"] == ref["weights_sha256"]


def test_the_trainer_refuses_to_guess_the_latent_space(tmp_path, network, nvidia_code, capsys):
    from training.pretrain import main

    args = ["--generator", "latent-edit", "--generator_checkpoint", str(network[0]), "--directions_dir",
            str(Z_BOUNDARIES), "--attributes", "age,Male", "--backbone", "test_resnet", "--image_size", "32",
            "--report_to", "none",
            "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ComFaceInputError, match=r"say which latent space.*--latent_space z"):
        main(args)
    with pytest.raises(ValueError, match=r"size 512 .*latent_space 'z'"):
        main(args + ["--latent_space", "w"])
    (tmp_path / "config.json").write_text(json.dumps({"trust_loader_code": True}))
    with pytest.raises(SystemExit):  # the opt-in to run a file's code cannot come from a file
        main(args + ["--latent_space", "z", "--config_file", str(tmp_path / "config.json")])
    assert "only by --trust_loader_code on the command line" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model").exists()

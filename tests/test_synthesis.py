"""Properties of the synthetic face generators (comface_hf.synthesis)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from comface_hf.synthesis import (
    ALL_ATTRIBUTE_NAMES,
    ATTRIBUTE_NAMES,
    EXPRESSION_ATTRIBUTES,
    EmbeddedFaceGenerator,
    LatentEditGenerator,
    alpha_grid,
    get_generator,
    make_sample_sheet,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen() -> EmbeddedFaceGenerator:
    return EmbeddedFaceGenerator(image_size=48, seed=0)


def test_api_basics(gen: EmbeddedFaceGenerator) -> None:
    assert gen.name == "comface-embedded" and gen.version == "2.1.0"
    assert len(gen.attribute_names) >= 40 and {"weight", "age", "smile"} <= set(gen.attribute_names)
    # the paper's 43 keep their indices; the 4 expression attributes follow them
    assert gen.attribute_names == ALL_ATTRIBUTE_NAMES == ATTRIBUTE_NAMES + EXPRESSION_ATTRIBUTES and len(ATTRIBUTE_NAMES) == 43
    old = EmbeddedFaceGenerator(image_size=32, renderer_version="1.1.0")
    assert old.version == "1.1.0" and old.attribute_names == ATTRIBUTE_NAMES
    g = alpha_grid()
    assert len(g) == 101 and g[0] == -5.0 and g[-1] == 5.0 and g[50] == 0.0
    assert torch.allclose(g, torch.round(g * 10) / 10)
    x = gen.render(torch.tensor([0, 1]), torch.tensor([0, 5]), torch.tensor([0.0, -3.2]))
    assert x.shape == (2, 3, 48, 48) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert isinstance(get_generator("embedded", image_size=32), EmbeddedFaceGenerator)


def test_determinism_any_batch(gen: EmbeddedFaceGenerator) -> None:
    ids = torch.tensor([7, 3, 7, 11, 5])
    attrs = torch.tensor([2, 0, 2, 40, 15])
    alphas = torch.tensor([1.3, -5.0, 1.3, 4.9, 0.7])
    a = gen.render(ids, attrs, alphas)
    assert torch.equal(a[0], a[2])  # same triple, different batch position
    b = gen.render(ids.flip(0), attrs.flip(0), alphas.flip(0)).flip(0)
    assert torch.equal(a, b)
    for i in range(len(ids)):  # alone in a batch of one
        assert torch.equal(a[i], gen.render(ids[i:i + 1], attrs[i:i + 1], alphas[i:i + 1])[0])
    # embedded in a big batch of other identities
    big = gen.render(torch.cat([torch.arange(100, 160), ids]), torch.cat([torch.arange(60) % 43, attrs]),
                     torch.cat([torch.linspace(-5, 5, 60), alphas]))
    assert torch.equal(big[60:], a)


def test_determinism_other_process(gen: EmbeddedFaceGenerator, tmp_path: Path) -> None:
    out = tmp_path / "x.pt"
    code = (
        "import torch; from comface_hf.synthesis import EmbeddedFaceGenerator as G; "
        "g = G(image_size=48, seed=0); "
        f"torch.save(g.render(torch.tensor([3, 9]), torch.tensor([1, 30]), torch.tensor([2.5, -4.0])), r'{out}')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                   "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    here = gen.render(torch.tensor([9, 3]), torch.tensor([30, 1]), torch.tensor([-4.0, 2.5])).flip(0)
    assert torch.equal(torch.load(out), here)


def test_sqrt_is_correctly_rounded() -> None:
    """The renderer's sqrt equals IEEE float32 sqrt (numpy), which compiled kernels also compute."""
    from comface_hf.synthesis.renderer import _sqrt

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(50_000, generator=g), torch.rand(50_000, generator=g) * 1e4, torch.tensor([0.0, 1.0, 2.0])])
    assert torch.equal(_sqrt(x), torch.from_numpy(np.sqrt(x.numpy())))


def test_bilinear_resize_matches_interpolate() -> None:
    from comface_hf.synthesis.renderer import _resize_bilinear, bilinear_taps

    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    taps = bilinear_taps(32, 48)
    ref = torch.nn.functional.interpolate(img, size=(48, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(_resize_bilinear(img, taps, taps), ref, atol=1e-5)


def test_compiled_renderer_gives_the_same_pixels() -> None:
    """compile=True is a speed choice only: bit-identical to eager, for every attribute, with a resize."""
    eager = EmbeddedFaceGenerator(image_size=48, internal_size=32, seed=0)
    compiled = EmbeddedFaceGenerator(image_size=48, internal_size=32, seed=0, compile=True)
    n = len(eager.attribute_names)
    ids = torch.arange(2 * n) % 5
    attrs = torch.arange(2 * n) % n
    alphas = torch.round(torch.linspace(-5, 5, 2 * n) * 10) / 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would warn: this test must compile
        x = compiled.render(ids, attrs, alphas)
    assert compiled._compiled is not None
    assert torch.equal(x, eager.render(ids, attrs, alphas))
    assert torch.equal(compiled.render(ids[:3], attrs[:3], alphas[:3]), x[:3])  # padded short batch
    copy = pickle.loads(pickle.dumps(compiled))  # as a DataLoader worker under "spawn" receives it
    assert copy.compile and torch.equal(copy.render(ids[:3], attrs[:3], alphas[:3]), x[:3])


def test_compile_failure_falls_back_to_eager() -> None:
    gen = EmbeddedFaceGenerator(image_size=32, seed=0, compile=True)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Compiler: cc is not found")

    gen._compiled = no_compiler
    triple = torch.tensor([1, 2]), torch.tensor([0, 3]), torch.tensor([0.5, -2.0])
    with pytest.warns(UserWarning, match="rendering eagerly.*cc is not found|cc is not found.*rendering eagerly"):
        x = gen.render(*triple)
    assert gen._compiled is None
    assert torch.equal(x, EmbeddedFaceGenerator(image_size=32, seed=0).render(*triple))


def test_neutral_face_same_for_every_attribute(gen: EmbeddedFaceGenerator) -> None:
    n = len(gen.attribute_names)
    for ident in (0, 4):
        x = gen.render(torch.full((n,), ident), torch.arange(n), torch.zeros(n))
        assert torch.equal(x, x[:1].expand_as(x))


def test_renderer_1_1_0_is_reproduced_pixel_for_pixel() -> None:
    """renderer_version="1.1.0" renders exactly what the 1.1.0 renderer rendered (hash taken from it, before 2.0.0)."""
    import hashlib

    g = EmbeddedFaceGenerator(image_size=48, seed=0, renderer_version="1.1.0")
    x = g.render(torch.tensor([0, 7, 123, 9999]), torch.tensor([0, 2, 15, 42]), torch.tensor([0.0, 5.0, -2.3, 4.1]))
    digest = hashlib.sha256((x * 255).round().byte().numpy().tobytes()).hexdigest()
    assert digest == "850e4b41d74b1d25ca57f94848b01735b7f570f8f3dad24bca4093ac73fb9f9c"


def test_renderer_2_0_0_is_reproduced_pixel_for_pixel() -> None:
    """renderer_version="2.0.0" renders what 2.0.0 rendered before 2.1.0 added ``teeth_show`` (hash taken from it)."""
    import hashlib

    g = EmbeddedFaceGenerator(image_size=48, seed=0, renderer_version="2.0.0")
    x = g.render(torch.tensor([0, 7, 123, 9999, 5]), torch.tensor([0, 2, 15, 42, 46]), torch.tensor([0.0, 5.0, -2.3, 4.1, 3.0]))
    digest = hashlib.sha256((x * 255).round().byte().numpy().tobytes()).hexdigest()
    assert digest == "3153ffe490d58de43aac050a102dfcd4bcc493f39359f1b392884bed3f5631e4"


@pytest.mark.parametrize("version", ["2.1.0", "1.1.0"])
def test_renderer_keeps_every_tensor_on_the_params_device(version: str) -> None:
    """A constant made on the CPU breaks rendering on a GPU (found on the first H100 run). Tensors on the ``meta``
    device refuse to mix with CPU tensors the same way, so rendering there finds such a constant without a GPU."""
    g = EmbeddedFaceGenerator(image_size=48, renderer_version=version)
    n = len(g.attribute_names)
    params = g.edited_params(torch.arange(n) % 5, torch.arange(n), torch.linspace(-5, 5, n)).to("meta")
    out = g._impl.render_images(params, 48)
    assert out.device.type == "meta" and tuple(out.shape) == (n, 3, 48, 48)


def test_every_attribute_changes_monotonically_both_signs() -> None:
    """Pixel distance from the neutral face grows with |alpha| (Spearman >= 0.9), both signs, all 47 attributes."""
    g = EmbeddedFaceGenerator(image_size=32, seed=0)
    mags = torch.arange(1, 11) * 0.5  # 0.5 .. 5.0
    al = torch.cat([torch.zeros(1), mags, -mags])
    idents = (0, 1, 2)
    failures = []
    for a, name in enumerate(g.attribute_names):
        ids = torch.tensor(idents).repeat_interleave(len(al))
        x = g.render(ids, torch.full((len(ids),), a), al.repeat(len(idents)))
        x = x.view(len(idents), len(al), -1)
        for sign, sl in ((1.0, slice(1, 11)), (-1.0, slice(11, 21))):
            d = (x[:, sl] - x[:, :1]).abs().sum(-1).numpy()  # [identities, magnitudes]
            assert (d[:, -1] > 0).all(), f"{name} alpha={sign * 5} leaves some identity unchanged"
            rho = np.mean([spearmanr(mags.numpy(), row)[0] for row in d])
            if not rho >= 0.9:
                failures.append((name, sign, round(float(rho), 3), [round(float(v), 1) for v in d[0]]))
    assert not failures, f"non-monotone attributes (name, sign, mean spearman, distances id 0): {failures}"


def test_identity_is_kept(gen: EmbeddedFaceGenerator) -> None:
    rng = np.random.RandomState(0)
    n = 64
    ids = torch.from_numpy(rng.randint(0, 10_000, n))
    attrs = torch.from_numpy(rng.randint(0, len(gen.attribute_names), n))
    a1 = torch.from_numpy(np.round(rng.uniform(-3, 3, n), 1)).float()
    a2 = (a1 + torch.from_numpy(np.round(rng.uniform(-2, 2, n), 1)).float()).clamp(-5, 5)
    x1, x2 = gen.render(ids, attrs, a1), gen.render(ids, attrs, a2)
    other = gen.render(ids + 10_000, attrs, a1)
    intra = (x1 - x2).abs().mean().item()
    inter = (x1 - other).abs().mean().item()
    assert inter > 2 * intra, (inter, intra)


def test_bad_inputs(gen: EmbeddedFaceGenerator) -> None:
    with pytest.raises((KeyError, ValueError)) as e:
        gen.attribute_index("Big_Ears")
    assert "weight" in str(e.value) and "Young" in str(e.value)
    with pytest.raises(ValueError, match=r"\[-5, 5\]"):
        gen.render(torch.tensor([0]), torch.tensor([0]), torch.tensor([5.5]))
    with pytest.raises(IndexError, match="0..46"):
        gen.render(torch.tensor([0]), torch.tensor([47]), torch.tensor([0.0]))
    with pytest.raises(IndexError, match="0..42"):
        EmbeddedFaceGenerator(image_size=32, renderer_version="1.1.0").render(torch.tensor([0]), torch.tensor([43]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="renderer_version"):
        EmbeddedFaceGenerator(image_size=32, renderer_version="3")
    with pytest.raises(ValueError, match="same length"):
        gen.render(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="minimum is 32"):
        EmbeddedFaceGenerator(image_size=16)
    with pytest.raises(ValueError, match="Unknown generator"):
        get_generator("stylegan9")


def test_sample_sheet() -> None:
    img = make_sample_sheet(["smile", "weight"], identities=2, alphas=(-5, 0, 5), image_size=32)
    assert img.width > 3 * 32 and img.height >= 4 * 32


# ------------------------------- latent-edit generator ----------------------------------
class TinyG(torch.nn.Module):
    """A tiny StyleGAN-like generator: mapping(z, c) -> [B, num_ws, w_dim], synthesis(w) -> [-1, 1]."""

    def __init__(self, z_dim: int = 8, w_dim: int = 6, num_ws: int = 3) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = z_dim, w_dim, 0, num_ws
        torch.manual_seed(0)
        self.map = torch.nn.Linear(z_dim, w_dim)
        self.syn = torch.nn.Linear(w_dim * num_ws, 3 * 8 * 8)
        self.last_w = None

    def mapping(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.map(z)[:, None, :].repeat(1, self.num_ws, 1)

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        self.last_w = w.clone()
        return torch.tanh(self.syn(w.flatten(1))).view(-1, 3, 8, 8)


def test_latent_edit_uses_w_plus_alpha_n(tmp_path: Path) -> None:
    G = TinyG()
    rng = np.random.RandomState(1)
    for name in ("weight", "age", "smile"):
        np.save(tmp_path / f"{name}.npy", rng.randn(1, 6).astype(np.float32))
    gen = LatentEditGenerator.from_import_path(
        "tests.test_synthesis:TinyG", directions_dir=tmp_path, attribute_names=["weight", "age", "smile"], image_size=32,
        normalize_directions=False)
    ids, attrs, al = torch.tensor([4, 4, 9]), torch.tensor([0, 2, 1]), torch.tensor([0.0, 2.5, -1.0])
    x = gen.render(ids, attrs, al)
    assert x.shape == (3, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    w = gen.latents(ids, attrs, torch.zeros(3))
    n = torch.from_numpy(np.stack([np.load(tmp_path / f"{a}.npy").reshape(-1) for a in ("weight", "smile", "age")]))
    expected = w + al[:, None, None] * n[:, None, :]
    assert torch.allclose(gen.G.last_w, expected, atol=1e-6)
    assert torch.equal(gen.G.last_w[0], w[0])  # alpha 0 leaves w untouched
    # deterministic z per (seed, identity), independent of the batch (G's own matmuls may
    # differ in the last ulp between batch sizes, so compare latents exactly, pixels closely)
    from comface_hf.synthesis.latent_edit import identity_z

    assert torch.equal(identity_z(0, [9], 8)[0], identity_z(0, [4, 4, 9], 8)[2])
    assert torch.allclose(gen.latents(ids[2:], attrs[2:], al[2:])[0], gen.latents(ids, attrs, al)[2], atol=1e-6)
    assert torch.allclose(gen.render(ids[2:], attrs[2:], al[2:])[0], x[2], atol=1e-5)
    lg = LatentEditGenerator(G, {"a": np.ones(6)}, seed=0, normalize_directions=False)
    assert lg.render(torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0])).shape == (1, 3, 8, 8)


def test_latent_edit_direction_size_mismatch() -> None:
    with pytest.raises(ValueError, match=r"size 5 .*latent size \(w_dim\) is 6"):
        LatentEditGenerator(TinyG(), {"weight": np.zeros((1, 5))})

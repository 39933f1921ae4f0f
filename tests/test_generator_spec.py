"""One generator spec (issue 26): saved with the model, rebuilt by calibration, kept by generators-file members; and the
image processor as the one input normalisation of training and inference."""

import json
import shutil

import numpy as np
import pytest
import torch

from comface_hf import (
    ComFaceConfig,
    ComFaceImageProcessor,
    ComFaceModel,
    FaceCycleConfig,
)
from comface_hf.synthesis.spec import (
    GeneratorSpec,
    build_generator,
    embedded_spec_for,
    specs_from_config,
)

TINY = ["--backbone", "test_resnet", "--image_size", "32", "--num_identities", "40", "--attributes", "weight,age,smile",
        "--projection_hidden_size", "32", "--projection_dim", "16", "--global_batch_size", "8",
        "--samples_per_epoch", "16", "--num_epochs", "1", "--validation_pairs", "8", "--report_to", "none",
        "--num_workers", "0"]


def test_spec_round_trips_and_old_configs_load_without_one(tmp_path):
    spec = GeneratorSpec(generator="latent-edit", label="dc", image_size=48, seed=3, renderer_version="2.0.0",
                         craniofacial_growth=False, photographic=0.5, kwargs={"seed": 1}, latent_space="z")
    assert GeneratorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert GeneratorSpec.from_dict({**spec.to_dict(), "added_later": 1}) == spec  # newer keys are ignored
    assert specs_from_config(None) == [] and specs_from_config([spec.to_dict()]) == [spec]

    ComFaceModel(ComFaceConfig(backbone="test_resnet", image_size=32, projection_hidden_size=16)).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("generator_spec", None)  # a folder saved before the field existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert ComFaceConfig.from_pretrained(tmp_path).generator_spec is None
    assert FaceCycleConfig(image_size=32).generator_spec is None


def test_embedded_spec_builds_the_renderer_it_names():
    spec = GeneratorSpec(image_size=32, seed=5, renderer_version="2.0.0", craniofacial_growth=False)
    g = build_generator(spec)
    assert (g.version, g.craniofacial_growth, g.image_size) == ("2.0.0", False, 32)
    # A latent-edit run is calibrated on the embedded renderer at its seed and version.
    fallback = embedded_spec_for([GeneratorSpec(generator="latent-edit", seed=7, renderer_version="2.0.0")], 40)
    assert (fallback.generator, fallback.seed, fallback.renderer_version, fallback.image_size) == ("embedded", 7, "2.0.0", 40)


def test_embedded_member_of_a_generators_file_keeps_the_run_renderer(tmp_path):
    from comface_hf.pretraining.generators import (
        build_stream_generator,
        generator_specs,
    )
    from training.pretrain import parse_arguments

    (tmp_path / "g.json").write_text(json.dumps([{"generator": "embedded", "attributes": "age,weight", "seed": 4}]))
    args = parse_arguments(TINY + ["--generators_file", str(tmp_path / "g.json"), "--renderer_version", "2.0.0",
                                   "--craniofacial_growth", "False"])
    (spec,) = generator_specs(args)
    assert (spec.generator, spec.renderer_version, spec.craniofacial_growth, spec.seed, spec.label) == (
        "embedded", "2.0.0", False, 4, "generator_0")
    mixture = build_stream_generator(args, torch.device("cpu"))
    (member,) = mixture.members
    assert (member.generator.version, member.generator.craniofacial_growth) == ("2.0.0", False)
    assert member.attribute_names == ["age", "weight"]


def test_saved_model_carries_the_spec_and_calibrate_rebuilds_it_without_asking(tmp_path, capsys):
    from comface_hf.monitoring.calibration import _calibration_spec
    from comface_hf.monitoring.cli import main as comface
    from training.pretrain import main

    out = tmp_path / "run"
    main(TINY + ["--output_dir", str(out), "--renderer_version", "2.0.0", "--craniofacial_growth", "False",
                 "--generator_seed", "3"])
    config = json.loads((out / "model" / "config.json").read_text())
    spec = GeneratorSpec.from_dict(config["generator_spec"])
    assert (spec.generator, spec.renderer_version, spec.craniofacial_growth, spec.seed, spec.image_size) == (
        "embedded", "2.0.0", False, 3, 32)
    assert "embedded renderer 2.0.0 without craniofacial growth, generator seed 3" in config["same_person_calibration"]

    model = ComFaceModel.from_pretrained(out / "model")
    rebuilt = _calibration_spec(model, None, None, None)
    assert rebuilt == embedded_spec_for([spec], 32)
    # `comface calibrate` with no renderer option: the same generator, hence the same threshold pretraining stored.
    figures = comface(["calibrate", str(out / "model"), "--out", str(tmp_path / "copy"), "--num-identities", "40"])
    capsys.readouterr()
    again = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert again["same_person_calibration"] == config["same_person_calibration"]
    assert again["same_person_threshold"] == config["same_person_threshold"]
    assert figures["threshold"] == pytest.approx(config["same_person_threshold"], abs=1e-6)
    shutil.rmtree(tmp_path / "copy")


def test_to_model_input_is_the_processor_normalisation():
    from comface_hf.pretraining.sources import to_model_input

    processor = ComFaceImageProcessor(crop_size=32)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=g)
    trained_on = to_model_input(images, processor)
    assert torch.equal(trained_on, (images - 0.5) / 0.5)  # what pretraining fed before (bit for bit)
    hwc = [image.permute(1, 2, 0).numpy() for image in images]  # float photos as arrays, already [0, 1]
    seen = processor(hwc, do_rescale=False, align="none", do_resize=False, do_center_crop=False,
                     return_tensors="pt")["pixel_values"]
    assert torch.equal(seen, trained_on)
    as_uint8 = (images * 255).round().to(torch.uint8)  # a photo's path: rescale and normalise fused by the backend
    from_photo = processor(list(as_uint8), align="none", do_resize=False, do_center_crop=False,
                           return_tensors="pt")["pixel_values"]
    assert torch.allclose(from_photo, to_model_input(as_uint8.float() / 255, processor), atol=1e-6)


def test_synthetic_task_renders_with_the_given_spec():
    from comface_hf.transfer.synthetic_task import make_synthetic_task

    spec = GeneratorSpec(seed=0, renderer_version="2.0.0")
    kwargs = dict(num_subjects=2, images_per_subject=2, image_size=32, seed=0, nuisance=0.0)
    by_spec = make_synthetic_task("smile", generator_spec=spec.to_dict(), **kwargs)
    by_hand = make_synthetic_task("smile", generator=build_generator(GeneratorSpec(image_size=32, renderer_version="2.0.0")),
                                  **kwargs)
    default = make_synthetic_task("smile", **kwargs)  # renderer 2.1.0: its broader smile differs from 2.0.0's
    pixels = [np.stack([np.asarray(im) for im in d["image"]]) for d in (by_spec, by_hand, default)]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])


def test_the_script_does_not_branch_on_the_method():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "training" / "pretrain.py").read_text()
    assert "args.method ==" not in source and "isinstance(unwrapped" not in source


def test_synthetic_task_loader_passes_the_models_spec_and_keeps_the_task_seed():
    """load_task_dataset(synthetic_generator_spec=...) renders with the model's renderer version; the identities are
    still the task seed's (a model trained at generator seed 5 does not change which faces a task draws)."""
    from comface_hf.transfer.tasks import load_task_dataset

    kwargs = dict(image_size=32, synthetic_subjects=2, synthetic_images_per_subject=2, synthetic_nuisance=0.0)
    old = load_task_dataset("synthetic_smile", synthetic_generator_spec={"generator": "embedded", "seed": 5,
                                                                          "renderer_version": "2.0.0"}, **kwargs)
    by_hand = load_task_dataset("synthetic_smile", synthetic_generator=build_generator(
        GeneratorSpec(image_size=32, renderer_version="2.0.0")), **kwargs)
    default = load_task_dataset("synthetic_smile", **kwargs)
    pixels = [np.stack([np.asarray(im) for im in d.dataset["image"]]) for d in (old, by_hand, default)]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])

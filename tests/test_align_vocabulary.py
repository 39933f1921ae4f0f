"""One alignment function (``align_face``) and one vocabulary (``ALIGN_MODES``) for every path into the face frame: the
image processor, the comparer (``comface compare/track``), the pipeline, the transfer protocol's row transform and the
dataset builders; old spellings still work and name the new one. Given landmarks and a fake detector stand in for dlib
(the real detector is tested in test_face_alignment.py)."""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf import (
    ComFaceConfig,
    ComFaceImageProcessor,
    ComFaceModel,
    face_alignment,
)
from comface_hf.errors import NoFaceError
from comface_hf.face_alignment import (
    ALIGN_MODES,
    FaceAligner,
    FaceDetection,
    align_face,
)
from comface_hf.face_comparison import Comparison, FaceComparer, same_person_verdict

SIZE = 32
#: three_point landmarks (image-left eye, image-right eye, mouth) that put a plausible face frame on a 128 px image.
LANDMARKS = np.array([[48.0, 52.0], [80.0, 52.0], [64.0, 84.0]])


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model() -> ComFaceModel:
    torch.manual_seed(0)
    return ComFaceModel(ComFaceConfig(backbone="resnet18", image_size=SIZE, projection_hidden_size=16,
                                      projection_dim=8)).eval()


class FakeDetector:
    """Finds the face at ``LANDMARKS`` (or nothing), and counts its calls."""

    def __init__(self, found: bool = True):
        self.found, self.calls = found, 0

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        self.calls += 1
        return [FaceDetection(LANDMARKS.copy(), "three_point", (40.0, 40.0, 90.0, 90.0), 1.0)] if self.found else []


@pytest.fixture
def spy(monkeypatch):
    """Record every call of the one alignment function (callers look it up at call time)."""
    calls: list[str] = []
    real = face_alignment.align_face

    def recording(image, mode="auto", landmarks=None, **kwargs):
        calls.append(mode)
        return real(image, mode, landmarks, **kwargs)

    monkeypatch.setattr(face_alignment, "align_face", recording)
    return calls


# ------------------------------------------------------------------------------------------------ the function


def test_each_mode_means_one_thing(photo) -> None:
    finds, misses = FakeDetector(), FakeDetector(found=False)
    given = LANDMARKS + 4.0  # a different face than the detector's: shows which landmarks were used
    assert align_face(photo, "none", given, aligner=FaceAligner(SIZE, finds)) is None
    assert align_face(photo, "auto", given, aligner=FaceAligner(SIZE, finds)).source == "landmarks"
    assert align_face(photo, "auto", None, aligner=FaceAligner(SIZE, finds)).source == "detector"
    assert align_face(photo, "auto", None, aligner=FaceAligner(SIZE, misses)) is None  # used whole by the caller
    assert align_face(photo, "face", given, aligner=FaceAligner(SIZE, misses)).source == "landmarks"
    with pytest.raises(NoFaceError):
        align_face(photo, "face", None, aligner=FaceAligner(SIZE, misses))
    detected = align_face(photo, "detector", given, aligner=FaceAligner(SIZE, finds))
    np.testing.assert_allclose(detected.landmarks, LANDMARKS)  # given landmarks ignored
    with pytest.raises(NoFaceError, match="no landmarks given"):
        align_face(photo, "landmarks", None, aligner=FaceAligner(SIZE, finds))
    assert finds.calls == 2
    with pytest.raises(ValueError, match="align must be one of 'auto', 'face', 'landmarks', 'detector', 'none'"):
        align_face(photo, "sideways")


def test_one_vocabulary_everywhere() -> None:
    from comface_hf import image_processing_comface
    from comface_hf.monitoring.cli import CLI_ALIGN_MODES
    from comface_hf.transfer import ALIGN_MODES as transfer_modes
    from dataset_builders.base import LANDMARK_MODES

    assert image_processing_comface.ALIGN_MODES is ALIGN_MODES
    assert transfer_modes is ALIGN_MODES and LANDMARK_MODES is ALIGN_MODES
    assert set(CLI_ALIGN_MODES) == set(ALIGN_MODES) - {"landmarks"}  # a command line cannot give landmarks


# ------------------------------------------------------------------------------------------------ every caller uses it


def test_processor_aligns_through_align_face(spy, photo) -> None:
    processor = ComFaceImageProcessor(crop_size=SIZE)
    out = processor([photo], landmarks=[LANDMARKS], return_tensors="pt")
    assert spy == ["auto"] and out["aligned"].tolist() == [True]


def test_comparer_and_pipeline_align_through_align_face(spy, photo, model, tmp_path) -> None:
    comparer = FaceComparer(model, ComFaceImageProcessor(crop_size=SIZE))
    crop, face, _ = comparer.align_image(photo, landmarks=LANDMARKS)
    assert spy == ["face"] and face.source == "landmarks" and crop.size == (SIZE, SIZE)
    spy.clear()
    from comface_hf.pipeline_comface import FaceChangeEstimationPipeline

    pipe = FaceChangeEstimationPipeline(model=model, image_processor=ComFaceImageProcessor(crop_size=SIZE))
    result = pipe(photo, photo, align="none")
    assert spy == ["none", "none"] and result["faces"] == [{"source": "none"}] * 2


def test_transfer_rows_align_through_align_face(spy, photo) -> None:
    from comface_hf.transfer.inputs import RowTransform
    from comface_hf.transfer.models import ChangeModelSpec

    spec = ChangeModelSpec(None, SIZE, [0.5] * 3, [0.5] * 3, "scratch", "test")
    transform = RowTransform(spec)
    crop = transform.crop({"image": photo, "landmarks": LANDMARKS.tolist(), "landmark_scheme": "three_point"})
    whole = transform.crop({"image": photo, "landmarks": [], "landmark_scheme": ""})
    assert spy == ["landmarks", "none"] and crop.size == (SIZE, SIZE) and whole is photo
    expected = FaceAligner(SIZE, detector=None, skip_if_aligned=False).align(photo, LANDMARKS, "three_point").image
    assert np.array_equal(np.asarray(crop), np.asarray(expected))  # the same warp as before align_face


def test_builders_pick_landmarks_by_the_shared_rule(monkeypatch, tmp_path) -> None:
    from dataset_builders.fgnet import Fgnet
    from tests.fixtures_downstream import write_fgnet_fixture

    modes: list[str] = []
    real = face_alignment.landmark_source
    monkeypatch.setattr(face_alignment, "landmark_source", lambda mode, has: modes.append(mode) or real(mode, has))
    data = write_fgnet_fixture(tmp_path / "data")
    Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()
    assert modes and set(modes) == {"none"}


# ------------------------------------------------------------------------------------------------ old spellings


def test_old_spellings_warn_and_mean_the_same(model, photo, tmp_path) -> None:
    with pytest.warns(DeprecationWarning, match="align=True is deprecated: use align='face'"):
        assert ComFaceImageProcessor(crop_size=SIZE, align=True).align == "face"
    with pytest.warns(DeprecationWarning, match="align=False is deprecated: use align='none'"):
        old = ComFaceImageProcessor(crop_size=SIZE)([photo], align=False, return_tensors="pt")["pixel_values"]
    new = ComFaceImageProcessor(crop_size=SIZE)([photo], align="none", return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(old, new)
    with pytest.warns(DeprecationWarning, match="use align='none'"):
        assert FaceComparer(model, align=False).align == "none"
    with pytest.warns(DeprecationWarning, match="use align='face'"):
        assert FaceComparer(model, align=True).align == "face"
    from dataset_builders.fgnet import Fgnet

    with pytest.warns(DeprecationWarning, match="landmarks='dataset' is deprecated: use landmarks='landmarks'"):
        builder = Fgnet(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), landmarks="dataset")
    assert builder.config.landmarks == "landmarks"
    with pytest.raises(ValueError, match="is not one of auto, face, landmarks, detector, none"):
        Fgnet(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), landmarks="eyes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new words are silent
        ComFaceImageProcessor(crop_size=SIZE, align="detector")
        FaceComparer(model, align="auto")


def test_cli_no_align_still_works_and_names_align_none(capsys) -> None:
    from comface_hf.monitoring.cli import align_from_args, build_parser

    parser = build_parser()
    args = parser.parse_args(["compare", "a.jpg", "b.jpg", "--no-align"])
    assert align_from_args(args) == "none"
    assert "--no-align is deprecated; use --align none" in capsys.readouterr().err
    assert align_from_args(parser.parse_args(["track", "photos", "--align", "auto"])) == "auto"
    assert align_from_args(parser.parse_args(["compare", "a.jpg", "b.jpg"])) == "face"
    with pytest.raises(SystemExit):
        align_from_args(argparse.Namespace(no_align=True, align="detector"))


# ------------------------------------------------------------------------------------------------ the verdict


def _comparison(**kwargs) -> Comparison:
    return Comparison(before="a.jpg", after="b.jpg", change=0.1, distance=0.2, units="alpha units", signed=True,
                      **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"similarity": 0.9, "same_person": True, "threshold": 0.5, "false_accept_rate": 0.01, "false_reject_rate": 0.05},
    {"similarity": 0.1, "same_person": False, "threshold": 0.5},
    {"similarity": 0.3},
    {},
    {"identity_check": "dlib", "identity_distance": 0.7, "same_person": False, "threshold": 0.6},
    {"identity_check": "dlib"},
])
def test_one_same_person_verdict_for_the_cli_and_the_demo_page(kwargs) -> None:
    spec = importlib.util.spec_from_file_location("comface_app", Path(__file__).resolve().parents[1] / "app.py")
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("the demo page needs gradio")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    result = _comparison(**kwargs)
    assert f"same person: {same_person_verdict(result)}" in result.summary()
    assert f"**Same person:** {same_person_verdict(result, markdown=True)}" in app.comparison_markdown(result)
    if result.same_person is False:
        assert "different people" in same_person_verdict(result)

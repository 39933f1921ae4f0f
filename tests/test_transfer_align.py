"""``training/transfer.py --align`` and its clear errors: a tiny FG-NET-layout fixture made from scikit-image's
astronaut (no research database), a fake detector (the real one is tested in test_face_alignment.py), a test backbone
at 32 px."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf import face_alignment
from comface_hf.face_alignment import FaceAligner, FaceDetection
from comface_hf.transfer import (
    TransferSettings,
    build_change_model,
    load_task_dataset,
    row_transform,
    run_protocol,
)

SIZE = 32
SCALE = 0.25  # fixture photos are the astronaut at 128 px


@pytest.fixture(scope="module")
def astronaut_face():
    """The astronaut at 128 px and its 68 landmarks (dlib once, on the full-size photo)."""
    from skimage import data

    photo = data.astronaut()
    face = FaceAligner(size=96).align(photo)
    small = Image.fromarray(photo).resize((128, 128), Image.LANCZOS)
    return small, (face.landmarks + 0.5) * SCALE - 0.5, face.scheme


def _to_fgnet68(ibug: np.ndarray) -> np.ndarray:
    out = np.tile(ibug.mean(0), (68, 1))
    out[:15] = ibug[1:16]
    out[31], out[36] = ibug[36:42].mean(0), ibug[42:48].mean(0)
    out[48], out[54] = ibug[48], ibug[54]
    return out


class FakeDetector:
    """Returns the astronaut's landmarks shifted by the photo's offset (its top-left corner is drawn grey)."""

    cache_id = "fake-detector-v1"

    def __init__(self, landmarks, scheme):
        self.landmarks, self.scheme, self.calls = landmarks, scheme, 0

    def detect(self, image):
        self.calls += 1
        x0, y0 = self.landmarks.min(0)
        x1, y1 = self.landmarks.max(0)
        return [FaceDetection(self.landmarks.copy(), self.scheme, (x0, y0, x1, y1), 1.0)]


def _fgnet_fixture(folder: Path, small: Image.Image, landmarks: np.ndarray, subjects: int = 4) -> Path:
    images, points = folder / "images", folder / "points"
    images.mkdir(parents=True)
    points.mkdir(parents=True)
    fg = _to_fgnet68(landmarks)
    for s in range(subjects):
        for k, age in enumerate((5, 12, 20)):
            # Brightness varies with the age so the task is learnable at all; the geometry is the same.
            photo = Image.fromarray(np.clip(np.asarray(small, dtype=np.float32) * (0.6 + 0.02 * age), 0, 255)
                                    .astype(np.uint8))
            name = f"{s + 1:03d}A{age:02d}"
            photo.save(images / f"{name}.JPG", quality=95)
            lines = "\n".join(f"{x:.3f} {y:.3f}" for x, y in fg)
            (points / f"{name.lower()}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{lines}\n}}\n")
    return folder


@pytest.fixture
def fgnet(astronaut_face, tmp_path, monkeypatch):
    small, landmarks, scheme = astronaut_face
    detector = FakeDetector(landmarks, scheme)
    monkeypatch.setitem(face_alignment._DETECTORS, "dlib", detector)
    return _fgnet_fixture(tmp_path / "FGNET", small, landmarks), detector, tmp_path / "cache"


def test_align_modes_pick_the_landmarks_and_warp_once(fgnet, astronaut_face) -> None:
    folder, detector, cache = fgnet
    small, landmarks, scheme = astronaut_face
    spec = build_change_model("scratch", "linear", SIZE, "test_resnet")
    given = load_task_dataset("fgnet", str(folder), image_size=SIZE, cache_dir=str(cache), align="landmarks")
    assert detector.calls == 0 and given.align == "landmarks"
    assert set(given.dataset["landmark_source"]) == {"dataset"}
    detected = load_task_dataset("fgnet", str(folder), image_size=SIZE, cache_dir=str(cache), align="detector")
    # Once per distinct photo (3 brightness levels; detections are cached by content).
    assert detector.calls == 3 and set(detected.dataset["landmark_source"]) == {"detector"}
    whole = load_task_dataset("fgnet", str(folder), image_size=SIZE, cache_dir=str(cache), align="none")
    assert whole.dataset[0]["landmarks"] == []

    transform = row_transform(spec)
    processor = spec.image_processor()
    row = given.dataset[0]
    expected_crop = FaceAligner(size=SIZE, detector=None).align(
        row["image"], landmarks=row["landmarks"], scheme=row["landmark_scheme"]
    ).image
    expected = processor(expected_crop, align="none", return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(transform(row), expected)
    # Detected and given landmarks are the same face here: the same crop, up to the landmarks' float32 rounding.
    torch.testing.assert_close(transform(detected.dataset[0]), expected, atol=0.05, rtol=0)
    # Without landmarks the whole photo is resized: a different input.
    whole_tensor = transform(whole.dataset[0])
    assert whole_tensor.shape == expected.shape and not torch.allclose(whole_tensor, expected, atol=0.05)


def test_protocol_records_the_align_mode(fgnet, tmp_path) -> None:
    folder, _, cache = fgnet
    result = run_protocol(
        "fgnet", "scratch", "linear", data_dir=str(folder), output_dir=str(tmp_path / "run"), folds=2,
        pairs_per_subject=3, image_size=SIZE, backbone="test_resnet", align="landmarks",
        settings=TransferSettings(show_progress=False), data_kwargs={"cache_dir": str(cache)},
    )
    assert result["settings"]["align"] == "landmarks"
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["settings"]["align"] == "landmarks" and saved["folds"][0]["selection"]["solver"] == "closed_form"


def test_synthetic_tasks_take_only_auto_or_none() -> None:
    with pytest.raises(ValueError, match="--align detector does not apply to the synthetic task"):
        load_task_dataset("synthetic_smile", image_size=SIZE, synthetic_subjects=2, align="detector")
    with pytest.raises(ValueError, match="Unknown align 'eyes'"):
        load_task_dataset("synthetic_smile", image_size=SIZE, align="eyes")


def _cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    import importlib

    transfer_cli = importlib.import_module("training.transfer")
    from comface_hf.errors import run_cli

    monkeypatch.setattr(sys, "argv", ["transfer.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(transfer_cli.main)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_bad_input_is_one_error_line(astronaut_face, tmp_path, monkeypatch, capsys) -> None:
    small, landmarks, scheme = astronaut_face
    study = tmp_path / "study"
    study.mkdir()
    rows = ["subject,image,value"]
    for s in "abcd":
        for k in range(2):
            small.save(study / f"{s}{k}.png")
            rows.append(f"{s},{s}{k}.png,{'nan' if (s, k) == ('b', 1) else k}")
    (study / "labels.csv").write_text("\n".join(rows) + "\n")
    base = ["--task", "face_change", "--data_dir", str(study), "--cache_dir", str(tmp_path / "cache"), "--init",
            "scratch", "--backbone", "test_resnet", "--image_size", str(SIZE), "--mode", "linear", "--folds", "2",
            "--output_dir", str(tmp_path / "out")]
    code, err = _cli(monkeypatch, capsys, *base, "--align", "none")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "line 5" in err or "nan" in err.lower()

    # No face anywhere: the detector finds nothing -> one line that says what to do.
    class NoFaces:
        cache_id = "no-faces-v1"

        def detect(self, image):
            return []

    monkeypatch.setitem(face_alignment._DETECTORS, "dlib", NoFaces())
    (study / "labels.csv").write_text("\n".join(r.replace("nan", "1") for r in rows) + "\n")
    code, err = _cli(monkeypatch, capsys, *base, "--align", "detector", "--cache_dir", str(tmp_path / "cache2"))
    assert code == 2 and err.startswith("error: ") and "no face" in err and "Traceback" not in err

    code, err = _cli(monkeypatch, capsys, *base, "--align", "sideways")
    assert code == 2 and "Unknown align 'sideways'" in err

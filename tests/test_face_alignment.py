"""Face detection and alignment into the canonical frame, on a real photo that ships in a registry package.

scikit-image's ``astronaut`` (Eileen Collins, public domain) is the real face; no research database is used.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf import ComFaceImageProcessor
from comface_hf.alignment import LandmarkCache, read_pts, smooth_landmark_tracks
from comface_hf.errors import ComFaceInputError, ImageReadError, NoFaceError
from comface_hf.face_alignment import (
    FaceAligner,
    get_detector,
    guess_scheme,
    key_points,
    load_image,
)
from comface_hf.face_frame import CANONICAL_KEY_POINTS, apply_matrix

SIZE = 96


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # uint8 [512, 512, 3]


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(size=SIZE)


@pytest.fixture(scope="module")
def reference(astronaut, aligner):
    return aligner.align(astronaut)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _crop_key_points(face) -> np.ndarray:
    return apply_matrix(face.matrix, face.key_points)


# ------------------------------------------------------------------------------------------------ the real photo


def test_one_face_found_and_its_eyes_land_where_the_frame_puts_them(reference):
    assert reference.source == "detector" and reference.num_faces == 1 and reference.score > 0
    assert reference.landmarks.shape == (68, 2) and reference.scheme == "ibug68"
    assert reference.image.size == (SIZE, SIZE)
    crop = _crop_key_points(reference) + 0.5  # pixel-index -> the frame's pixel-edge coordinates
    eyes_expected = CANONICAL_KEY_POINTS[:2] * SIZE
    # FFHQ's rule levels the eyes and fixes their spacing; the mouth follows the face's own proportions.
    assert np.abs(crop[:2] - eyes_expected).max() < 0.02 * SIZE
    assert abs(crop[2, 0] - SIZE / 2) < 0.02 * SIZE and crop[2, 1] > crop[0, 1] + 0.15 * SIZE
    # The crop really shows the eyes there: the detector run on the aligned crop agrees.
    again = FaceAligner(size=SIZE * 2).align(reference.image.resize((SIZE * 2, SIZE * 2), Image.LANCZOS))
    assert np.abs(again.key_points / 2 - _crop_key_points(reference)).max() < 0.03 * SIZE
    assert again.already_aligned  # an aligned crop is recognised as one and only resized


def _inputs(astronaut: np.ndarray, tmp_path: Path) -> dict[str, object]:
    pil = Image.fromarray(astronaut)
    png = tmp_path / "astronaut.png"
    pil.save(png)
    tiff16 = tmp_path / "astronaut16.tif"
    Image.fromarray((astronaut.mean(-1) * 257).astype(np.uint16)).save(tiff16)  # 16-bit greyscale TIFF
    cmyk = tmp_path / "astronaut_cmyk.jpg"
    pil.convert("CMYK").save(cmyk, quality=95)
    rgba = pil.convert("RGBA")
    return {
        "path": str(png), "pathlib": png, "bytes": png.read_bytes(), "pil": pil, "numpy": astronaut,
        "tensor_chw": torch.from_numpy(astronaut).permute(2, 0, 1), "float": astronaut / 255.0, "rgba": rgba,
        "palette": pil.convert("P", palette=Image.ADAPTIVE, colors=256), "dataset_dict": {"bytes": png.read_bytes(), "path": None},
        "cmyk_jpeg": str(cmyk), "grey16_tiff": str(tiff16),
    }


def test_every_input_type_gives_the_same_crop(astronaut, aligner, reference, tmp_path):
    for kind, image in _inputs(astronaut, tmp_path).items():
        face = aligner.align(image)
        shift = np.abs(face.key_points - reference.key_points).max()
        diff = np.abs(_pixels(face.image) - _pixels(reference.image)).mean()
        if kind == "grey16_tiff":  # the same face in grey: same place, grey pixels
            diff = np.abs(_pixels(face.image).mean(-1) - _pixels(reference.image).mean(-1)).mean()
        lossy = kind in ("palette", "cmyk_jpeg", "grey16_tiff")
        assert shift <= (2.0 if lossy else 1e-6), kind
        assert diff <= (6.0 if lossy else 1e-6), kind  # JPEG, palette quantisation, grey: a few levels
        assert face.image.mode == "RGB"


def test_exif_rotated_phone_photo_gives_the_same_crop(astronaut, aligner, reference, tmp_path):
    # A phone stores the pixels sideways and an EXIF tag saying how to turn them (6 = rotate 90 degrees clockwise).
    sideways = Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    sideways.save(path, exif=exif)
    assert Image.open(path).size == sideways.size
    face = aligner.align(str(path))
    assert np.abs(face.key_points - reference.key_points).max() < 1e-6
    assert np.abs(_pixels(face.image) - _pixels(reference.image)).mean() < 1e-6


def test_rotated_and_shifted_photo_is_brought_back_into_the_frame(astronaut, aligner, reference):
    turned = Image.fromarray(astronaut).rotate(20, resample=Image.BICUBIC, center=(300, 200), translate=(-30, 40))
    face = aligner.align(turned)
    assert np.abs(_crop_key_points(face) - _crop_key_points(reference)).max() < 0.03 * SIZE
    assert np.abs(_pixels(face.image) - _pixels(reference.image))[20:80, 20:80].mean() < 12


def test_given_landmarks_replace_the_detector(astronaut, reference):
    no_detector = FaceAligner(size=SIZE, detector=None)
    five = np.stack([*reference.key_points[:2], reference.landmarks[30], reference.landmarks[48], reference.landmarks[54]])
    for landmarks, scheme in ((reference.landmarks, "ibug68"), (five, "five_point"), (reference.key_points, "auto")):
        face = no_detector.align(astronaut, landmarks=landmarks, scheme=scheme)
        assert face.source == "landmarks" and face.score is None
        assert np.abs(_pixels(face.image) - _pixels(reference.image)).mean() < 1e-6
    with pytest.raises(ComFaceInputError, match="no detector"):
        no_detector.align(astronaut)
    with pytest.raises(ComFaceInputError, match="far outside"):
        no_detector.align(astronaut, landmarks=reference.key_points + 5000)


def test_landmark_schemes_are_told_apart_and_checked(reference):
    ibug = reference.landmarks
    assert guess_scheme(ibug) == "ibug68"
    # The same face in FG-NET's markup: pupils at 31 and 36, mouth corners at 48 and 54.
    fgnet = np.tile(ibug.mean(0), (68, 1))
    fgnet[:15] = ibug[:15]
    fgnet[31], fgnet[36] = ibug[36:42].mean(0), ibug[42:48].mean(0)
    fgnet[48], fgnet[54] = ibug[48], ibug[54]
    assert guess_scheme(fgnet) == "fgnet68"
    np.testing.assert_allclose(key_points(fgnet, "fgnet68"), key_points(ibug, "ibug68"))
    # Eyes named by the person's side (mirrored) are swapped so the frame is never upside down.
    mirrored = reference.key_points[[1, 0, 2]]
    np.testing.assert_allclose(key_points(mirrored, "three_point"), reference.key_points)
    with pytest.raises(ComFaceInputError, match="7 landmarks"):
        key_points(np.zeros((7, 2)))
    with pytest.raises(ComFaceInputError, match="NaN"):
        key_points(np.full((3, 2), np.nan))


def test_pts_files_are_read_with_clear_errors(tmp_path):
    good = tmp_path / "a.pts"
    good.write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n5 6\n}\n")
    np.testing.assert_array_equal(read_pts(good), [[1, 2], [3, 4], [5, 6]])
    bad = tmp_path / "b.pts"
    bad.write_text("version: 1\nn_points: 4\n{\n1 2\n3 4\n}\n")
    with pytest.raises(ComFaceInputError, match="declares 4 points"):
        read_pts(bad)


# ------------------------------------------------------------------------------------------------ bad images


def test_unreadable_tiny_and_faceless_images_are_clear_errors(aligner, astronaut, tmp_path):
    with pytest.raises(ImageReadError, match="1x1 pixels"):
        aligner.align(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageReadError, match="not a recognised image"):
        load_image(b"this is not an image")
    truncated = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="JPEG")
    truncated.write_bytes(buf.getvalue()[:3000])
    with pytest.raises(ImageReadError, match="damaged or truncated"):
        load_image(truncated)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    sky = np.tile(np.linspace(40, 220, 200, dtype=np.uint8)[:, None, None], (1, 200, 3))
    with pytest.raises(NoFaceError, match="no face found"):
        aligner.align(sky)
    results = aligner.align_batch([sky, astronaut], on_error="skip")
    assert results[0].reason.startswith("no face found") and results[1].num_faces == 1


def _two_faces(astronaut: np.ndarray) -> Image.Image:
    canvas = Image.new("RGB", (900, 520), (128, 128, 128))
    canvas.paste(Image.fromarray(astronaut[:300, 80:380]), (0, 0))
    canvas.paste(Image.fromarray(astronaut[:300, 80:380]).resize((200, 200)), (600, 250))
    return canvas


def test_several_faces_use_the_largest_and_small_faces_warn(astronaut, aligner, reference):
    face = aligner.align(_two_faces(astronaut))
    assert face.num_faces == 2
    assert face.frame_side == pytest.approx(reference.frame_side, rel=0.05)  # the larger copy
    small = FaceAligner(size=512)
    with pytest.warns(UserWarning, match="upsampled"):
        tiny = small.align(astronaut)
    assert tiny.too_small


# ------------------------------------------------------------------------------------------------ the processor


def test_processor_aligns_photos_and_says_which(astronaut, reference):
    processor = ComFaceImageProcessor(crop_size=SIZE)
    assert processor.align == "auto"
    sky = np.tile(np.linspace(40, 220, 64, dtype=np.uint8)[:, None, None], (1, 64, 3))
    with pytest.warns(UserWarning, match="no face found in image 1"):
        out = processor([astronaut, sky], return_tensors="pt")
    assert out["pixel_values"].shape == (2, 3, SIZE, SIZE)
    assert out["aligned"].tolist() == [True, False]
    expected = ComFaceImageProcessor(crop_size=SIZE, align="none")(reference.image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(out["pixel_values"][:1], expected)
    with pytest.raises(NoFaceError):
        processor([sky], align="face", return_tensors="pt")
    given = processor([astronaut], landmarks=[reference.landmarks], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(given, expected)


def test_processor_align_setting_round_trips(tmp_path):
    ComFaceImageProcessor(crop_size=SIZE, align="none").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["align"] == "none" and "_aligner" not in saved
    assert ComFaceImageProcessor.from_pretrained(tmp_path).align == "none"
    with pytest.raises(ValueError, match="align must be one of 'auto', 'face', 'landmarks', 'detector', 'none'"):
        ComFaceImageProcessor(align="sometimes")
    # A folder saved before the shared vocabulary ("align": false) still loads, and says the new word.
    saved["align"] = False
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved))
    with pytest.warns(DeprecationWarning, match="align=False is deprecated: use align='none'"):
        assert ComFaceImageProcessor.from_pretrained(tmp_path).align == "none"


# ------------------------------------------------------------------------------------------------ cache, smoothing


class CountingDetector:
    """The real detector, counting its calls."""

    def __init__(self):
        self.inner, self.calls = get_detector("dlib"), 0

    @property
    def cache_id(self) -> str:
        return self.inner.cache_id

    def detect(self, image):
        self.calls += 1
        return self.inner.detect(image)


def test_landmark_cache_detects_each_image_once(astronaut, tmp_path):
    data = io.BytesIO()
    Image.fromarray(astronaut).save(data, format="PNG")
    counting = CountingDetector()
    cache = LandmarkCache(tmp_path, counting)
    first = cache.detect("key", data.getvalue())
    cache.save()
    again = LandmarkCache(tmp_path, counting).detect("key", data.getvalue())
    assert counting.calls == 1
    np.testing.assert_allclose(again[0].landmarks, first[0].landmarks, atol=1e-3)


def test_smoothing_steadies_jitter_without_blending_distant_frames():
    rng = np.random.default_rng(0)
    truth = np.array([[10.0, 20.0], [30.0, 20.0]])
    frames = list(range(1, 31)) + [500]
    tracks = [truth + rng.normal(0, 1.0, truth.shape) for _ in frames[:-1]] + [truth + 50.0]
    tracks[10] = None  # the detector missed one frame
    smoothed = smooth_landmark_tracks(frames, tracks, sigma=2.0)
    raw_error = np.mean([np.abs(t - truth).mean() for t in tracks[:-1] if t is not None])
    smooth_error = np.mean([np.abs(t - truth).mean() for t in smoothed[2:-3]])
    assert smooth_error < 0.6 * raw_error
    assert smoothed[10] is not None  # filled from its neighbours
    np.testing.assert_allclose(smoothed[-1], truth + 50.0)  # frame 500 is far from the others: untouched


# ------------------------------------------------------------------------------------------------ the builders


def _to_fgnet68(ibug: np.ndarray) -> np.ndarray:
    """The same face in FG-NET's markup (the points the frame uses, plus a jaw for scale)."""
    out = np.tile(ibug.mean(0), (68, 1))
    out[:15] = ibug[1:16]
    out[31], out[36] = ibug[36:42].mean(0), ibug[42:48].mean(0)
    out[48], out[54] = ibug[48], ibug[54]
    return out


class ForbiddenDetector(CountingDetector):
    def detect(self, image):
        raise AssertionError("the detector must not run when the dataset has landmarks")


def test_fgnet_uses_its_pts_files_and_never_calls_the_detector(astronaut, reference, tmp_path, monkeypatch):
    from comface_hf import face_alignment
    from dataset_builders.fgnet import Fgnet

    images, points = tmp_path / "FGNET" / "images", tmp_path / "FGNET" / "points"
    images.mkdir(parents=True)
    points.mkdir(parents=True)
    fg = _to_fgnet68(reference.landmarks)
    for subject in range(3):
        for k, (ox, oy, scale) in enumerate([(0, 0, 1.0), (40 + 10 * subject, 20, 0.8)]):
            crop = Image.fromarray(astronaut).crop((ox, oy, 512, 512))
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
            name = f"{subject + 1:03d}A{10 + 5 * k:02d}"
            crop.save(images / f"{name}.JPG", quality=95)
            pts = (fg - [ox, oy]) * scale
            lines = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
            (points / f"{name.lower()}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{lines}\n}}\n")
    monkeypatch.setitem(face_alignment._DETECTORS, "dlib", ForbiddenDetector())
    builder = Fgnet(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    assert ds.num_rows == 6 and set(ds["landmark_source"]) == {"dataset"} and set(ds["landmark_scheme"]) == {"fgnet68"}
    assert builder.build_report.landmark_sources == {"dataset": 6}
    # The stored landmarks align every copy onto the same crop.
    no_detector = FaceAligner(size=SIZE, detector=None)
    crops = [no_detector.align(row["image"], landmarks=row["landmarks"], scheme=row["landmark_scheme"]) for row in ds]
    for face in crops:
        assert np.abs(_crop_key_points(face) - _crop_key_points(reference)).max() < 0.5


def _face_change_study(astronaut: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    sky = np.tile(np.linspace(40, 220, 200, dtype=np.uint8)[:, None, None], (1, 200, 3))
    files = {
        "a1.png": Image.fromarray(astronaut),
        "a2.png": Image.fromarray(astronaut).crop((30, 10, 500, 480)),
        "sky.png": Image.fromarray(sky),
        "b1.png": _two_faces(astronaut),
        "b2.png": Image.fromarray(astronaut).resize((300, 300), Image.LANCZOS),
    }
    rows = ["subject,image,value", "a,a1.png,1", "a,a2.png,2", "a,sky.png,3", "b,b1.png,4", "b,b2.png,5"]
    for name, image in files.items():
        image.save(folder / name)
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_faceless_several_and_small_faces_are_counted_and_detection_is_cached(astronaut, tmp_path, monkeypatch):
    from comface_hf import face_alignment
    from dataset_builders.face_change import FaceChange

    study = _face_change_study(astronaut, tmp_path / "study")
    counting = CountingDetector()
    monkeypatch.setitem(face_alignment._DETECTORS, "dlib", counting)
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"(?s)1 without a face.*sky\.png \(line 4\): no face found.*give their landmarks"):
        FaceChange(data_dir=str(study), cache_dir=cache).download_and_prepare()  # 1/5 > 10%
    assert counting.calls == 5
    builder = FaceChange(data_dir=str(study), cache_dir=cache, max_bad_fraction=0.5, face_size=224)
    with pytest.warns(UserWarning) as caught:
        builder.download_and_prepare()
    messages = " ".join(str(w.message) for w in caught)
    assert "small for 224 px" in messages and "several faces" in messages and "1 faceless" in messages
    report = builder.build_report
    assert counting.calls == 5  # the failed build's detections were kept: none repeated
    assert [p.split(":")[0] for p in report.no_face_images] == [f"{study / 'sky.png'} (line 4)"]
    assert len(report.multi_face_images) == 1 and "b1.png" in report.multi_face_images[0]
    assert any("b2.png" in p for p in report.small_face_images)
    ds = builder.as_dataset(split="train")
    assert ds.num_rows == 4 and set(ds["landmark_source"]) == {"detector"} and max(ds["num_faces"]) == 2
    # A rebuild from scratch finds every detection in the cache.
    FaceChange(data_dir=str(study), cache_dir=cache, max_bad_fraction=0.5, face_size=224).download_and_prepare(
        download_mode="force_redownload"
    )
    assert counting.calls == 5


def test_user_landmarks_in_the_csv_are_used(astronaut, reference, tmp_path, monkeypatch):
    from comface_hf import face_alignment
    from dataset_builders.face_change import FaceChange

    study = tmp_path / "mine"
    study.mkdir()
    Image.fromarray(astronaut).save(study / "x.png")
    Image.fromarray(astronaut).save(study / "y.png")
    five = np.stack([*reference.key_points[:2], reference.landmarks[30], reference.landmarks[48], reference.landmarks[54]])
    cell = json.dumps(np.round(five, 2).tolist())
    (study / "labels.csv").write_text(f'subject,image,value,landmarks\np,x.png,1,"{cell}"\np,y.png,2,"{cell}"\n')
    monkeypatch.setitem(face_alignment._DETECTORS, "dlib", ForbiddenDetector())
    builder = FaceChange(data_dir=str(study), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    assert ds["landmark_scheme"] == ["five_point"] * 2 and ds["landmark_source"] == ["dataset"] * 2
    (study / "labels.csv").write_text("subject,image,value,landmarks\np,x.png,1,1 2 3\np,y.png,2,\n")
    with pytest.raises(ComFaceInputError, match=r"line 2: landmarks need an even"):
        FaceChange(data_dir=str(study), cache_dir=str(tmp_path / "c2")).download_and_prepare()


def test_disfa_frames_are_detected_and_smoothed_over_time(astronaut, tmp_path):
    from dataset_builders.disfa import Disfa

    root = tmp_path / "DISFA"
    (root / "ActionUnit_Labels" / "SN001").mkdir(parents=True)
    frames = root / "Frames_LeftCamera" / "SN001"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = Image.fromarray(astronaut).resize((256, 256), Image.LANCZOS)
    for f in range(1, 9):
        dx, dy = rng.integers(-1, 2, size=2)
        frame = base.transform(base.size, Image.AFFINE, (1, 0, dx, 0, 1, dy), Image.BILINEAR)
        if f == 5:  # the face is hidden in one frame: the detector misses it
            frame = Image.new("RGB", base.size, (90, 90, 90))
        frame.save(frames / f"{f:05d}.png")
    (root / "ActionUnit_Labels" / "SN001" / "SN001_au12.txt").write_text("".join(f"{f},{1 + f % 5}\n" for f in range(1, 9)))
    builder = Disfa(config_name="au12", data_dir=str(root), cache_dir=str(tmp_path / "c"), landmark_smoothing=1.5)
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    assert ds.num_rows == 8 and ds["frame"] == list(range(1, 9))
    assert any("frame 5: no face detected; landmarks interpolated" in n for n in builder.build_report.notes)
    eyes = np.array([key_points(np.array(lm), "ibug68")[:2] for lm in ds["landmarks"]])
    assert np.ptp(eyes, axis=0).max() < 3.0  # steady across frames, including the interpolated one

"""Downstream builders (DISFA, FG-NET, face_change) on fixtures in their real layouts.

The fixtures draw cartoon faces no detector would find, so these tests build with landmarks="none"; the landmark
paths (dataset landmarks, the detector, faceless images) are tested in tests/test_face_alignment.py.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataset_builders.disfa import Disfa
from dataset_builders.face_change import FaceChange
from dataset_builders.fgnet import Fgnet

from comface_hf.transfer.schema import face_features
from tests.fixtures_downstream import (
    DISFA_SUBJECTS,
    disfa_intensity,
    draw_face,
    write_disfa_fixture,
    write_face_change_fixture,
    write_fgnet_fixture,
)


def _build(builder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # datasets' own chatter; warnings we emit are tested explicitly
        builder.download_and_prepare()
    return builder.as_dataset(split="train")


# ----------------------------------------------------------------------------- FG-NET


def test_fgnet_parses_names_ages_and_suffixes(tmp_path: Path) -> None:
    data = write_fgnet_fixture(tmp_path / "data")
    ds = _build(Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none"))
    assert ds.num_rows == 12
    assert set(ds.column_names) == {"image", "subject", "value", *face_features()}
    assert ds[0]["landmarks"] == [] and ds[0]["landmark_source"] == ""  # landmarks="none" stores none
    assert Counter(ds["subject"]) == {"001": 4, "002": 3, "003": 5}
    assert sorted(v for s, v in zip(ds["subject"], ds["value"]) if s == "001") == [2.0, 5.0, 5.0, 10.0]
    assert ds[0]["image"].size == (48, 48)


def test_fgnet_images_directly_in_data_dir(tmp_path: Path) -> None:
    data = write_fgnet_fixture(tmp_path / "flat", subfolder=".")
    ds = _build(Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none"))
    assert ds.num_rows == 12


def test_fgnet_wrong_layout_names_expected_pattern(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"(?s)001A02\.JPG.*Expected layout"):
        Fgnet(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()


def test_missing_data_dir_gives_manual_instructions(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically"):
        Fgnet(cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Fgnet(data_dir=str(tmp_path / "nope"), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()


def test_fgnet_corrupt_image_skipped_and_single_subject_reported(tmp_path: Path) -> None:
    ages = {f"{i:03d}": [1, 2, 3, 4, 5] for i in range(1, 4)} | {"009": [7]}
    data = write_fgnet_fixture(tmp_path / "data", ages=ages, corrupt=["002A03.JPG"])
    builder = Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none")
    with pytest.warns(UserWarning) as record:
        builder.download_and_prepare()
    messages = " ".join(str(w.message) for w in record)
    assert "skipped 1 unreadable" in messages and "009" in messages
    report = builder.build_report
    assert report.num_bad_images == 1 and "002A03.JPG" in report.bad_images[0]
    assert report.single_image_subjects == ["009"]
    assert report.num_rows == 14 == builder.as_dataset(split="train").num_rows
    # The report survives a cached reload (a new builder does not regenerate).
    again = Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none")
    again.download_and_prepare()
    assert again.build_report.bad_images == report.bad_images


def test_fgnet_too_many_bad_images_is_an_error(tmp_path: Path) -> None:
    data = write_fgnet_fixture(tmp_path / "data", corrupt=["001A02.JPG", "002A18.JPG"])  # 2/12 > 10%
    with pytest.raises(ValueError, match=r"(?s)2 of 12 images.*max_bad_fraction"):
        Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "c1"), landmarks="none").download_and_prepare()
    # ... unless the caller accepts more.
    ds = _build(Fgnet(data_dir=str(data), cache_dir=str(tmp_path / "c2"), landmarks="none", max_bad_fraction=0.5))
    assert ds.num_rows == 10


# ------------------------------------------------------------------------ face_change


@pytest.mark.parametrize("absolute", [False, True])
def test_face_change_reads_csv(tmp_path: Path, absolute: bool) -> None:
    csv_path = write_face_change_fixture(tmp_path / "study", absolute_paths=absolute)
    ds = _build(FaceChange(data_dir=str(csv_path.parent), cache_dir=str(tmp_path / "cache"), landmarks="none"))
    assert ds.num_rows == 12
    assert set(ds.column_names) == {"image", "subject", "value", "timestamp", *face_features()}
    assert Counter(ds["subject"]) == {"patient_a": 4, "patient_b": 4, "patient_c": 4}
    np.testing.assert_allclose(ds["value"][:4], [61.2, 58.9, 60.8, 58.5], rtol=1e-6)
    assert ds[1]["timestamp"] == "2024-01-02T08:00:00"


def test_face_change_csv_file_as_data_dir_without_timestamp(tmp_path: Path) -> None:
    csv_path = write_face_change_fixture(tmp_path / "study", csv_name="weights.csv", timestamps=False)
    ds = _build(FaceChange(data_dir=str(csv_path), cache_dir=str(tmp_path / "cache"), landmarks="none"))
    assert ds.num_rows == 12 and ds[0]["timestamp"] is None


def test_face_change_missing_column(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("subject,path,weight\na,x.png,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image', 'value'\]"):
        FaceChange(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()


def test_face_change_non_numeric_value_names_line(tmp_path: Path) -> None:
    csv_path = write_face_change_fixture(tmp_path / "study")
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], "58.9kg")
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 4: value '58.9kg' is not a number"):
        FaceChange(data_dir=str(csv_path.parent), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()


def test_face_change_no_csv(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)labels\.csv.*found none"):
        FaceChange(data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()


def test_face_change_bad_and_missing_images(tmp_path: Path) -> None:
    values = {f"p{i}": [50.0 + k for k in range(5)] for i in range(5)}  # 25 rows
    csv_path = write_face_change_fixture(tmp_path / "ok", values=values, corrupt=[0], missing=[7])
    builder = FaceChange(data_dir=str(csv_path.parent), cache_dir=str(tmp_path / "cache"), landmarks="none")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        builder.download_and_prepare()
    reasons = " ".join(builder.build_report.bad_images)
    assert "line 2" in reasons and "file not found" in reasons and "line 9" in reasons
    assert builder.as_dataset(split="train").num_rows == 23

    csv_bad = write_face_change_fixture(tmp_path / "bad", corrupt=[0, 1], missing=[5])  # 3/12
    with pytest.raises(ValueError, match=r"3 of 12 images"):
        FaceChange(data_dir=str(csv_bad.parent), cache_dir=str(tmp_path / "cache"), landmarks="none").download_and_prepare()


def test_face_change_single_image_subject_left_out(tmp_path: Path) -> None:
    csv_path = write_face_change_fixture(tmp_path / "s", values={"a": [1.0, 2.0], "b": [3.0], "c": [1.0, 5.0]})
    builder = FaceChange(data_dir=str(csv_path.parent), cache_dir=str(tmp_path / "cache"), landmarks="none")
    with pytest.warns(UserWarning, match="fewer than two usable images.*: b"):
        builder.download_and_prepare()
    assert builder.build_report.single_image_subjects == ["b"]
    assert sorted(set(builder.as_dataset(split="train")["subject"])) == ["a", "c"]


# ------------------------------------------------------------------------------ DISFA


def _expected_disfa(subjects, frames: int, au: int) -> dict[str, list[int]]:
    return {
        s: [f for f in range(1, frames + 1) if 1 <= disfa_intensity(i, f, au) <= 5] for i, s in enumerate(subjects)
    }


@pytest.mark.parametrize("layout", ["video", "frames"])
@pytest.mark.parametrize("au", [6, 12])
def test_disfa_intensity_filter_and_values(tmp_path: Path, layout: str, au: int) -> None:
    data = write_disfa_fixture(tmp_path / "DISFA", frames=24, layout=layout)
    ds = _build(Disfa(config_name=f"au{au}", data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none"))
    expected = _expected_disfa(DISFA_SUBJECTS, 24, au)
    assert ds.num_rows == sum(len(v) for v in expected.values())
    assert set(ds.column_names) == {"image", "subject", "value", "frame", *face_features()}
    for i, s in enumerate(DISFA_SUBJECTS):
        rows = [(f, v) for sub, f, v in zip(ds["subject"], ds["frame"], ds["value"]) if sub == s]
        assert [f for f, _ in rows] == expected[s]
        assert all(v == disfa_intensity(i, f, au) for f, v in rows)
    assert min(ds["value"]) >= 1 and max(ds["value"]) <= 5


def test_disfa_video_frames_decoded_in_order(tmp_path: Path) -> None:
    """Each decoded frame must be the drawn frame with its own number (label alignment)."""
    data = write_disfa_fixture(tmp_path / "DISFA", subjects=("SN001",), frames=18, layout="video")
    ds = _build(Disfa(config_name="au12", data_dir=str(data), cache_dir=str(tmp_path / "cache"), landmarks="none"))
    drawn = [np.asarray(draw_face(48, 0, disfa_intensity(0, f, 12)), np.float32) for f in range(1, 19)]
    for row in ds:
        got = np.asarray(row["image"].convert("RGB"), np.float32)
        errors = [np.abs(got - d).mean() for d in drawn]
        # Frames 6 apart are drawn identically, so compare with the neighbours only.
        f = row["frame"]
        neighbours = {g: errors[g - 1] for g in (f - 1, f, f + 1) if 1 <= g <= 18}
        assert min(neighbours, key=neighbours.get) == f


def test_disfa_subsampling_is_seeded(tmp_path: Path) -> None:
    data = write_disfa_fixture(tmp_path / "DISFA", frames=30, layout="frames")
    kw = dict(config_name="au12", data_dir=str(data), max_frames_per_subject=7)
    a = _build(Disfa(cache_dir=str(tmp_path / "c1"), landmarks="none", seed=3, **kw))
    b = _build(Disfa(cache_dir=str(tmp_path / "c2"), landmarks="none", seed=3, **kw))
    c = _build(Disfa(cache_dir=str(tmp_path / "c3"), landmarks="none", seed=4, **kw))
    assert Counter(a["subject"]) == {s: 7 for s in DISFA_SUBJECTS}
    assert a["frame"] == b["frame"] and a["frame"] != c["frame"]


def test_disfa_frame_count_mismatch(tmp_path: Path) -> None:
    data = write_disfa_fixture(tmp_path / "DISFA", frames=20, layout="video", label_frames={"SN002": 25})
    with pytest.raises(ValueError, match=r"(?s)subject SN002.*has 25 frames.*has 20 frames"):
        Disfa(config_name="au12", data_dir=str(data), cache_dir=str(tmp_path / "c1"), landmarks="none").download_and_prepare()
    builder = Disfa(
        config_name="au12", data_dir=str(data), cache_dir=str(tmp_path / "c2"), landmarks="none", allow_frame_count_mismatch=True
    )
    ds = _build(builder)
    assert max(f for s, f in zip(ds["subject"], ds["frame"]) if s == "SN002") <= 20
    assert any("SN002" in note for note in builder.build_report.notes)


def test_disfa_wrong_layout_messages(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)ActionUnit_Labels.*Expected layout"):
        Disfa(data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"), landmarks="none").download_and_prepare()

    data = write_disfa_fixture(tmp_path / "novideo", subjects=("SN001",), frames=8, layout="video")
    (data / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)SN001.*LeftVideoSN001_comp\.avi.*Frames_LeftCamera"):
        Disfa(data_dir=str(data), cache_dir=str(tmp_path / "c"), landmarks="none").download_and_prepare()

    data = write_disfa_fixture(tmp_path / "au6only", subjects=("SN001",), frames=8, aus=(6,))
    with pytest.raises(FileNotFoundError, match=r"(?s)No AU12 label files.*SN001_au12\.txt"):
        Disfa(config_name="au12", data_dir=str(data), cache_dir=str(tmp_path / "c"), landmarks="none").download_and_prepare()


def test_disfa_bad_label_line(tmp_path: Path) -> None:
    data = write_disfa_fixture(tmp_path / "DISFA", subjects=("SN001", "SN002"), frames=8, layout="frames")
    label = data / "ActionUnit_Labels" / "SN002" / "SN002_au12.txt"
    label.write_text(label.read_text().replace("3,", "3;x", 1))
    with pytest.raises(ValueError, match=r"SN002_au12\.txt, line 3"):
        Disfa(data_dir=str(data), cache_dir=str(tmp_path / "c"), landmarks="none").download_and_prepare()


def test_disfa_corrupt_frames(tmp_path: Path) -> None:
    data = write_disfa_fixture(tmp_path / "DISFA", frames=30, layout="frames")
    (data / "Frames_LeftCamera" / "SN001" / "00002.png").write_bytes(b"broken")  # intensity 3: kept
    builder = Disfa(config_name="au12", data_dir=str(data), cache_dir=str(tmp_path / "c1"), landmarks="none")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        builder.download_and_prepare()
    assert "00002.png" in builder.build_report.bad_images[0]
    ds = builder.as_dataset(split="train")
    assert 2 not in [f for s, f in zip(ds["subject"], ds["frame"]) if s == "SN001"]

    for f in range(1, 31):
        (data / "Frames_LeftCamera" / "SN003" / f"{f:05d}.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"(?s)unreadable or corrupt.*max_bad_fraction"):
        Disfa(config_name="au12", data_dir=str(data), cache_dir=str(tmp_path / "c2"), landmarks="none").download_and_prepare()


def test_disfa_unreadable_and_truncated_videos(tmp_path: Path) -> None:
    data = write_disfa_fixture(tmp_path / "garbage", subjects=("SN001", "SN002"), frames=12)
    (data / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi").write_bytes(b"RIFF" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"(?s)cannot open DISFA video .*LeftVideoSN002_comp\.avi"):
        Disfa(data_dir=str(data), cache_dir=str(tmp_path / "c1"), landmarks="none").download_and_prepare()

    # A cut-off copy: the header still promises all frames, decoding ends early. The
    # error is raised during generation and must surface as ValueError, not datasets'
    # generic DatasetGenerationError.
    data = write_disfa_fixture(tmp_path / "cut", subjects=("SN001", "SN002"), frames=40)
    video = data / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    with pytest.raises(ValueError, match=r"(?s)unreadable or corrupt.*video ended before this frame"):
        Disfa(data_dir=str(data), cache_dir=str(tmp_path / "c2"), landmarks="none").download_and_prepare()

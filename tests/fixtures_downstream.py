"""Writers of small downstream-dataset fixtures in the real on-disk layouts.

Reusable by any test (``from tests.fixtures_downstream import write_disfa_fixture``). Images are
48x48 drawn "faces" whose mouth curvature follows the value, so they are cheap to write
and decode yet not constant; DISFA videos are real AVI files encoded with PyAV.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DISFA_SUBJECTS: tuple[str, ...] = ("SN001", "SN002", "SN003")


def draw_face(size: int, subject_index: int, value: float) -> Image.Image:
    """A simple face: skin tone per subject, mouth curvature and cheek height per value."""
    rng = np.random.default_rng(subject_index)
    skin = tuple(int(c) for c in rng.integers(120, 230, size=3))
    img = Image.new("RGB", (size, size), (30, 30, 30))
    d = ImageDraw.Draw(img)
    s = size / 48.0
    d.ellipse([8 * s, 4 * s, 40 * s, 44 * s], fill=skin)
    eye_y = 18 * s - 0.3 * s * float(value)  # "cheek raiser": eyes narrow as value rises
    d.ellipse([15 * s, eye_y, 20 * s, eye_y + 4 * s], fill=(20, 20, 20))
    d.ellipse([28 * s, eye_y, 33 * s, eye_y + 4 * s], fill=(20, 20, 20))
    curve = 1.5 * s * float(value)  # "lip corner puller": corners rise with the value
    d.line([(16 * s, 32 * s - curve), (24 * s, 34 * s), (32 * s, 32 * s - curve)], fill=(150, 40, 40), width=2)
    return img


def _corrupt_bytes() -> bytes:
    """A JPEG header followed by garbage: opens as JPEG, fails to decode."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 2


# --------------------------------------------------------------------------------- FG-NET


def write_fgnet_fixture(
    root: str | Path,
    ages: Mapping[str, Sequence[int]] | None = None,
    subfolder: str = "FGNET/images",
    corrupt: Sequence[str] = (),
    size: int = 48,
) -> Path:
    """Write FG-NET-named JPEGs (``001A02.JPG``, ``001A02a.jpg`` for a repeated age).

    Args:
        root: data_dir to create.
        ages: subject ("001") -> ages; default 3 subjects with 4, 3 and 5 images, one
            repeated age (letter suffix) and mixed ``.JPG``/``.jpg`` extensions.
        subfolder: where the images go below ``root`` (FG-NET zips unpack to FGNET/images).
        corrupt: file names (as written) to replace with undecodable bytes.

    Returns:
        ``root`` (pass it as ``data_dir``).
    """
    root = Path(root)
    ages = ages or {"001": [2, 5, 5, 10], "002": [18, 21, 30], "003": [0, 1, 3, 7, 69]}
    folder = root / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    for si, (subject, subject_ages) in enumerate(sorted(ages.items())):
        seen: dict[int, int] = {}
        for k, age in enumerate(subject_ages):
            n = seen.get(age, 0)
            seen[age] = n + 1
            suffix = "" if n == 0 else "abcdefghij"[n - 1]
            ext = ".JPG" if k % 2 == 0 else ".jpg"
            name = f"{subject}A{age:02d}{suffix}{ext}"
            path = folder / name
            if name in corrupt:
                path.write_bytes(_corrupt_bytes())
            else:
                draw_face(size, si, age / 10.0).save(path, format="JPEG", quality=90)
    return root


# ---------------------------------------------------------------------------- face_change


def write_face_change_fixture(
    root: str | Path,
    values: Mapping[str, Sequence[float]] | None = None,
    csv_name: str = "labels.csv",
    absolute_paths: bool = False,
    timestamps: bool = True,
    corrupt: Sequence[int] = (),
    missing: Sequence[int] = (),
    size: int = 48,
) -> Path:
    """Write a face_change CSV (subject, image, value[, timestamp]) and its PNG images.

    Args:
        root: folder for the CSV; images go to ``root/images/<subject>/<k>.png``.
        values: subject -> values (e.g. weights in kg); default 3 patients x 4 sessions.
        absolute_paths: write absolute image paths instead of paths relative to the CSV.
        timestamps: add a ``timestamp`` column (ISO dates).
        corrupt / missing: CSV row indices (0-based, data rows) whose image is written as
            garbage / not written at all.

    Returns:
        Path of the CSV.
    """
    root = Path(root)
    values = values or {
        "patient_a": [61.2, 58.9, 60.8, 58.5],
        "patient_b": [72.0, 69.4, 71.5, 69.0],
        "patient_c": [55.5, 53.1, 55.0, 52.7],
    }
    rows = []
    row_index = 0
    for si, (subject, vals) in enumerate(sorted(values.items())):
        for k, value in enumerate(vals):
            rel = Path("images") / subject / f"{k:03d}.png"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if row_index in corrupt:
                path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
            elif row_index not in missing:
                draw_face(size, si, (value - np.mean(vals)) * 2).save(path)
            row = {"subject": subject, "image": str(path.resolve()) if absolute_paths else rel.as_posix(), "value": value}
            if timestamps:
                row["timestamp"] = f"2024-01-{k + 1:02d}T08:00:00"
            rows.append(row)
            row_index += 1
    csv_path = root / csv_name
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


# --------------------------------------------------------------------------------- DISFA


def disfa_intensity(subject_index: int, frame: int, au: int) -> int:
    """Fixture AU intensity (0-5) of 1-based ``frame``: a cycle so every level occurs."""
    return (frame + subject_index + (0 if au == 12 else 2)) % 6


def write_disfa_fixture(
    root: str | Path,
    subjects: Sequence[str] = DISFA_SUBJECTS,
    frames: int = 30,
    layout: str = "video",
    aus: Sequence[int] = (6, 12),
    label_frames: Mapping[str, int] | None = None,
    size: int = 48,
    codec: str = "mjpeg",
) -> Path:
    """Write a DISFA-layout folder with labels and either AVI videos or extracted frames.

    Layout (as in the DISFA release)::

        root/ActionUnit_Labels/SN001/SN001_au6.txt     lines "frame,intensity", frames 1-based
        root/Videos_LeftCamera/LeftVideoSN001_comp.avi (layout="video")
        root/Frames_LeftCamera/SN001/00001.png         (layout="frames")

    Args:
        subjects: subject folders to write.
        frames: frames per video (and label lines unless overridden).
        layout: ``"video"`` (real AVI written with PyAV) or ``"frames"``.
        aus: AUs to write label files for.
        label_frames: subject -> number of label lines, to create frame-count mismatches.
        codec: PyAV video codec (``"mjpeg"`` is intra-only and always available).

    Intensities follow :func:`disfa_intensity`.

    Returns:
        ``root`` (pass it as ``data_dir``).
    """
    root = Path(root)
    label_frames = dict(label_frames or {})
    for si, subject in enumerate(subjects):
        n_labels = label_frames.get(subject, frames)
        label_dir = root / "ActionUnit_Labels" / subject
        label_dir.mkdir(parents=True, exist_ok=True)
        for au in aus:
            lines = [f"{f},{disfa_intensity(si, f, au)}" for f in range(1, n_labels + 1)]
            (label_dir / f"{subject}_au{au}.txt").write_text("\n".join(lines) + "\n")
        images = [draw_face(size, si, disfa_intensity(si, f, 12)) for f in range(1, frames + 1)]
        if layout == "video":
            _write_avi(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi", images, codec)
        elif layout == "frames":
            frame_dir = root / "Frames_LeftCamera" / subject
            frame_dir.mkdir(parents=True, exist_ok=True)
            for f, img in enumerate(images, start=1):
                img.save(frame_dir / f"{f:05d}.png")
        else:
            raise ValueError(f"layout must be 'video' or 'frames', got {layout!r}")
    return root


def _write_avi(path: Path, images: Sequence[Image.Image], codec: str = "mjpeg", fps: int = 20) -> None:
    """Encode ``images`` into an AVI container with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = images[0].size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for img in images:
            frame = av.VideoFrame.from_ndarray(np.asarray(img.convert("RGB")), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

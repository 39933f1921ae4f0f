"""DISFA facial-expression (AU intensity) change builder over the user's copy (ComFace Sec. 4.2).

DISFA has 27 subjects filmed for 4845 frames each, with per-frame intensities 0-5 for
several action units. ComFace uses AU6 (cheek raiser) and AU12 (lip corner puller) and
keeps frames with intensity 1 to 5; one row per kept frame, ``value`` = intensity. Pairs
and the change ``intensity_y - intensity_x`` are formed later
(``comface_hf.transfer.pairs.sample_change_pairs``).

Frames come from the left-camera videos (decoded with PyAV) or, faster, from a folder of
already extracted frames; see ``_LAYOUT`` / README.md.

Faces: DISFA has no landmarks of its own here, so the face detector finds each kept frame's
68 landmarks (cached, so a rebuild does not detect again); a subject's landmarks are then
smoothed across its frames (Gaussian, ``landmark_smoothing`` frames) because detector jitter
from frame to frame would read as facial change, and a frame where the detector missed the face
takes its neighbours' landmarks when they are close in time.

Usage::

    from dataset_builders.disfa import Disfa
    builder = Disfa(config_name="au12", data_dir="/data/DISFA", cache_dir="/tmp/hf_cache",
                    max_frames_per_subject=500)
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from dataset_builders.base import ManualDataBuilder, ManualDataConfig, read_checked_image
from comface_hf.transfer.schema import change_features

_DESCRIPTION = (
    "DISFA left-camera frames with AU6/AU12 intensity (1-5), for estimating expression-intensity "
    "change between two frames of one person."
)
_HOMEPAGE = "http://mohammadmahoor.com/disfa/"
_CITATION = """\
@article{mavadati2013disfa,
  title={DISFA: A spontaneous facial action intensity database},
  author={Mavadati, S. Mohammad and Mahoor, Mohammad H. and Bartlett, Kevin and Trinh, Philip and Cohn, Jeffrey F.},
  journal={IEEE Transactions on Affective Computing},
  volume={4}, number={2}, pages={151--160}, year={2013}
}
"""

LABELS_DIR = "ActionUnit_Labels"
VIDEOS_DIR = "Videos_LeftCamera"
FRAMES_DIR = "Frames_LeftCamera"
_FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_FRAME_NUMBER = re.compile(r"(\d+)$")  # trailing digits of the file stem: 00001, frame_1, ...

_LAYOUT = f"""\
Expected layout (DISFA's own), with data_dir the folder holding these:
  {LABELS_DIR}/SN001/SN001_au6.txt, SN001_au12.txt   lines "frame,intensity" (frame 1-based, intensity 0-5)
  {VIDEOS_DIR}/LeftVideoSN001_comp.avi               left-camera video, decoded with PyAV
or, instead of a subject's video, already extracted frames:
  {FRAMES_DIR}/SN001/00001.png (or .jpg)            file stem ends with the 1-based frame number
A subject's frame folder is used when present, else its video."""

_MANUAL = f"""\
DISFA cannot be downloaded automatically: request it under its licence agreement at
{_HOMEPAGE}, then pass the folder holding {LABELS_DIR} and {VIDEOS_DIR}
as data_dir, e.g. Disfa(config_name="au12", data_dir="/data/DISFA").
{_LAYOUT}"""


@dataclass
class DisfaConfig(ManualDataConfig):
    """DISFA options.

    Attributes:
        au: action unit (6 or 12 in the paper).
        min_intensity / max_intensity: kept intensity range (1-5 in the paper: intensity 0
            means "AU absent" and dominates the frames).
        max_frames_per_subject: keep at most this many of a subject's kept frames, drawn at
            random (seeded) - 4845 frames x 27 subjects is large and consecutive frames
            are near-duplicates. ``None`` keeps all.
        seed: seed of that draw.
        frame_format: ``"jpeg"`` (compact; default) or ``"png"`` (lossless, ~10x larger) for
            frames decoded from videos; extracted frames are stored as they are.
        jpeg_quality: JPEG quality for ``frame_format="jpeg"``.
        allow_frame_count_mismatch: by default a label file whose frame count differs from
            its video's is an error (misaligned labels would silently corrupt the task);
            ``True`` uses the frames both cover and notes it in the build report.
        landmark_smoothing: standard deviation, in frames, of the Gaussian that steadies detected
            landmarks across a subject's frames (0: no smoothing).
    """

    au: int = 12
    min_intensity: int = 1
    max_intensity: int = 5
    max_frames_per_subject: int | None = None
    seed: int = 0
    frame_format: str = "jpeg"
    jpeg_quality: int = 95
    allow_frame_count_mismatch: bool = False
    landmark_smoothing: float = 2.0


@dataclass
class _SubjectPlan:
    """What to read for one subject: kept frame numbers and their intensities."""

    subject: str
    source: str  # "video" or "frames"
    path: str  # video file or frame folder
    frames: dict[int, int]  # 1-based frame number -> intensity, kept frames only
    frame_files: dict[int, str]  # frames layout only


class Disfa(ManualDataBuilder):
    """DISFA: one row per kept frame: ``image``, ``subject`` (e.g. ``"SN001"``), ``value`` (intensity), ``frame``."""

    VERSION = datasets.Version("1.1.0")  # 1.1.0: face landmark columns
    BUILDER_CONFIG_CLASS = DisfaConfig
    BUILDER_CONFIGS = [
        DisfaConfig(name="au6", version=VERSION, au=6, description="AU6 (cheek raiser) intensity 1-5."),
        DisfaConfig(name="au12", version=VERSION, au=12, description="AU12 (lip corner puller) intensity 1-5."),
    ]
    DEFAULT_CONFIG_NAME = "au12"
    manual_download_instructions = _MANUAL

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=change_features(faces=True, frame=datasets.Value("int32")),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    # -- planning (runs before anything is written, so errors surface early) ----------

    def _read_labels(self, path: Path) -> dict[int, int]:
        """Parse ``frame,intensity`` lines into {frame: intensity}, with line-precise errors."""
        labels: dict[int, int] = {}
        for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            parts = [p.strip() for p in re.split(r"[,\s;]+", line) if p.strip()]
            try:
                frame, intensity = int(parts[0]), int(round(float(parts[1])))
            except (ValueError, IndexError):
                if line_no == 1 and not parts[0].isdigit():
                    continue  # tolerate a header line such as "frame,intensity"
                raise ValueError(f"{path}, line {line_no}: expected 'frame,intensity', got {line!r}") from None
            if not 0 <= intensity <= 5:
                raise ValueError(f"{path}, line {line_no}: intensity {intensity} outside DISFA's 0-5 scale")
            if frame < 1:
                raise ValueError(f"{path}, line {line_no}: frame numbers are 1-based, got {frame}")
            labels[frame] = intensity
        if not labels:
            raise ValueError(f"label file {path} is empty; expected one 'frame,intensity' line per frame")
        return labels

    @staticmethod
    def _count_video_frames(video: Path) -> int:
        """Frames in ``video``: the container's count, else counted by demuxing (no decoding)."""
        import av

        try:
            with av.open(str(video)) as container:
                if not container.streams.video:
                    raise ValueError(f"{video} has no video stream")
                stream = container.streams.video[0]
                if stream.frames and stream.frames > 0:
                    return int(stream.frames)
                return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as exc:
            raise ValueError(f"cannot open DISFA video {video}: {exc}. Is the file complete?") from None

    def _find_video(self, data_dir: Path, subject: str) -> Path | None:
        videos = data_dir / VIDEOS_DIR
        exact = videos / f"LeftVideo{subject}_comp.avi"
        if exact.is_file():
            return exact
        if videos.is_dir():
            # Tolerate renamed copies such as LeftVideoSN001.avi or LeftVideoSN001_comp.AVI.
            for path in sorted(videos.iterdir()):
                if path.name.lower().startswith(f"leftvideo{subject}".lower()) and path.suffix.lower() == ".avi":
                    return path
        return None

    def _subsample(self, subject: str, frames: dict[int, int]) -> dict[int, int]:
        limit = self.config.max_frames_per_subject
        if limit is None or len(frames) <= limit:
            return frames
        # Seeded per subject (string seeds are deterministic), so adding or removing a
        # subject does not change another subject's draw.
        chosen = random.Random(f"{self.config.seed}:{subject}").sample(sorted(frames), int(limit))
        return {f: frames[f] for f in sorted(chosen)}

    def _plan_subject(self, data_dir: Path, subject: str, labels: dict[int, int], label_file: Path) -> _SubjectPlan:
        cfg = self.config
        n_labels = max(labels)
        frame_dir = data_dir / FRAMES_DIR / subject
        frame_files: dict[int, str] = {}
        if frame_dir.is_dir():
            for path in frame_dir.iterdir():
                m = _FRAME_NUMBER.search(path.stem)
                if path.is_file() and path.suffix.lower() in _FRAME_SUFFIXES and m:
                    frame_files[int(m.group(1))] = str(path)
            n_media, source, media = (max(frame_files) if frame_files else 0), "frames", frame_dir
        else:
            video = self._find_video(data_dir, subject)
            if video is None:
                raise FileNotFoundError(
                    f"DISFA subject {subject}: labels at {label_file} but neither a video "
                    f"{data_dir / VIDEOS_DIR / f'LeftVideo{subject}_comp.avi'} nor a frame folder "
                    f"{frame_dir} exists.\n{_LAYOUT}"
                )
            n_media, source, media = self._count_video_frames(video), "video", video
        # Extracted-frame folders may hold only some frames (e.g. only labelled ones), so
        # only frames beyond the labels count as a mismatch there.
        mismatch = n_media != n_labels if source == "video" else n_media > n_labels
        if mismatch:
            what = "video" if source == "video" else "frame folder (highest frame number)"
            if not cfg.allow_frame_count_mismatch:
                raise ValueError(
                    f"DISFA subject {subject}: label file {label_file} has {n_labels} frames but the "
                    f"{what} {media} has {n_media} frames. Labels must match frame by frame; check "
                    f"that the files belong together, or pass allow_frame_count_mismatch=True to use "
                    f"the first {min(n_labels, n_media)} frames."
                )
            self._report.notes.append(
                f"{subject}: {n_labels} label frames vs {n_media} {source} frames; used the common range"
            )
        last = min(n_labels, n_media) if source == "video" else n_labels
        kept = {
            f: i for f, i in sorted(labels.items()) if cfg.min_intensity <= i <= cfg.max_intensity and f <= last
        }
        return _SubjectPlan(subject, source, str(media), self._subsample(subject, kept), frame_files)

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        cfg = self.config
        if cfg.frame_format not in ("jpeg", "png"):
            raise ValueError(f"frame_format must be 'jpeg' or 'png', got {cfg.frame_format!r}")
        data_dir = self._require_data_dir(dl_manager)
        labels_root = data_dir / LABELS_DIR
        if not labels_root.is_dir():
            raise FileNotFoundError(f"Expected the DISFA label folder {labels_root}, which does not exist.\n{_LAYOUT}")
        report = self._new_report()
        subject_dirs = sorted(p for p in labels_root.iterdir() if p.is_dir())
        plans: list[_SubjectPlan] = []
        for subject_dir in subject_dirs:
            subject = subject_dir.name
            label_file = subject_dir / f"{subject}_au{cfg.au}.txt"
            if not label_file.is_file():
                report.notes.append(f"{subject}: no {label_file.name}; subject skipped")
                continue
            plans.append(self._plan_subject(data_dir, subject, self._read_labels(label_file), label_file))
        if not plans:
            raise FileNotFoundError(
                f"No AU{cfg.au} label files found: expected {labels_root}/<subject>/<subject>_au{cfg.au}.txt "
                f"(subject folders seen: {', '.join(p.name for p in subject_dirs) or 'none'}).\n{_LAYOUT}"
            )

        report.num_candidates = sum(len(p.frames) for p in plans)
        # Extracted frames are checked now; video frames are checked while decoding.
        for plan in plans:
            if plan.source != "frames":
                continue
            good: dict[int, int] = {}
            for frame, intensity in plan.frames.items():
                path = plan.frame_files.get(frame)
                if path is None:
                    report.bad_images.append(f"{plan.path}: frame {frame} missing")
                    continue
                _, reason = read_checked_image(Path(path))
                if reason:
                    report.bad_images.append(f"{path}: {reason}")
                else:
                    good[frame] = intensity
            plan.frames = good
        if report.bad_fraction > cfg.max_bad_fraction:
            self._check_bad_fraction(report, str(data_dir))  # raises with the details
        kept = self._drop_small_subjects(report, {p.subject: list(p.frames) for p in plans})
        plans = [p for p in plans if p.subject in kept]
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"plans": plans, "where": str(data_dir)})]

    # -- generation -----------------------------------------------------------------

    def _encode_frame(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        if self.config.frame_format == "png":
            image.save(buf, format="PNG")
        else:
            image.save(buf, format="JPEG", quality=int(self.config.jpeg_quality))
        return buf.getvalue()

    def _video_frames(self, plan: _SubjectPlan) -> Iterator[tuple[int, bytes | None, str | None]]:
        """Decode the kept frames of a video: ``(frame, bytes, None)`` or ``(frame, None, reason)``."""
        import av

        wanted = plan.frames
        last = max(wanted) if wanted else 0
        index = 0  # 1-based number of the last frame produced
        with av.open(plan.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    # AVI stores one frame per packet: count the lost frame so that later
                    # frames keep their numbers (and stay aligned with the labels).
                    if packet.size:
                        index += 1
                        if index in wanted:
                            yield index, None, f"cannot decode frame ({exc})"
                    continue
                for frame in decoded:
                    index += 1
                    if index in wanted:
                        yield index, self._encode_frame(frame.to_image()), None
                if index >= last:
                    break  # kept frames all seen; skip decoding the rest of the video
        for missing in (f for f in wanted if f > index):
            yield missing, None, "video ended before this frame"

    def _subject_faces(self, plan: _SubjectPlan, frames: list[tuple[int, bytes]]) -> list[dict[str, Any] | None]:
        """Face columns of a subject's frames, with landmarks smoothed across the frames (see module doc)."""
        from comface_hf.alignment import smooth_landmark_tracks
        from comface_hf.face_detector import FaceDetection

        if self.config.landmarks == "none":
            return [self._face_columns("", data) for _, data in frames]
        detections = [self._detect_faces(data) for _, data in frames]
        tracks = smooth_landmark_tracks(
            [f for f, _ in frames], [d[0].landmarks if d else None for d in detections], self.config.landmark_smoothing
        )
        out = []
        for (frame, data), found, smoothed in zip(frames, detections, tracks):
            name = f"{plan.path}: frame {frame}"
            if smoothed is not None and found:
                found = [FaceDetection(smoothed, found[0].scheme, found[0].box, found[0].score), *found[1:]]
            elif smoothed is not None:  # missed here, but its neighbours in time saw the face
                found = [FaceDetection(smoothed, "ibug68", (0.0, 0.0, 0.0, 0.0), float("nan"))]
                self._report.notes.append(f"{name}: no face detected; landmarks interpolated from nearby frames")
            out.append(self._face_columns(name, data, detected=found))
        return out

    def _generate_examples(self, plans: list[_SubjectPlan], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
        report = self._report
        key = 0
        for plan in plans:
            if plan.source == "frames":
                frames = ((f, *read_checked_image(Path(plan.frame_files[f]))) for f in plan.frames)
            else:
                frames = self._video_frames(plan)
            # One subject at a time: its frames are read, their faces found and smoothed over time, then written.
            readable: list[tuple[int, bytes]] = []
            for frame, data, reason in frames:
                if data is None:
                    if report is not None:
                        report.bad_images.append(f"{plan.path}: frame {frame}: {reason}")
                    continue
                readable.append((frame, data))
            for (frame, data), faces in zip(readable, self._subject_faces(plan, readable)):
                if faces is None:
                    continue
                ext = "png" if plan.source == "video" and self.config.frame_format == "png" else "jpg"
                name = f"{plan.subject}_{frame:05d}.{ext}" if plan.source == "video" else Path(plan.frame_files[frame]).name
                yield key, {
                    "image": {"bytes": data, "path": name},
                    "subject": plan.subject,
                    "value": float(plan.frames[frame]),
                    "frame": frame,
                    **faces,
                }
                key += 1
        if report is not None:
            report.num_rows = key
            # Video decoding failures and faceless frames are only known now; the error (if any) replaces the
            # partial build, which datasets discards.
            self._check_bad_fraction(report, where)

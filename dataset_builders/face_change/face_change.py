"""Your-own-data change builder: a CSV of (subject, image, value[, timestamp]) rows.

This is the form for clinical data such as the paper's dialysis weights (Edema-A/B,
Sec. 4.2), which cannot be shared: each row is one face image of one subject with a
scalar value (weight in kg, a symptom score, ...). Pairs and the change
``value_y - value_x`` are formed later (``comface_hf.transfer.pairs.sample_change_pairs``).

Usage::

    from dataset_builders.face_change import FaceChange
    builder = FaceChange(data_dir="/data/my_study", cache_dir="/tmp/hf_cache")  # holds labels.csv
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm.auto import tqdm

from comface_hf.alignment import read_pts
from comface_hf.errors import ComFaceInputError
from comface_hf.transfer.schema import change_features
from dataset_builders.base import (
    ManualDataBuilder,
    ManualDataConfig,
    read_checked_image,
)

_DESCRIPTION = "Face images of the same people at several times with a scalar value each (e.g. weight)."
REQUIRED_COLUMNS = ("subject", "image", "value")
OPTIONAL_COLUMNS = ("timestamp", "landmarks", "landmarks_file")
#: CSV names looked for in data_dir when ``csv_name`` is not given (else: the only *.csv).
DEFAULT_CSV_NAMES = ("face_change.csv", "labels.csv", "metadata.csv")

_LAYOUT = """\
Expected layout: data_dir holds a CSV (labels.csv, face_change.csv or metadata.csv, the only
*.csv file, or the one named by csv_name=...) with a header row and columns
  subject    any id; all rows of one person share it
  image      image file path, relative to the CSV's folder or absolute
  value      number (e.g. weight in kg)
  timestamp  optional, free text (e.g. 2024-01-31T08:00)
  landmarks  optional, the face's landmarks in the image's pixels: a JSON list [[x, y], ...] or
             plain numbers "x1 y1 x2 y2 ..." (5 points as MTCNN/RetinaFace give them, iBUG's 68,
             or left eye, right eye, mouth centre)
  landmarks_file  optional, a .pts/.json/.txt file with those points (relative to the CSV)
An image with no landmarks of its own uses a side file next to it (photo.jpg -> photo.pts) if there
is one, else the face detector finds them.
data_dir may also be the CSV file itself."""

_MANUAL = f"""\
face_change reads your own data, which is never downloaded. Write a CSV describing your
images and pass its folder (or the CSV) as data_dir, e.g. FaceChange(data_dir="/data/my_study").
{_LAYOUT}"""


@dataclass
class FaceChangeConfig(ManualDataConfig):
    """Options: ``csv_name`` picks the CSV inside data_dir (default: see DEFAULT_CSV_NAMES);
    ``landmark_scheme`` names the layout of your landmarks (``"auto"``: by their number, see
    ``comface_hf.landmark_schemes.LANDMARK_SCHEMES``)."""

    csv_name: str | None = None
    landmark_scheme: str = "auto"


def parse_landmarks(text: str, where: str) -> np.ndarray:
    """A CSV cell or file with landmarks -> ``[N, 2]``: JSON ``[[x, y], ...]`` or numbers ``x1 y1 x2 y2 ...``."""
    text = text.strip()
    try:
        if text.startswith("["):
            values = np.asarray(json.loads(text), dtype=np.float64)
        else:
            values = np.asarray([float(v) for v in re.split(r"[\s,;]+", text) if v], dtype=np.float64)
    except (ValueError, TypeError):
        raise ComFaceInputError(
            f"{where}: cannot read landmarks {text[:60]!r}; write them as JSON [[x, y], ...] or as numbers "
            "'x1 y1 x2 y2 ...'"
        ) from None
    if values.size == 0 or values.size % 2:
        raise ComFaceInputError(f"{where}: landmarks need an even, non-zero count of numbers (x y pairs), got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ComFaceInputError(f"{where}: landmarks hold a non-finite number")
    return values.reshape(-1, 2)


def read_landmark_file(path: Path, where: str) -> np.ndarray:
    """Landmarks from a ``.pts`` file, or a ``.json``/``.txt`` file holding what :func:`parse_landmarks` reads."""
    if not path.is_file():
        raise ComFaceInputError(f"{where}: landmark file {str(path)!r} not found")
    if path.suffix.lower() == ".pts":
        return read_pts(path)
    return parse_landmarks(path.read_text(encoding="utf-8"), str(path))


class FaceChange(ManualDataBuilder):
    """One row per readable image: ``image``, ``subject``, ``value``, ``timestamp`` (may be None)."""

    VERSION = datasets.Version("1.1.0")  # 1.1.0: face landmark columns
    BUILDER_CONFIG_CLASS = FaceChangeConfig
    BUILDER_CONFIGS = [FaceChangeConfig(name="default", version=VERSION, description="Value per image.")]
    DEFAULT_CONFIG_NAME = "default"
    manual_download_instructions = _MANUAL

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=change_features(faces=True, timestamp=datasets.Value("string"))
        )

    def _find_csv(self, data_dir: Path) -> Path:
        if data_dir.is_file():
            if data_dir.suffix.lower() != ".csv":
                raise FileNotFoundError(f"data_dir {str(data_dir)!r} is a file but not a .csv.\n{_LAYOUT}")
            return data_dir
        name = self.config.csv_name
        if name:
            path = data_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"csv_name={name!r} not found: expected {str(path)!r}.\n{_LAYOUT}")
            return path
        for candidate in DEFAULT_CSV_NAMES:
            if (data_dir / candidate).is_file():
                return data_dir / candidate
        csvs = sorted(data_dir.glob("*.csv"))
        if len(csvs) == 1:
            return csvs[0]
        found = f"found {len(csvs)}: {', '.join(p.name for p in csvs)}" if csvs else "found none"
        raise FileNotFoundError(
            f"Expected a CSV in {str(data_dir)!r} named {' / '.join(DEFAULT_CSV_NAMES)} or a single *.csv "
            f"({found}); pass csv_name=... to choose.\n{_LAYOUT}"
        )

    def _read_rows(self, csv_path: Path) -> list[tuple[int, str, Path, float, str | None, Any]]:
        """Parse and validate the CSV: ``(line, subject, image_path, value, timestamp, landmarks)`` per row."""
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's BOM
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{csv_path} lacks column(s) {missing}; its header is {header}.\n{_LAYOUT}"
                )
            reader.fieldnames = header
            rows = []
            for record in reader:
                line = reader.line_num
                subject = (record.get("subject") or "").strip()
                image = (record.get("image") or "").strip()
                raw_value = (record.get("value") or "").strip()
                if not subject or not image:
                    raise ValueError(f"{csv_path}, line {line}: empty subject or image ({record})")
                try:
                    value = float(raw_value)
                except ValueError:
                    raise ValueError(
                        f"{csv_path}, line {line}: value {raw_value!r} is not a number; use plain "
                        f"numbers such as 61.5 (no units)"
                    ) from None
                if not math.isfinite(value):
                    raise ValueError(f"{csv_path}, line {line}: value {raw_value!r} is not finite")
                path = Path(image).expanduser()
                if not path.is_absolute():
                    path = csv_path.parent / path  # relative to the CSV, not to the working dir
                timestamp = (record.get("timestamp") or "").strip() or None
                where = f"{csv_path}, line {line}"
                landmarks = None
                if (record.get("landmarks") or "").strip():
                    landmarks = parse_landmarks(record["landmarks"], where)
                elif (record.get("landmarks_file") or "").strip():
                    file = Path(record["landmarks_file"].strip()).expanduser()
                    landmarks = read_landmark_file(file if file.is_absolute() else csv_path.parent / file, where)
                elif path.with_suffix(".pts").is_file():
                    landmarks = read_pts(path.with_suffix(".pts"))
                rows.append((line, subject, path, value, timestamp, landmarks))
        if not rows:
            raise ValueError(f"{csv_path} has a header but no data rows.\n{_LAYOUT}")
        return rows

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        data_dir = self._require_data_dir(dl_manager)
        csv_path = self._find_csv(data_dir)
        rows = self._read_rows(csv_path)
        report = self._new_report()
        report.num_candidates = len(rows)
        # Check every image up front: missing/corrupt files are skipped and counted, and the
        # bad-fraction error comes before anything is written.
        by_subject: dict[str, list[tuple[str, float, str | None, dict]]] = defaultdict(list)
        for line, subject, path, value, timestamp, landmarks in tqdm(
            rows, desc="face_change: checking images and landmarks", disable=len(rows) < 50
        ):
            if not path.is_file():
                report.bad_images.append(f"{path} (line {line}): file not found")
                continue
            data, reason = read_checked_image(path)
            if reason:
                report.bad_images.append(f"{path} (line {line}): {reason}")
                continue
            faces = self._face_columns(f"{path} (line {line})", data, landmarks, self.config.landmark_scheme)
            if faces is not None:
                by_subject[subject].append((str(path), value, timestamp, faces))
        self._check_bad_fraction(report, str(csv_path))
        by_subject = self._drop_small_subjects(report, by_subject)
        items = [(s, *entry) for s in sorted(by_subject) for entry in by_subject[s]]
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"items": items})]

    def _generate_examples(
        self, items: list[tuple[str, str, float, str | None, dict]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for key, (subject, path, value, timestamp, faces) in enumerate(items):
            data, reason = read_checked_image(Path(path))
            if data is None:
                raise ValueError(f"{path} became unreadable during the build ({reason}); rebuild")
            # Bytes are embedded so the prepared dataset does not depend on the files staying put.
            yield key, {
                "image": {"bytes": data, "path": Path(path).name},
                "subject": subject,
                "value": value,
                "timestamp": timestamp,
                **faces,
            }
        if self._report is not None:
            self._report.num_rows = len(items)

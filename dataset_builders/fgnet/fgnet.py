"""FG-NET age-change builder over a copy the user already has (ComFace Sec. 4.2).

FG-NET (1002 images, 82 subjects, ages 0-69) names each image ``<subject>A<age><suffix>``:
``001A02.JPG`` is subject 001 at age 2, ``001A02a.JPG`` a second image at that age. One
row per readable image with ``value`` = age in years; pairs and the age change
``age_y - age_x`` are formed later (``comface_hf.transfer.pairs.sample_change_pairs``).

Landmarks: FG-NET ships 68 manually placed points per image (``points/001a02.pts``) in its
own markup (not iBUG order: pupils 31 and 36, mouth corners 48 and 54). They are stored with
each row (``landmark_source="dataset"``, scheme ``fgnet68``) and used to align the face; images
without a ``.pts`` file get the face detector's landmarks (``landmarks="auto"``, the default).

Usage::

    from dataset_builders.fgnet import Fgnet
    builder = Fgnet(data_dir="/data/FGNET", cache_dir="/tmp/hf_cache")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    print(builder.build_report.summary())
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from comface_hf.alignment import read_pts
from comface_hf.errors import ComFaceInputError
from comface_hf.transfer.schema import change_features
from dataset_builders.base import (
    ManualDataBuilder,
    ManualDataConfig,
    read_checked_image,
)

_DESCRIPTION = "FG-NET face images with ages, for estimating age change between two images of one person."
_HOMEPAGE = "https://yanweifu.github.io/FG_NET_data/"
_CITATION = """\
@article{panis2016fgnet,
  title={Overview of research on facial ageing using the FG-NET ageing database},
  author={Panis, Gabriel and Lanitis, Andreas and Tsapatsoulis, Nicolas and Cootes, Timothy F.},
  journal={IET Biometrics},
  volume={5}, number={2}, pages={37--46}, year={2016}
}
"""

#: ``001A02.JPG``, ``001A02a.jpg``, ``078a11b.JPG``: subject, age, optional letter suffix.
FILENAME_PATTERN = re.compile(r"^(?P<subject>\d{3})A(?P<age>\d{1,3})(?P<suffix>[A-Z]?)\.(?:jpe?g)$", re.IGNORECASE)
#: Folders (relative to data_dir) searched for the images, in this order.
SEARCH_FOLDERS = (".", "images", "FGNET/images", "FGNET", "FG-NET/images", "FG-NET")
#: Folders (relative to data_dir) searched for the 68-point ``.pts`` files; the image folder and its sibling
#: ``points`` folder are searched too.
POINTS_FOLDERS = ("points", "FGNET/points", "FG-NET/points")
#: FG-NET's own 68-point markup (see comface_hf.landmark_schemes.LANDMARK_SCHEMES).
FGNET_SCHEME = "fgnet68"
_IMAGE_SUFFIXES = {".jpg", ".jpeg"}

_LAYOUT = """\
Expected layout: a folder of FG-NET images named <subject>A<age><optional letter>.<jpg|JPG>,
e.g. 001A02.JPG (subject 001, age 2) or 001A02a.JPG, either directly in data_dir or in
data_dir/images, data_dir/FGNET/images or data_dir/FGNET."""

_MANUAL = f"""\
FG-NET cannot be downloaded automatically here. Obtain the FG-NET ageing database (1002
images of 82 subjects) under its terms of use (see {_HOMEPAGE}), unzip it, and pass the
folder as data_dir, e.g. Fgnet(data_dir="/data/FGNET").
{_LAYOUT}"""


class Fgnet(ManualDataBuilder):
    """FG-NET: one row per image with ``image``, ``subject`` (e.g. ``"001"``), ``value`` (age)."""

    VERSION = datasets.Version("1.1.0")  # 1.1.0: face landmark columns
    BUILDER_CONFIG_CLASS = ManualDataConfig
    BUILDER_CONFIGS = [ManualDataConfig(name="default", version=VERSION, description="Age per image.")]
    DEFAULT_CONFIG_NAME = "default"
    manual_download_instructions = _MANUAL

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=change_features(faces=True), homepage=_HOMEPAGE, citation=_CITATION
        )

    @staticmethod
    def _find_points(data_dir: Path, image_folder: Path) -> dict[str, Path]:
        """``.pts`` files by lower-case stem (``001a02``), from the usual FG-NET folders."""
        folders = [data_dir / rel for rel in POINTS_FOLDERS] + [image_folder, image_folder.parent / "points"]
        found: dict[str, Path] = {}
        for folder in folders:
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.suffix.lower() == ".pts" and path.is_file():
                        found.setdefault(path.stem.lower(), path)
        return found

    def _find_image_folder(self, data_dir: Path) -> tuple[Path, list[Path]]:
        """The first search folder holding FG-NET-named images, and those images."""
        if data_dir.is_file():
            raise FileNotFoundError(f"data_dir {str(data_dir)!r} is a file; pass the folder.\n{_LAYOUT}")
        for rel in SEARCH_FOLDERS:
            folder = (data_dir / rel).resolve()
            if not folder.is_dir():
                continue
            matches = sorted(p for p in folder.iterdir() if p.is_file() and FILENAME_PATTERN.match(p.name))
            if matches:
                return folder, matches
        searched = ", ".join(str((data_dir / rel).resolve()) for rel in SEARCH_FOLDERS if (data_dir / rel).is_dir())
        raise FileNotFoundError(
            f"No FG-NET images (named like 001A02.JPG) found in {searched or str(data_dir)}.\n{_LAYOUT}"
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        data_dir = self._require_data_dir(dl_manager)
        folder, files = self._find_image_folder(data_dir)
        report = self._new_report()

        ignored = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not FILENAME_PATTERN.match(p.name)
        )
        if ignored:
            report.notes.append(
                f"ignored {len(ignored)} .jpg file(s) not named <subject>A<age>: {', '.join(ignored[:10])}"
            )

        points = self._find_points(data_dir, folder) if self.config.landmarks != "none" else {}
        if self.config.landmarks in ("auto", "face", "landmarks") and not points:
            report.notes.append("no FG-NET .pts landmark files found (looked in points/ folders); faces detected")

        # Decode every image now, before writing: bad files (and, in landmark modes, faceless ones) are
        # skipped and counted here so the bad-fraction error is raised before any output is written.
        report.num_candidates = len(files)
        by_subject: dict[str, list[tuple[str, float, dict]]] = defaultdict(list)
        for path in tqdm(files, desc="fgnet: checking images and landmarks", disable=len(files) < 50):
            data, reason = read_checked_image(path)
            if reason:
                report.bad_images.append(f"{path}: {reason}")
                continue
            pts = points.get(path.stem.lower())
            try:
                given = read_pts(pts) if pts is not None else None
                faces = self._face_columns(str(path), data, given, FGNET_SCHEME)
            except ComFaceInputError as exc:  # a malformed .pts file: that image is skipped, the build goes on
                report.bad_images.append(f"{pts}: {exc}")
                continue
            if faces is None:
                continue
            m = FILENAME_PATTERN.match(path.name)
            assert m is not None  # filtered above
            by_subject[m["subject"]].append((str(path), float(int(m["age"])), faces))
        self._check_bad_fraction(report, str(folder))
        by_subject = self._drop_small_subjects(report, by_subject)
        items = [(s, path, age, faces) for s in sorted(by_subject) for path, age, faces in by_subject[s]]
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"items": items})]

    def _generate_examples(self, items: list[tuple[str, str, float, dict]]) -> Iterator[tuple[int, dict[str, Any]]]:
        report = self._report
        for key, (subject, path, age, faces) in enumerate(items):
            # Embed the bytes (not the path) so the prepared dataset does not depend on
            # the user's folder staying in place.
            data, reason = read_checked_image(Path(path))
            if data is None:  # changed since the check above
                raise ValueError(f"{path} became unreadable during the build ({reason}); rebuild")
            yield key, {"image": {"bytes": data, "path": Path(path).name}, "subject": subject, "value": age, **faces}
        if report is not None:
            report.num_rows = len(items)

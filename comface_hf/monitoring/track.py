"""``comface track SERIES --model M``: each photo of a series against a baseline, as a CSV and a plot over time.

SERIES is a folder of photos (ordered by their EXIF capture time; photos without one follow, by file name) or a CSV
with the columns ``image,timestamp`` (image paths relative to the CSV). Photos that cannot be used (no face,
unreadable) are listed in the CSV and on the terminal with the reason; the rest of the series is still processed.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ComFaceInputError
from .cli import add_align_arguments, align_from_args

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".heic"}
CSV_COLUMNS = ("image", "timestamp")
OUTPUT_COLUMNS = ("image", "timestamp", "status", "change", "distance", "similarity", "same_person", "message")
_EXIF_IFD, _DATETIME_ORIGINAL, _DATETIME = 0x8769, 36867, 306


@dataclass
class SeriesItem:
    path: str
    timestamp: Optional[str] = None  # as given or read (ISO 8601 when from EXIF)


@dataclass
class TrackRow:
    image: str
    timestamp: Optional[str]
    status: str  # "baseline", "ok" or "skipped"
    change: Optional[float] = None
    distance: Optional[float] = None
    similarity: Optional[float] = None
    same_person: Optional[bool] = None
    message: str = ""
    crop: Any = field(default=None, repr=False)


def exif_time(path: Path) -> Optional[str]:
    """The photo's EXIF capture time (DateTimeOriginal, else DateTime) as ISO 8601, or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            value = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except Exception:
        return None
    if not value:
        return None
    try:
        return dt.datetime.strptime(str(value).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def read_series(series: str) -> list[SeriesItem]:
    """A folder or an ``image,timestamp`` CSV -> the ordered photos. Clear errors for a missing path or column."""
    path = Path(series)
    if not path.exists():
        raise FileNotFoundError(f"series {series!r} does not exist; pass a folder of photos or an image,timestamp CSV")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ComFaceInputError(
                f"folder {series!r} holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))}); put the series' images in it"
            )
        items = [SeriesItem(str(p), exif_time(p)) for p in files]
        # Photos with an EXIF capture time in that order, then any without one by file name.
        items.sort(key=lambda item: (item.timestamp is None, item.timestamp or "", item.path))
        return items
    if path.suffix.lower() != ".csv":
        raise ComFaceInputError(f"series {series!r} is a file but not a .csv; pass a folder or an image,timestamp CSV")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise ComFaceInputError(
                f"{series!r} lacks the column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'no header'}); "
                "the first line must be `image,timestamp`, then one photo path and its time per line"
            )
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    items = []
    for row in rows:
        image = Path(row["image"])
        image = image if image.is_absolute() else path.parent / image
        items.append(SeriesItem(str(image), row["timestamp"] or None))
    return items


def _time_value(timestamp: Optional[str]) -> Optional[float]:
    if timestamp is None:
        return None
    try:
        return float(timestamp)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


def track_series(comparer: Any, items: Sequence[SeriesItem], baseline: Optional[str] = None, batch_size: int = 32,
                 progress: bool = True) -> list[TrackRow]:
    """Each photo's change against the baseline (``baseline`` path, else the first photo with a usable face)."""
    from tqdm.auto import tqdm

    if baseline is not None:
        base_path = str(Path(baseline))
        if not any(os.path.abspath(i.path) == os.path.abspath(base_path) for i in items):
            items = [SeriesItem(base_path, None), *items]
    if len(items) < 2:
        raise ComFaceInputError(
            f"the series has {len(items)} photo(s); tracking needs at least two (a baseline and a later photo)"
        )
    rows: list[TrackRow] = []
    for item in tqdm(items, desc="aligning", unit="photo", disable=not progress):
        row = TrackRow(item.path, item.timestamp, "ok")
        try:
            crop, face, notes = comparer.align_image(item.path)
            row.crop, row.message = crop, "; ".join(notes)
        except (ComFaceInputError, FileNotFoundError) as exc:
            row.status, row.message = "skipped", str(exc)
        rows.append(row)
    usable = [r for r in rows if r.status == "ok"]
    if baseline is not None:
        base = next((r for r in rows if os.path.abspath(r.image) == os.path.abspath(str(baseline))), None)
        if base is None or base.status != "ok":
            reason = base.message if base else "not found"
            raise ComFaceInputError(f"the baseline {baseline!r} cannot be used: {reason}")
    else:
        if not usable:
            raise ComFaceInputError("no photo of the series shows a usable face; see the messages above")
        base = usable[0]
        if base is not rows[0]:
            base.message = (base.message + "; " if base.message else "") + \
                f"baseline (the first photo, {rows[0].image}, could not be used)"
    base.status = "baseline"
    if len(usable) < 2:
        raise ComFaceInputError(
            f"only {len(usable)} photo(s) of {len(rows)} have a usable face; tracking needs a baseline and one more. "
            "Skipped: " + "; ".join(r.message for r in rows if r.status == "skipped")
        )
    import torch

    f = torch.cat([comparer.embed(comparer.pixel_values([r.crop for r in usable[start:start + batch_size]]))["features"]
                   for start in range(0, len(usable), batch_size)])
    b = usable.index(base)
    s = comparer.scores(f[b].expand_as(f), f)
    from ..face_comparison import identity_distance

    for k, row in enumerate(usable):
        row.change, row.distance = float(s["change"][k]), float(s["distance"][k])
        similarity = float(s["similarity"][k]) if "similarity" in s else None
        check = comparer.result(base.image, row.image, row.change, row.distance, similarity,
                                identity_distance=identity_distance(base.crop, row.crop))
        row.similarity, row.same_person = similarity, check.same_person
        if row.same_person is False and row is not base:
            row.message = (row.message + "; " if row.message else "") + "looks like a different person than the baseline"
    return rows


#: First characters that make a spreadsheet read a cell as a formula (OWASP's CSV-injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: A plain decimal number: a cell like ``-0.12`` stays a number (a spreadsheet reads it as one, not as a formula).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: Any) -> str:
    """One CSV cell that a spreadsheet shows as written: text starting with = + - @ tab or CR gets a leading ``'``.

    File names and timestamps come from the user's folder or CSV; a photo named ``=HYPERLINK(...).jpg`` would
    otherwise become a live formula when track.csv is opened in Excel or LibreOffice. Numbers (``-0.12``, ``1e-05``)
    are left alone so they stay numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if text.startswith(_FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def write_csv(rows: Sequence[TrackRow], path: str) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(OUTPUT_COLUMNS)
        for r in rows:
            writer.writerow([csv_cell(v) for v in (r.image, r.timestamp, r.status, r.change, r.distance, r.similarity,
                                                    r.same_person, r.message)])
    os.replace(tmp, target)


def plot_series(rows: Sequence[TrackRow], units: str, path: str, max_thumbnails: int = 12) -> None:
    """The change over time (or photo order) with the aligned thumbnails along the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .compare import save_figure_atomically

    used = [r for r in rows if r.status != "skipped"]
    times = [_time_value(r.timestamp) for r in used]
    by_time = all(t is not None for t in times)
    x = [(t - times[0]) / 86400.0 for t in times] if by_time and max(times) - min(times) > 86400 * 2 else \
        [t - times[0] for t in times] if by_time else list(range(len(used)))
    xlabel = ("days since the baseline" if by_time and max(times) - min(times) > 86400 * 2 else
              "time since the baseline" if by_time else "photo (series order)")
    shown = used[:: max(1, -(-len(used) // max_thumbnails))]
    figure = plt.figure(figsize=(max(6, 0.9 * len(shown) + 2), 5))
    for k, row in enumerate(shown):
        ax = figure.add_axes([0.06 + k * 0.9 / len(shown), 0.72, 0.9 / len(shown) - 0.01, 0.24])
        ax.imshow(row.crop)
        ax.set_title(Path(row.image).name[:14], fontsize=6)
        ax.axis("off")
    ax = figure.add_axes([0.1, 0.1, 0.85, 0.52])
    ax.plot(x, [r.change for r in used], "o-", label="change")
    ax.plot(x, [r.distance for r in used], "s--", alpha=0.6, label="distance")
    for xi, row in zip(x, used):
        if row.same_person is False:
            ax.annotate("?", (xi, row.change), color="red", fontsize=12, ha="center")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(units)
    ax.legend(fontsize=7)
    skipped = len(rows) - len(used)
    ax.set_title(f"{len(used)} photos against the baseline" + (f"; {skipped} skipped (see the CSV)" if skipped else ""),
                 fontsize=8)
    save_figure_atomically(figure, path, dpi=110)
    plt.close(figure)


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a folder that already holds files, unless ``overwrite``.

    A second run on the same series used to replace the first run's track.csv and track.png without a word."""
    if out.exists() and not out.is_dir():
        raise ComFaceInputError(f"the output {str(out)!r} is a file, not a folder; pass --out-dir with a folder path")
    if out.is_dir() and not overwrite:
        held = sorted(p.name for p in out.iterdir())
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise ComFaceInputError(
                f"the output folder {str(out)!r} already holds files ({shown}); pass --overwrite to replace its "
                "track.csv and track.png, or --out-dir with a new folder"
            )


def run_track(args: Any) -> list[TrackRow]:
    from ..face_comparison import FaceComparer, change_units

    items = read_series(args.series)
    out = Path(args.out_dir or (Path(args.series).with_suffix("") if Path(args.series).is_file()
                                else Path(args.series)).name + "-track")
    # Checked before the model is loaded, so a refusal costs nothing.
    check_output_folder(out, overwrite=getattr(args, "overwrite", False))
    comparer = FaceComparer.from_pretrained(args.model, align=align_from_args(args), identity=args.identity)
    start = time.perf_counter()
    rows = track_series(comparer, items, baseline=args.baseline)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, str(out / "track.csv"))
    units = change_units(comparer.config)
    plot_series(rows, units, str(out / "track.png"))
    for r in rows:
        if r.status == "skipped":
            print(f"skipped {r.image}: {r.message}")
        else:
            same = "" if r.same_person is None else "" if r.same_person else "  (different person?)"
            print(f"{r.status:8s} {Path(r.image).name:30s} change {r.change:+.3f} {units}  "
                  f"distance {r.distance:.3f}{same}")
    done = sum(r.status != "skipped" for r in rows)
    print(f"{done} of {len(rows)} photos tracked in {seconds:.1f} s ({len(rows) / seconds:.1f} images/s); "
          f"wrote {out / 'track.csv'} and {out / 'track.png'}")
    return rows


def add_arguments(parser: Any) -> None:
    parser.add_argument("series", help="a folder of photos (EXIF time order, else file names) or an "
                                       "image,timestamp CSV")
    parser.add_argument("--baseline", help="the reference photo (default: the first photo of the series)")
    parser.add_argument("--out-dir", help="where track.csv and track.png go (default: <series>-track)")
    add_align_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace track.csv and track.png in an output folder that already holds files "
                             "(without it such a folder is refused)")

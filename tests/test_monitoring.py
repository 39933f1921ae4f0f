"""comface compare / track / calibrate: the numbers, the outputs, and a clear message for each kind of bad input."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from comface_hf import ComFaceConfig, ComFaceForChangeEstimation, ComFaceImageProcessor, ComFaceModel
from comface_hf.errors import run_cli
from comface_hf.face_comparison import ALPHA_UNITS, FaceComparer
from comface_hf.monitoring.calibration import (
    calibrate_same_person,
    error_rates,
    finish_model_folder,
    render_identity_pairs,
    threshold_at_far,
)
from comface_hf.monitoring.cli import main
from comface_hf.monitoring.track import TrackRow, csv_cell, read_series, write_csv

SIZE = 32  # model input
PHOTO = 96  # rendered "photos" (the detector needs a face of a few dozen pixels)


def tiny_config(**kwargs):
    return ComFaceConfig(backbone="resnet18", image_size=SIZE, projection_hidden_size=32, projection_dim=8, **kwargs)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two renders each of three unseen identities, as PNG files."""
    folder = tmp_path_factory.mktemp("photos")
    images, _ = render_identity_pairs(3, PHOTO, seed=1)
    paths = {}
    for i in range(3):
        for j in range(2):
            paths[i, j] = folder / f"id{i}_{j}.png"
            Image.fromarray(images[i, j]).save(paths[i, j])
    return paths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "model"
    model = ComFaceModel(tiny_config()).eval()
    model.save_pretrained(folder)
    ComFaceImageProcessor(crop_size=SIZE).save_pretrained(folder)
    finish_model_folder(str(folder), num_identities=8)
    return folder


def cli(argv, capsys):
    """Run `comface ...` as the console script does; returns (exit status, stdout, stderr)."""
    try:
        run_cli(main, argv)
        status = 0
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


# ---------------------------------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------------------------------


def test_threshold_at_far_and_error_rates():
    impostor = np.arange(100) / 100.0  # 0.00 .. 0.99
    threshold = threshold_at_far(impostor, 0.05)
    assert threshold == pytest.approx(0.95)
    rates = error_rates(np.array([0.96, 0.97, 0.5, 0.99]), impostor, threshold)
    assert rates["far"] == pytest.approx(0.05)
    assert rates["frr"] == pytest.approx(0.25)
    assert threshold_at_far(impostor, 0.0) > 0.99  # no impostor accepted at all
    perfect = error_rates(np.ones(5), np.zeros(5), 0.5)
    assert perfect["auc"] == 1.0 and perfect["far"] == 0.0 and perfect["frr"] == 0.0


def test_calibration_is_stored_with_the_model_and_its_pipeline(model_dir):
    config = ComFaceConfig.from_pretrained(model_dir)
    assert -1.0 <= config.same_person_threshold <= 1.0
    assert 0.0 <= config.same_person_far <= 1.0 and 0.0 <= config.same_person_frr <= 1.0
    assert "unseen identities" in config.same_person_calibration
    assert "face-change-estimation" in json.loads((model_dir / "config.json").read_text())["custom_pipelines"]
    assert (model_dir / "pipeline_comface.py").is_file() and (model_dir / "face_comparison.py").is_file()
    assert "**Same-person check**" in (model_dir / "README.md").read_text()


def test_calibration_rates_are_measured_on_identities_that_did_not_set_the_threshold():
    """The stored false-accept and false-reject rates are those of the held-out half of the identities (recomputed
    here from the renders), the threshold is the fit half's FAR point, and the FAR it promises holds on the other
    half within sampling error (on the fit half it holds by construction, so that alone proves nothing)."""
    n, target = 24, 0.25
    model = ComFaceModel(tiny_config()).eval()
    figures = calibrate_same_person(model, num_identities=n, target_far=target)
    threshold = model.config.same_person_threshold
    assert threshold == pytest.approx(figures["threshold"], abs=1e-6)

    images, _ = render_identity_pairs(n, SIZE)  # calibrate_same_person's default seeds
    comparer = FaceComparer(model, None, align="none")

    def cosines(half):
        e = torch.cat([comparer.embed(comparer.pixel_values(list(half[:, k])))["embedding"][:, None]
                       for k in (0, 1)], dim=1)  # [identities, 2 renders, d]
        cross = (e[:, 0] @ e[:, 1].t()).numpy()
        return np.diag(cross), cross[~np.eye(len(half), dtype=bool)]

    genuine_fit, impostor_fit = cosines(images[: n // 2])
    genuine_out, impostor_out = cosines(images[n // 2:])
    assert model.config.same_person_far == pytest.approx(np.mean(impostor_out >= threshold), abs=1e-6)
    assert model.config.same_person_frr == pytest.approx(np.mean(genuine_out < threshold), abs=1e-6)
    # The threshold: the lowest cosine that accepts at most `target` of the fit half's impostor pairs.
    assert np.mean(impostor_fit >= threshold - 1e-6) <= target
    assert np.mean(impostor_fit >= np.max(impostor_fit[impostor_fit < threshold - 1e-6])) > target
    # ... and what it promises carries over to identities it never saw (132 impostor pairs: a few points of noise).
    assert abs(model.config.same_person_far - target) < 0.15, model.config.same_person_far
    with pytest.raises(ValueError, match="no projection head"):
        calibrate_same_person(ComFaceForChangeEstimation(tiny_config()).eval(), num_identities=8)


# ---------------------------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------------------------


def test_compare_prints_change_distance_and_same_person(model_dir, photos, tmp_path, capsys):
    picture = tmp_path / "pair.png"
    status, out, err = cli(["compare", str(photos[0, 0]), str(photos[0, 1]), "--model", str(model_dir),
                            "--out", str(picture)], capsys)
    assert status == 0, err
    assert "change:" in out and ALPHA_UNITS in out and "distance:" in out and "same person:" in out
    assert Image.open(picture).size[0] > 100

    status, out, err = cli(["compare", str(photos[0, 0]), str(photos[0, 1]), "--model", str(model_dir), "--json"],
                           capsys)
    result = json.loads(out)
    assert result["units"] == ALPHA_UNITS and result["signed"] is False
    assert result["faces"][0]["source"] == "detector"
    # The numbers are the model's: d = l(ReLU(f(y) - f(x))) on the aligned crops, the cosine of g(f(.)), and the
    # verdict from the threshold stored in the folder's config.json (not re-derived from the output's own fields).
    comparer = FaceComparer.from_pretrained(str(model_dir))
    crops = [comparer.align_image(str(p))[0] for p in (photos[0, 0], photos[0, 1])]
    model = comparer.model
    with torch.no_grad():
        x, y = comparer.pixel_values(crops).chunk(2)
        expected = model.compare(x, y).item()
        gx, gy = (torch.nn.functional.normalize(model.projection_head(model.get_image_features(v)), dim=-1)
                  for v in (x, y))
        cosine = (gx * gy).sum().item()
    assert result["distance"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert result["similarity"] == pytest.approx(cosine, abs=1e-5)
    stored = json.loads((model_dir / "config.json").read_text())["same_person_threshold"]
    assert result["threshold"] == pytest.approx(stored, abs=1e-9)
    assert result["same_person"] is (cosine >= stored)


def test_swapping_the_photos_flips_the_sign_of_the_change(model_dir, photos):
    comparer = FaceComparer.from_pretrained(str(model_dir))
    forward, backward = comparer.compare_pairs([(photos[1, 0], photos[1, 1]), (photos[1, 1], photos[1, 0])])
    assert forward.change == pytest.approx(-backward.change, abs=1e-5)


def test_transferred_model_prints_its_task_units_and_skips_the_same_person_check(tmp_path, photos, capsys):
    folder = tmp_path / "transferred"
    ComFaceForChangeEstimation(tiny_config(change_units="years")).save_pretrained(folder)
    status, out, err = cli(["compare", str(photos[0, 0]), str(photos[0, 1]), "--model", str(folder), "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["units"] == "years" and result["signed"] is True
    assert result["similarity"] is None and result["same_person"] is None


def test_different_people_give_a_warning_not_a_refusal(model_dir, photos):
    comparer = FaceComparer.from_pretrained(str(model_dir))
    comparer.config.same_person_threshold = 1.0  # nobody passes: the check must warn and still answer
    result = comparer.compare(photos[0, 0], photos[2, 0])
    assert result.same_person is False and np.isfinite(result.change)
    assert "look like different people" in result.warnings[0]


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one clear line naming the file and the fix, exit status 2
# ---------------------------------------------------------------------------------------------------------------------


def _bad_files(folder, photo):
    face = Image.open(photo)
    files = {}
    files["not_an_image"] = folder / "notes.jpg"
    files["not_an_image"].write_text("this is text")
    buffer = io.BytesIO()
    face.save(buffer, format="JPEG")
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    files["no_face"] = folder / "wall.png"
    Image.new("RGB", (200, 200), (120, 130, 140)).save(files["no_face"])
    files["one_pixel"] = folder / "dot.png"
    Image.new("RGB", (1, 1)).save(files["one_pixel"])
    return files


@pytest.mark.parametrize("kind, message", [
    ("not_an_image", "not a recognised image format"),
    ("truncated", "damaged or truncated"),
    ("no_face", "no face found"),
    ("one_pixel", "too small"),
    ("missing", "does not exist"),
])
def test_compare_bad_input(kind, message, model_dir, photos, tmp_path, capsys):
    path = tmp_path / "nothing.jpg" if kind == "missing" else _bad_files(tmp_path, photos[0, 0])[kind]
    status, out, err = cli(["compare", str(path), str(photos[0, 1]), "--model", str(model_dir)], capsys)
    assert status == 2
    assert message in err and str(path) in err
    assert "Traceback" not in err


def test_compare_missing_model_folder(photos, tmp_path, capsys):
    status, _, err = cli(["compare", str(photos[0, 0]), str(photos[0, 1]), "--model", str(tmp_path / "none")], capsys)
    assert status == 2 and "does not exist" in err and "pretrain" in err


def test_awkward_but_valid_photos_are_compared(model_dir, photos, tmp_path):
    """Two faces (warned, largest used), different sizes (noted), CMYK JPEG and an EXIF-rotated phone photo."""
    comparer = FaceComparer.from_pretrained(str(model_dir))
    a, b = Image.open(photos[0, 0]), Image.open(photos[1, 0])
    side = 160  # two people side by side on a white page, each large enough for the detector
    two = Image.new("RGB", (2 * side + 60, side + 40), (255, 255, 255))
    two.paste(a.resize((side, side)), (20, 20))
    two.paste(b.resize((side, side)), (side + 40, 20))
    two.save(tmp_path / "two.png")
    result = comparer.compare(tmp_path / "two.png", photos[0, 1])
    assert any("2 faces" in w and "two.png" in w for w in result.warnings), result.warnings

    big = a.resize((2 * PHOTO, 2 * PHOTO))
    big.save(tmp_path / "big.png")
    result = comparer.compare(tmp_path / "big.png", photos[0, 1])
    assert any("differ a lot in size" in w for w in result.warnings)

    a.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    rotated = a.rotate(90, expand=True)  # stored sideways, EXIF says: rotate back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    rotated.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    reference = comparer.compare(photos[0, 0], photos[0, 1])
    for name in ("cmyk.jpg", "phone.jpg"):
        result = comparer.compare(tmp_path / name, photos[0, 1])
        assert result.faces[0]["source"] == "detector", name
        assert result.distance == pytest.approx(reference.distance, abs=0.05 + 0.5 * abs(reference.distance)), name


# ---------------------------------------------------------------------------------------------------------------------
# track
# ---------------------------------------------------------------------------------------------------------------------


def test_track_folder_in_exif_order_lists_skipped_photos(model_dir, photos, tmp_path, capsys):
    series = tmp_path / "series"
    series.mkdir()
    # File names in the opposite order to the capture times: EXIF time must win.
    for k, (name, key) in enumerate([("c.jpg", (0, 0)), ("b.jpg", (0, 1)), ("a.jpg", (1, 0))]):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = f"2024:01:0{k + 1} 10:00:00"
        Image.open(photos[key]).save(series / name, exif=exif.tobytes(), quality=95)
    Image.new("RGB", (200, 200), (90, 90, 90)).save(series / "d_noface.png")
    out_dir = tmp_path / "track"
    status, out, err = cli(["track", str(series), "--model", str(model_dir), "--out-dir", str(out_dir)], capsys)
    assert status == 0, err
    rows = list(csv.DictReader(open(out_dir / "track.csv")))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["c.jpg", "b.jpg", "a.jpg", "d_noface.png"]
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["c.jpg"]["status"] == "baseline" and by_name["c.jpg"]["timestamp"] == "2024-01-01T10:00:00"
    assert by_name["d_noface.png"]["status"] == "skipped" and "no face found" in by_name["d_noface.png"]["message"]
    assert by_name["a.jpg"]["status"] == "ok" and by_name["a.jpg"]["change"] != ""
    assert "skipped" in out and "d_noface.png" in out
    assert (out_dir / "track.png").stat().st_size > 1000


def test_track_csv_and_its_bad_inputs(model_dir, photos, tmp_path, capsys):
    table = tmp_path / "series.csv"
    table.write_text("image,timestamp\n" + "".join(f"{photos[k]},{t}\n" for t, k in
                                                   enumerate([(2, 0), (2, 1), (0, 0)])))
    status, out, err = cli(["track", str(table), "--model", str(model_dir), "--out-dir", str(tmp_path / "t")], capsys)
    assert status == 0, err
    rows = list(csv.DictReader(open(tmp_path / "t" / "track.csv")))
    assert [r["status"] for r in rows] == ["baseline", "ok", "ok"] and rows[0]["image"] == str(photos[2, 0])

    bad = tmp_path / "bad.csv"
    bad.write_text("file,time\nx.png,1\n")
    status, _, err = cli(["track", str(bad), "--model", str(model_dir)], capsys)
    assert status == 2 and "lacks the column(s) image, timestamp" in err and "bad.csv" in err

    single = tmp_path / "one"
    single.mkdir()
    Image.open(photos[0, 0]).save(single / "only.png")
    status, _, err = cli(["track", str(single), "--model", str(model_dir)], capsys)
    assert status == 2 and "at least two" in err

    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_series(str(tmp_path / "nowhere"))


def test_track_refuses_an_output_folder_that_holds_files_unless_overwrite(model_dir, photos, tmp_path, capsys):
    series = tmp_path / "series"
    series.mkdir()
    for name, key in (("a.png", (0, 0)), ("b.png", (0, 1))):
        Image.open(photos[key]).save(series / name)
    out_dir = tmp_path / "out"
    status, _, err = cli(["track", str(series), "--model", str(model_dir), "--out-dir", str(out_dir)], capsys)
    assert status == 0, err
    first = (out_dir / "track.csv").read_bytes()
    (out_dir / "track.csv").write_text("the first run's results, edited by hand\n")

    # A second run into the same folder is refused, names the flag and leaves the first run's files alone.
    status, _, err = cli(["track", str(series), "--model", str(model_dir), "--out-dir", str(out_dir)], capsys)
    assert status == 2 and "--overwrite" in err and "already holds files" in err and "track.csv" in err, err
    assert (out_dir / "track.csv").read_text() == "the first run's results, edited by hand\n"

    status, _, err = cli(["track", str(series), "--model", str(model_dir), "--out-dir", str(out_dir),
                          "--overwrite"], capsys)
    assert status == 0, err
    assert (out_dir / "track.csv").read_bytes() == first

    empty = tmp_path / "empty"  # an existing but empty folder is not a previous run: used without the flag
    empty.mkdir()
    status, _, err = cli(["track", str(series), "--model", str(model_dir), "--out-dir", str(empty)], capsys)
    assert status == 0 and (empty / "track.csv").is_file(), err

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    status, _, err = cli(["track", str(series), "--model", str(model_dir), "--out-dir", str(a_file),
                          "--overwrite"], capsys)
    assert status == 2 and "is a file, not a folder" in err and a_file.read_text() == "not a folder"


@pytest.mark.parametrize("value, cell", [
    ("=HYPERLINK(\"http://x\",\"y\").png", "'=HYPERLINK(\"http://x\",\"y\").png"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-1+1", "'-1+1"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("-inf", "'-inf"),
    ("photos/a.jpg", "photos/a.jpg"),
    ("-0.12", "-0.12"),
    ("+3", "+3"),
    ("-1.5e-05", "-1.5e-05"),
    (-0.12, "-0.12"),
    (-1.5e-05, "-1.5e-05"),
    (None, ""),
    (False, "False"),
])
def test_csv_cell_neutralises_formulas_and_keeps_numbers(value, cell):
    assert csv_cell(value) == cell


def test_track_csv_cells_cannot_become_spreadsheet_formulas(model_dir, photos, tmp_path, capsys, monkeypatch):
    """Photo names and timestamps come from the user's files: in track.csv they must stay text, numbers numbers."""
    monkeypatch.chdir(tmp_path)  # relative paths in the series CSV stay relative in track.csv's image column
    evil = '=HYPERLINK("evil.example","x").png'  # a file name cannot hold a slash
    Image.open(photos[1, 0]).save(tmp_path / evil)
    Image.open(photos[1, 1]).save(tmp_path / "@later.png")
    with open(tmp_path / "series.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("image", "timestamp"), (evil, "-5"), ("@later.png", "=1+1")])
    status, _, err = cli(["track", "series.csv", "--model", str(model_dir), "--out-dir", "out"], capsys)
    assert status == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out" / "track.csv", newline="")))
    assert [r["image"] for r in rows] == ["'" + evil, "'@later.png"]
    assert rows[0]["timestamp"] == "-5" and rows[1]["timestamp"] == "'=1+1"
    for row in rows:
        for column in ("change", "distance", "similarity"):
            float(row[column])  # numbers are written as numbers (no quote), negative ones included

    negative = tmp_path / "negative.csv"
    write_csv([TrackRow("a.png", None, "ok", change=-0.12, distance=0.5, similarity=-0.25)], str(negative))
    row = next(csv.DictReader(open(negative, newline="")))
    assert (row["change"], row["similarity"]) == ("-0.12", "-0.25")


def test_dlib_identity_check(model_dir, photos, capsys):
    status, out, err = cli(["compare", str(photos[0, 0]), str(photos[0, 1]), "--model", str(model_dir), "--json",
                            "--identity", "dlib"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["identity_check"] == "dlib" and result["threshold"] == 0.6
    assert result["same_person"] == (result["identity_distance"] < 0.6)
    # The descriptor distance is symmetric and zero for a photo against itself.
    comparer = FaceComparer.from_pretrained(str(model_dir), identity="dlib")
    same = comparer.compare(photos[1, 0], photos[1, 0])
    assert same.identity_distance == pytest.approx(0.0, abs=1e-6) and same.same_person is True
    status, _, err = cli(["compare", str(photos[0, 0]), str(photos[0, 1]), "--model", str(model_dir), "--no-align",
                          "--identity", "dlib"], capsys)
    assert status == 2 and "--no-align" in err

"""The demo page's handlers and limits (app.py) without a browser: the functions its buttons call, as wired by
build_demo, and Gradio's upload limit on a page launched on loopback."""

import importlib.util
import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from comface_hf import ComFaceConfig, ComFaceImageProcessor, ComFaceModel
from comface_hf.monitoring.calibration import render_identity_pairs

REPO = Path(__file__).resolve().parents[1]
SERVER_DIR = "srv-cache-5f3a9c"  # a folder name that must never reach the visitor


def load_app():
    spec = importlib.util.spec_from_file_location("comface_app", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "model"
    ComFaceModel(ComFaceConfig(backbone="resnet18", image_size=32, projection_hidden_size=32,
                               projection_dim=8)).save_pretrained(folder)
    ComFaceImageProcessor(crop_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Files as Gradio hands them to a handler: full paths inside its cache folder on the server."""
    folder = tmp_path_factory.mktemp("gradio") / SERVER_DIR / "0a1b2c"
    folder.mkdir(parents=True)
    images, _ = render_identity_pairs(1, 96, seed=1)
    files = {"a": folder / "a_first.png", "b": folder / "b_later.png", "wall": folder / "c_wall.png",
             "text": folder / "d_notes.jpg"}
    Image.fromarray(images[0, 0]).save(files["a"])
    Image.fromarray(images[0, 1]).save(files["b"])
    Image.new("RGB", (128, 128), (120, 120, 120)).save(files["wall"])
    files["text"].write_text("not an image")
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="module")
def handlers(app, model_dir):
    page = app.build_demo(str(model_dir))
    return {f.name: f.fn for f in page.fns.values()}  # what the Compare and Track buttons call


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """The system temporary folder, fresh and empty for this test."""
    root = tmp_path / "system-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_track_clicks_leave_no_temporary_files(handlers, uploads, temp_root):
    series = [uploads["a"], uploads["b"], uploads["wall"]]
    for _ in range(2):
        plot, table, summary = handlers["track"](series)
        assert summary == "2 photos tracked, 1 skipped (see the table).", summary
        assert plot is not None and [row[1] for row in table] == ["baseline", "ok", "skipped"]
    assert not list(temp_root.iterdir()), list(temp_root.iterdir())


def test_track_texts_name_files_by_base_name_only(handlers, uploads):
    _, table, _ = handlers["track"]([uploads["a"], uploads["b"], uploads["wall"], uploads["text"]])
    messages = {row[0]: row[5] for row in table}
    assert "no face found" in messages["c_wall.png"] and "c_wall.png" in messages["c_wall.png"], messages
    assert "d_notes.jpg" in messages["d_notes.jpg"], messages
    for text in messages.values():
        assert SERVER_DIR not in text and "/" not in text, text

    # One usable face: an error that lists every skipped photo.
    _, _, summary = handlers["track"]([uploads["a"], uploads["wall"], uploads["text"]])
    assert summary.startswith("**Error:**") and "c_wall.png" in summary and "d_notes.jpg" in summary, summary
    assert SERVER_DIR not in summary and "/" not in summary, summary


def test_compare_errors_name_the_file_by_base_name_only(handlers, uploads, temp_root):
    for bad in ("wall", "text"):
        _, _, text = handlers["compare"](uploads["a"], uploads[bad])
        assert text.startswith("**Error:**") and Path(uploads[bad]).name in text, text
        assert SERVER_DIR not in text and str(Path(uploads[bad]).parent) not in text, text
    _, _, text = handlers["compare"](uploads["a"], uploads["b"])
    assert "### Change:" in text and SERVER_DIR not in text
    assert not list(temp_root.iterdir())


def test_series_longer_than_the_limit_is_refused(app, handlers, uploads, monkeypatch):
    monkeypatch.setattr(app, "MAX_SERIES_PHOTOS", 2)
    _, table, summary = handlers["track"]([uploads["a"], uploads["b"], uploads["wall"]])
    assert table == [] and "at most 2" in summary and "comface track" in summary


def test_public_text_shortens_paths_but_not_urls_or_ratios(app):
    text = ("cannot read '/srv/gradio/ab12/my photo.jpg'; see https://huggingface.co/docs/x for help, "
            "1/3 of faces, /var/tmp/other/file.png too")
    shown = app.public_text(text, ["/srv/gradio/ab12/my photo.jpg"])
    assert shown == ("cannot read 'my photo.jpg'; see https://huggingface.co/docs/x for help, "
                     "1/3 of faces, file.png too")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uploads_over_the_size_limit_are_refused_by_gradio(app, model_dir):
    import httpx
    from gradio import utils as gradio_utils

    page = app.build_demo(str(model_dir))  # launched as a Space or a test would: no limit passed to launch()
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, footer_links=[])
    try:
        assert page.max_file_size == gradio_utils._parse_file_size(app.MAX_FILE_SIZE) > 0
        page.max_file_size = 50_000  # the server reads the limit per request: a small one keeps the test light
        url = f"http://127.0.0.1:{port}/gradio_api/upload"
        small = httpx.post(url, files={"files": ("small.png", b"x" * 40_000, "image/png")}, timeout=30)
        assert small.status_code == 200, small.text
        big = httpx.post(url, files={"files": ("big.png", b"x" * 60_000, "image/png")}, timeout=30)
        assert big.status_code == 413, (big.status_code, big.text)
    finally:
        page.close()


def test_main_passes_the_size_limit_to_launch(app, model_dir, monkeypatch):
    launched = {}
    monkeypatch.setattr(app.gr.Blocks, "launch", lambda self, *a, **k: launched.update(k), raising=True)
    app.main(["--model", str(model_dir), "--max-file-size", "3mb"])
    assert launched["max_file_size"] == "3mb" and launched["theme"] is not None
    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"

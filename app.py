"""ComFace demo page: compare two photos of a person, or follow a series of photos against a baseline.

    pip install -e ".[app]"
    python app.py                                  # outputs/comface-embedded/model on http://127.0.0.1:7860
    python app.py --model path/to/model --port 7861

As a Hugging Face Space (Gradio SDK) this file is the entry point; it loads the model folder named by --model, the
COMFACE_MODEL environment variable, or outputs/comface-embedded/model. The numbers come from
comface_hf.face_comparison, exactly as `comface compare` / `comface track` print them. Not a medical device.

Limits for a public page: uploads over --max-file-size (25mb) are refused by Gradio, a series is at most 100 photos,
Gradio's cache of uploads and outputs is emptied hourly, a click writes nothing else, and messages name files by
their base name only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a demo
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing

import gradio as gr  # noqa: E402

from comface_hf.errors import REPORTED_ERRORS  # noqa: E402
from comface_hf.face_comparison import FaceComparer, change_units, same_person_verdict  # noqa: E402

DEFAULT_MODEL = "outputs/comface-embedded/model"
TITLE = "ComFace: how much did this face change?"
#: Largest photo the page accepts: Gradio refuses bigger uploads before they reach the model (phone photos: a few MB).
MAX_FILE_SIZE = os.environ.get("COMFACE_MAX_FILE_SIZE", "25mb")
#: Most photos one Track click aligns and embeds (each costs a face detection on the CPU).
MAX_SERIES_PHOTOS = 100
#: Gradio's copies of uploads and outputs are deleted after an hour (checked every hour): faces are personal data.
DELETE_CACHE = (3600, 3600)

# An absolute path with at least one folder ("/tmp/gradio/3f2a/photo.jpg"), not a URL's "//" or a ratio ("1/3").
_SERVER_PATH = re.compile(r"(?<![\w.~/:])/(?:[^\s'\"`<>|/]+/)+([^\s'\"`<>|/]+)")


def public_text(text: str, paths=()) -> str:
    """``text`` with every server path shown by its base name: the uploads live in Gradio's cache folder on the
    server, whose location is no business of the visitor. ``paths``: the files of this click (replaced first, so a
    name with spaces is shortened too); any other absolute path is cut to its last part."""
    for path in sorted({str(p) for p in paths} | {os.path.realpath(p) for p in paths}, key=len, reverse=True):
        text = text.replace(path, Path(path).name)
    return _SERVER_PATH.sub(lambda match: match.group(1), text)


def _error_text(exc: BaseException, paths) -> str:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
    return f"**Error:** {public_text(str(message), paths)}"


def comparison_markdown(result) -> str:
    lines = [f"### Change: {result.change:+.3f} {result.units}",
             f"**Distance** l(ReLU(f(after) - f(before))): {result.distance:.3f} {result.units}"]
    if not result.signed:
        lines.append("_This pretrained model learned the size of a change, not its direction: read the distance._")
    lines.append(f"**Same person:** {same_person_verdict(result, markdown=True)}")
    lines += [f"- warning: {w}" for w in result.warnings]
    return "\n\n".join(lines)


def compare_photos(comparer, before, after):
    """The Compare button: (aligned before, aligned after, result markdown)."""
    if before is None or after is None:
        return None, None, "Upload two photos: the earlier one on the left, the later one on the right."
    try:
        result = comparer.compare(before, after)
    except REPORTED_ERRORS as exc:
        return None, None, _error_text(exc, (before, after))
    shown = [crop.resize((192, 192)) for crop in result.crops]  # the model's small input, enlarged to be seen
    return shown[0], shown[1], public_text(comparison_markdown(result), (before, after))


def track_photos(comparer, units: str, files):
    """The Track button: (plot image, table rows, summary markdown). Nothing is left on disk by a click."""
    from PIL import Image

    from comface_hf.monitoring.track import SeriesItem, plot_series, track_series

    if not files:
        return None, [], "Upload a series of photos (the first one is the baseline; ordered by file name)."
    paths = sorted(files if isinstance(files[0], str) else [f.name for f in files], key=lambda p: Path(p).name)
    if len(paths) > MAX_SERIES_PHOTOS:
        return None, [], (f"**Error:** {len(paths)} photos uploaded; the demo follows at most {MAX_SERIES_PHOTOS} "
                          "at a time. Upload fewer, or run `comface track` on your own machine for a longer series.")
    try:
        rows = track_series(comparer, [SeriesItem(p) for p in paths], progress=False)
    except REPORTED_ERRORS as exc:
        return None, [], _error_text(exc, paths)
    # The plot goes through a folder that is removed with this click; Gradio stores the returned image itself
    # (in its cache, which DELETE_CACHE empties).
    with tempfile.TemporaryDirectory(prefix="comface-track-") as folder:
        plot_file = Path(folder) / "track.png"
        plot_series(rows, units, str(plot_file))
        with Image.open(plot_file) as image:
            plot = image.convert("RGB")  # read whole before the folder goes
    table = [[Path(r.image).name, r.status, None if r.change is None else round(r.change, 3),
              None if r.distance is None else round(r.distance, 3),
              None if r.similarity is None else round(r.similarity, 3), public_text(r.message, paths)] for r in rows]
    skipped = sum(r.status == "skipped" for r in rows)
    return plot, table, f"{len(rows) - skipped} photos tracked, {skipped} skipped (see the table)."


def build_demo(model_path: str, identity: str = "comface", max_file_size=MAX_FILE_SIZE) -> gr.Blocks:
    """The page. Its ``launch`` refuses uploads over ``max_file_size`` (Gradio's limit) unless told otherwise."""
    comparer = FaceComparer.from_pretrained(model_path, identity=identity)
    units = change_units(comparer.config)

    def compare(before, after):
        return compare_photos(comparer, before, after)

    def track(files):
        return track_photos(comparer, units, files)

    theme = gr.themes.Default(font=["Helvetica", "Arial", "sans-serif"], font_mono=["monospace"])  # no web fonts
    with gr.Blocks(title="ComFace demo", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(f"# {TITLE}\nModel: `{model_path}` ({comparer.config.backbone}, {comparer.size} px); change in "
                    f"**{units}**. Faces are found and aligned first. Research demo, not a medical device.")
        with gr.Tab("Compare two photos"):
            with gr.Row():
                before = gr.Image(type="filepath", label="Before", elem_id="before", sources=["upload"])
                after = gr.Image(type="filepath", label="After", elem_id="after", sources=["upload"])
            button = gr.Button("Compare", variant="primary", elem_id="compare")
            with gr.Row():
                aligned_before = gr.Image(label="Before, aligned", elem_id="aligned-before", interactive=False)
                aligned_after = gr.Image(label="After, aligned", elem_id="aligned-after", interactive=False)
            result = gr.Markdown(elem_id="result")
            button.click(compare, [before, after], [aligned_before, aligned_after, result])
        with gr.Tab("Follow a series"):
            files = gr.File(file_count="multiple", file_types=["image"], label="Photos (first = baseline)",
                            elem_id="series")
            track_button = gr.Button("Track", variant="primary", elem_id="track")
            summary = gr.Markdown(elem_id="track-summary")
            plot = gr.Image(label="Change against the baseline", elem_id="track-plot", interactive=False)
            table = gr.Dataframe(headers=["photo", "status", "change", "distance", "similarity", "message"],
                                 elem_id="track-table", interactive=False)
            track_button.click(track, [files], [plot, table, summary])
    launch = demo.launch

    def launch_with_limits(*args, **kwargs):
        # Gradio takes the upload limit and the theme at launch; set here, every launch of this page (main(), a
        # Space, a test) has them, not only the one in main().
        kwargs.setdefault("max_file_size", max_file_size)
        kwargs.setdefault("theme", theme)
        return launch(*args, **kwargs)

    demo.launch = launch_with_limits
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("COMFACE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--identity", choices=["comface", "dlib"], default="comface",
                        help="same-person check: the model's g(f(.)) or dlib's face recognition (better on real photos)")
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE,
                        help="largest upload accepted, e.g. 25mb or 500kb (default: $COMFACE_MAX_FILE_SIZE or 25mb)")
    args = parser.parse_args(argv)
    demo = build_demo(args.model, args.identity, max_file_size=args.max_file_size)
    demo.launch(server_name=args.host, server_port=args.port, footer_links=[])


if __name__ == "__main__":
    from comface_hf.errors import run_cli

    run_cli(main)

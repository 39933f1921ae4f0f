"""ComFace demo page: compare two photos of a person, or follow a series of photos against a baseline.

    pip install -e ".[app]"
    python app.py                                  # outputs/comface-embedded/model on http://127.0.0.1:7860
    python app.py --model path/to/model --port 7861

As a Hugging Face Space (Gradio SDK) this file is the entry point; it loads the model folder named by --model, the
COMFACE_MODEL environment variable, or outputs/comface-embedded/model. The numbers come from
comface_hf.face_comparison, exactly as `comface compare` / `comface track` print them. Not a medical device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a demo
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing

import gradio as gr  # noqa: E402

from comface_hf.errors import REPORTED_ERRORS  # noqa: E402
from comface_hf.face_comparison import FaceComparer, change_units  # noqa: E402

DEFAULT_MODEL = "outputs/comface-embedded/model"
TITLE = "ComFace: how much did this face change?"


def comparison_markdown(result) -> str:
    lines = [f"### Change: {result.change:+.3f} {result.units}",
             f"**Distance** l(ReLU(f(after) - f(before))): {result.distance:.3f} {result.units}"]
    if not result.signed:
        lines.append("_This pretrained model learned the size of a change, not its direction: read the distance._")
    if result.identity_check == "dlib":
        verdict = {None: "not checked (no face found)", True: "yes",
                   False: "**no - they look like different people**"}[result.same_person]
        distance = "" if result.identity_distance is None else f", dlib face-recognition distance " \
            f"{result.identity_distance:.3f} (same below {result.threshold:.2f})"
        lines.append(f"**Same person:** {verdict}{distance}")
    elif result.similarity is None:
        lines.append("**Same person:** not checked (this model has no projection head g).")
    elif result.same_person is None:
        lines.append(f"**Same person:** similarity {result.similarity:.3f} (no calibrated threshold in this model).")
    else:
        verdict = "yes" if result.same_person else "**no - they look like different people**"
        rates = "" if result.false_accept_rate is None else (
            f" (threshold {result.threshold:.3f}: {100 * result.false_accept_rate:.1f}% false accepts, "
            f"{100 * result.false_reject_rate:.1f}% false rejects on rendered identities)")
        lines.append(f"**Same person:** {verdict}, similarity {result.similarity:.3f}{rates}")
    lines += [f"- warning: {w}" for w in result.warnings]
    return "\n\n".join(lines)


def build_demo(model_path: str, identity: str = "comface") -> gr.Blocks:
    comparer = FaceComparer.from_pretrained(model_path, identity=identity)
    units = change_units(comparer.config)

    def compare(before, after):
        if before is None or after is None:
            return None, None, "Upload two photos: the earlier one on the left, the later one on the right."
        try:
            result = comparer.compare(before, after)
        except REPORTED_ERRORS as exc:
            return None, None, f"**Error:** {exc}"
        shown = [crop.resize((192, 192)) for crop in result.crops]  # the model's small input, enlarged to be seen
        return shown[0], shown[1], comparison_markdown(result)

    def track(files):
        from comface_hf.monitoring.track import SeriesItem, plot_series, track_series

        if not files:
            return None, [], "Upload a series of photos (the first one is the baseline; ordered by file name)."
        paths = sorted(files if isinstance(files[0], str) else [f.name for f in files], key=lambda p: Path(p).name)
        try:
            rows = track_series(comparer, [SeriesItem(p) for p in paths], progress=False)
        except REPORTED_ERRORS as exc:
            return None, [], f"**Error:** {exc}"
        plot = Path(tempfile.mkdtemp(prefix="comface-track-")) / "track.png"
        plot_series(rows, units, str(plot))
        table = [[Path(r.image).name, r.status, None if r.change is None else round(r.change, 3),
                  None if r.distance is None else round(r.distance, 3),
                  None if r.similarity is None else round(r.similarity, 3), r.message] for r in rows]
        skipped = sum(r.status == "skipped" for r in rows)
        return str(plot), table, f"{len(rows) - skipped} photos tracked, {skipped} skipped (see the table)."

    theme = gr.themes.Default(font=["Helvetica", "Arial", "sans-serif"], font_mono=["monospace"])  # no web fonts
    with gr.Blocks(title="ComFace demo") as demo:
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
    demo.comfy_theme = theme
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("COMFACE_MODEL", DEFAULT_MODEL))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--identity", choices=["comface", "dlib"], default="comface",
                        help="same-person check: the model's g(f(.)) or dlib's face recognition (better on real photos)")
    args = parser.parse_args(argv)
    demo = build_demo(args.model, args.identity)
    demo.launch(server_name=args.host, server_port=args.port, theme=demo.comfy_theme, footer_links=[])


if __name__ == "__main__":
    from comface_hf.errors import run_cli

    run_cli(main)

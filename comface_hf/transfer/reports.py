"""Result tables in the form of the paper's Tables 2, 3 and 6, and scatter plots of predicted against true change.

Rows are methods (initialisations), columns are task x {linear, fine-tuning} x {MAE, Corr., Acc.}, each cell
"mean ± std" over the cross-validation folds. Input is a list of ``results.json`` dicts written by
:func:`comface_hf.transfer.run_protocol`, so separate runs combine into one table::

    python -m comface_hf.transfer.reports outputs/transfer/*/results.json --out table   # -> table.md, table.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

MODE_LABELS = {"linear": "Linear", "finetune": "Fine-tuning"}
#: (results key, column header, scale for display, decimals): accuracy in percent as in the paper.
METRIC_COLUMNS: tuple[tuple[str, str, float, int], ...] = (
    ("mae", "MAE↓", 1.0, 3),
    ("pearson", "Corr.↑", 1.0, 3),
    ("direction_accuracy", "Acc.↑", 100.0, 1),
)


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read ``results.json`` files (or folders holding one); a clear error names a file that is not one."""
    results = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found: pass results.json files written by training/transfer.py.")
        data = json.loads(path.read_text(encoding="utf-8"))
        missing = {"task", "mode", "aggregate"} - set(data)
        if missing:
            raise ValueError(f"{str(path)!r} is not a transfer results file (lacks {sorted(missing)}).")
        results.append(data)
    return results


def _method(result: dict[str, Any]) -> str:
    return str(result.get("method") or result.get("init") or "?")


def _ordered(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))  # first-seen order: the order the user listed the runs


def table_layout(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
    """(methods, [(task, mode)]) in first-seen order; modes linear before fine-tuning within a task."""
    methods = _ordered([_method(r) for r in results])
    tasks = _ordered([r["task"] for r in results])
    columns = [
        (task, mode)
        for task in tasks
        for mode in ("linear", "finetune")
        if any(r["task"] == task and r["mode"] == mode for r in results)
    ]
    return methods, columns


def _cell(result: Optional[dict[str, Any]], key: str, scale: float, decimals: int) -> tuple[str, Optional[float]]:
    if result is None:
        return "–", None
    stats = result["aggregate"].get(key) or {}
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "nan", None
    std = 0.0 if std is None else std
    return f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}", float(mean)


def results_table(
    results: Sequence[dict[str, Any]], bold_best: bool = True
) -> tuple[list[str], list[str], list[list[str]], list[list[Optional[float]]]]:
    """The table as (header_task_mode, header_metric, rows of strings, rows of means).

    When several results share (method, task, mode), the last one wins (a re-run replaces the earlier one).
    """
    methods, columns = table_layout(results)
    by_key = {(_method(r), r["task"], r["mode"]): r for r in results}
    head_group, head_metric = ["Method"], [""]
    for task, mode in columns:
        for _, label, _, _ in METRIC_COLUMNS:
            head_group.append(f"{task} {MODE_LABELS[mode]}")
            head_metric.append(label)
    text_rows, value_rows = [], []
    for method in methods:
        texts, values = [method], [None]
        for task, mode in columns:
            for key, _, scale, decimals in METRIC_COLUMNS:
                text, value = _cell(by_key.get((method, task, mode)), key, scale, decimals)
                texts.append(text)
                values.append(value)
        text_rows.append(texts)
        value_rows.append(values)
    if bold_best and len(methods) > 1:
        for j in range(1, len(head_metric)):
            column = [row[j] for row in value_rows]
            if all(v is None for v in column):
                continue
            lower_better = head_metric[j].startswith("MAE")
            best = (min if lower_better else max)(v for v in column if v is not None)
            for i, v in enumerate(column):
                if v is not None and v == best:
                    text_rows[i][j] = f"**{text_rows[i][j]}**"
    return head_group, head_metric, text_rows, value_rows


def format_markdown(results: Sequence[dict[str, Any]], title: Optional[str] = None) -> str:
    """A Markdown table: one header row "task mode metric", best value per column in bold."""
    group, metric, rows, _ = results_table(results)
    header = [group[0]] + [f"{g} {m}" for g, m in zip(group[1:], metric[1:])]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    lines.append("")
    lines.append("Values: mean ± std over cross-validation folds (subject-disjoint); Acc. = direction accuracy in %.")
    return "\n".join(lines) + "\n"


def write_table(results: Sequence[dict[str, Any]], out: str | Path, title: Optional[str] = None) -> tuple[Path, Path]:
    """Write ``<out>.md`` (Markdown) and ``<out>.csv`` (method, task, mode and each metric's mean and std)."""
    out = Path(out)
    if out.suffix in (".md", ".csv"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out.with_suffix(".md"), out.with_suffix(".csv")
    md_path.write_text(format_markdown(results, title), encoding="utf-8")
    methods, columns = table_layout(results)
    by_key = {(_method(r), r["task"], r["mode"]): r for r in results}
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        header = ["method"]
        for task, mode in columns:
            for key, _, _, _ in METRIC_COLUMNS:
                header += [f"{task}/{mode}/{key}_mean", f"{task}/{mode}/{key}_std"]
        writer.writerow(header)
        for method in methods:
            row: list[Any] = [method]
            for task, mode in columns:
                result = by_key.get((method, task, mode))
                for key, _, _, _ in METRIC_COLUMNS:
                    stats = (result or {}).get("aggregate", {}).get(key) or {}
                    row += [stats.get("mean", ""), stats.get("std", "")]
            writer.writerow(["" if v is None else v for v in row])
    return md_path, csv_path


def plot_scatter(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    path: str | Path,
    title: Optional[str] = None,
) -> Path:
    """One panel per series of predicted (y axis) against true (x axis) change, with the identity line.

    Args:
        series: ``[(name, predictions [N], labels [N])]``, e.g. one per method x mode for one task.
        path: PNG to write.
        title: figure title (e.g. the task).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    n = max(1, len(series))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, preds, labels) in zip(axes.flat, series):
        preds, labels = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
        ax.scatter(labels, preds, s=6, alpha=0.5)
        if labels.size:
            lo = float(min(labels.min(), np.nanmin(preds))) if np.isfinite(preds).any() else float(labels.min())
            hi = float(max(labels.max(), np.nanmax(preds))) if np.isfinite(preds).any() else float(labels.max())
            ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
            mae = float(np.mean(np.abs(preds - labels)))
            ax.set_title(f"{name}\nMAE {mae:.2f}, n={labels.size}", fontsize=8)
        else:
            ax.set_title(f"{name}\n(no predictions)", fontsize=8)
        ax.set_xlabel("true change", fontsize=8)
        ax.set_ylabel("predicted change", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_predictions(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) from a run folder's predictions.csv."""
    with open(Path(folder) / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["prediction"]) for r in rows]), np.array([float(r["label"]) for r in rows])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Combine transfer results.json files into one table (Markdown + CSV).")
    parser.add_argument("results", nargs="+", help="results.json files or run folders")
    parser.add_argument("--out", default="transfer_table", help="output prefix: writes <out>.md and <out>.csv")
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--scatter", action="store_true",
        help="also write <out>_<task>_scatter.png from the runs' predictions.csv (one panel per method and mode)",
    )
    args = parser.parse_args(argv)
    results = load_results(args.results)
    md_path, csv_path = write_table(results, args.out, args.title)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path} and {csv_path}")
    if args.scatter:
        folders = [Path(p) if Path(p).is_dir() else Path(p).parent for p in args.results]
        for task in _ordered([r["task"] for r in results]):
            series = [
                (f"{_method(r)} / {MODE_LABELS[r['mode']]}", *read_predictions(folder))
                for r, folder in zip(results, folders)
                if r["task"] == task and (folder / "predictions.csv").is_file()
            ]
            if series:
                print(f"wrote {plot_scatter(series, f'{args.out}_{task}_scatter.png', title=task)}")


if __name__ == "__main__":
    main()

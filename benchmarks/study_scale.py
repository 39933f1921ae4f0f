"""Figure 3 (Sec. 4.5, "Training Scale"): downstream fine-tuning performance against the pretraining scale.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m benchmarks.study_scale [--scale cpu|paper]
        [--seeds 0 1] [--output_dir benchmarks/results/scale] [--cache_dir outputs/study_cache]

The paper varies the number of synthetic identities, so the number of images grows with it (0.1 M, 5 M, 20 M, 35 M
images). Here each point sets the identities and the pairs per epoch together (same epochs and batch), so "scale"
means both more identities and more pairs seen, as in the paper. The largest CPU point equals Table 7's "(c) Both"
and reuses its cached pretraining. Scratch (no pretraining) is drawn as the reference line. Writes ``figure3.png``,
``figure3.md``/``.csv``/``.json`` with the verdict on claim (e).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.studies import (
    TASK_LABELS,
    Variant,
    claim_line,
    mean_over_tasks,
    run_and_write_study,
    scale_from_args,
    study_argument_parser,
)

#: (identities, pairs per epoch) of each point. CPU: 4 scales up to Table 7's setting (200 identities, 256 pairs).
CPU_POINTS = [(25, 64), (50, 128), (100, 192), (200, 256)]
#: Paper: 0.1 M, 5 M, 20 M, 35 M images of 250k identities at 35 M; 90% of them train (31.5 M pairs per epoch).
PAPER_POINTS = [(714, 90_000), (35_714, 4_500_000), (142_857, 18_000_000), (250_000, 31_500_000)]


def variants(points: list[tuple[int, int]]) -> list[Variant]:
    rows = [Variant(f"{n} identities", num_identities=n, samples_per_epoch=s,
                    info=(("Identities", str(n)), ("Pairs/epoch", str(s)))) for n, s in points]
    return rows + [Variant("Scratch", pretrain=False, info=(("Identities", "0"), ("Pairs/epoch", "0")))]


def plot(study: dict, points: list[tuple[int, int]], path: Path) -> Path:
    """One panel per task (Pearson) plus the mean over tasks; error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = study["tasks"]
    names = [f"{n} identities" for n, _ in points if f"{n} identities" in study["rows"]]
    x = [int(name.split()[0]) for name in names]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.4 * (len(tasks) + 1), 3.2), squeeze=False)
    panels = [(TASK_LABELS.get(t, t), lambda row, t=t: row["summary"][t]["pearson"]) for t in tasks]
    panels.append(("Mean over tasks", lambda row: mean_over_tasks(row, tasks)))
    for ax, (label, get) in zip(axes[0], panels):
        stats = [get(study["rows"][name]) for name in names]
        ax.errorbar(x, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o", capsize=3,
                    label="ComFace")
        if "Scratch" in study["rows"]:
            ref = get(study["rows"]["Scratch"])
            ax.axhline(ref["mean"], color="grey", linestyle="--", label="Scratch")
            ax.axhspan(ref["mean"] - ref["std"], ref["mean"] + ref["std"], color="grey", alpha=0.15)
        ax.set_xscale("log")
        ax.minorticks_off()  # log-axis minor labels overlap at these few points
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_xlabel("pretraining identities")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Pearson (fine-tuning)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Figure 3 at scale `{study['scale']['name']}` (mean ± std over seeds {study['seeds']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def claims(study: dict, points: list[tuple[int, int]]) -> list[str]:
    tasks = study["tasks"]
    names = [f"{n} identities" for n, _ in points if f"{n} identities" in study["rows"]]
    if len(names) < 2:
        return ["Claim (e): not assessed (fewer than two scales were run)."]
    means = [mean_over_tasks(study["rows"][name], tasks)["mean"] for name in names]
    monotonic = all(b > a for a, b in zip(means, means[1:]))
    return [
        claim_line(study, "Claim (e) largest scale > smallest scale", names[-1], names[0]),
        f"Claim (e) monotonic growth of the mean Pearson over the {len(names)} scales: "
        f"{'yes' if monotonic else 'no'} ({' → '.join(f'{m:.3f}' for m in means)}).",
        claim_line(study, "Largest scale > scratch", names[-1], "Scratch"),
    ]


def main() -> None:
    args = study_argument_parser(__doc__.split("\n")[0], "scale").parse_args()
    points = CPU_POINTS if args.scale == "cpu" else PAPER_POINTS
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def write_plot(study: dict) -> None:
        if study["rows"]:
            plot(study, points, out / "figure3.png")

    md, csv_path = run_and_write_study(
        args, variants(points), scale_from_args(args), "figure3", "Figure 3 — training scale (fine-tuning)",
        info_columns=("Identities", "Pairs/epoch"), claims=lambda study: claims(study, points),
        lead_notes=("", "Plot: [figure3.png](figure3.png)"), on_write=write_plot)
    print(f"Wrote {md}, {csv_path} and {out / 'figure3.png'}")


if __name__ == "__main__":
    main()

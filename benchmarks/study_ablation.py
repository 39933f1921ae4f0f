"""Table 7 (Sec. 4.5): ablation of ComFace's pretraining, transferred by fine-tuning to the synthetic tasks.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m benchmarks.study_ablation [--scale cpu|paper]
        [--seeds 0 1] [--output_dir benchmarks/results/ablation] [--cache_dir outputs/study_cache]

Rows: (a) inter-personal only, (b) intra-personal only, (c) both (the final setting), (d) both with the signed
intra-personal target alpha_y - alpha_x, (e) both without the curriculum, and scratch (no pretraining). Writes
``table7.md``/``.csv``/``.json`` with the claims (a)-(d) of issue 6 evaluated mechanically (see studies.claim_line).
"""

from __future__ import annotations

from benchmarks.studies import Variant, claim_line, run_and_write_study, scale_from_args, study_argument_parser

ABS, SIGNED = "|α_y − α_x|", "α_y − α_x"
VARIANTS = [
    Variant("(a) Inter", learning="inter", info=(("Learning", "Inter"), ("Intra GT", ABS), ("Curriculum", "✓"))),
    Variant("(b) Intra", learning="intra", info=(("Learning", "Intra"), ("Intra GT", ABS), ("Curriculum", "✓"))),
    Variant("(c) Both", learning="both", info=(("Learning", "Both"), ("Intra GT", ABS), ("Curriculum", "✓"))),
    Variant("(d) Both, signed GT", intra_target="signed",
            info=(("Learning", "Both"), ("Intra GT", SIGNED), ("Curriculum", "✓"))),
    Variant("(e) Both, no curriculum", curriculum=False,
            info=(("Learning", "Both"), ("Intra GT", ABS), ("Curriculum", ""))),
    Variant("Scratch", pretrain=False, info=(("Learning", "none"), ("Intra GT", "–"), ("Curriculum", "–"))),
]


def claims(study: dict) -> list[str]:
    """Claims (a)-(d) of issue 6 as one verdict line each (mean Pearson over the tasks)."""
    return [
        claim_line(study, "Claim (a) intra > inter", "(b) Intra", "(a) Inter"),
        claim_line(study, "Claim (b) both > intra", "(c) Both", "(b) Intra"),
        claim_line(study, "Claim (b') both > inter", "(c) Both", "(a) Inter"),
        claim_line(study, "Claim (c) absolute GT > signed GT", "(c) Both", "(d) Both, signed GT"),
        claim_line(study, "Claim (d) curriculum > none", "(c) Both", "(e) Both, no curriculum"),
        claim_line(study, "Pretraining > scratch", "(c) Both", "Scratch"),
    ]


def main() -> None:
    args = study_argument_parser(__doc__.split("\n")[0], "ablation").parse_args()
    md, csv_path = run_and_write_study(
        args, VARIANTS, scale_from_args(args), "table7", "Table 7 — ablation (fine-tuning)",
        info_columns=("Learning", "Intra GT", "Curriculum"), claims=claims,
        claims_heading="**Claims** (mean Pearson over the tasks; verdicts computed by benchmarks/studies.claim_line)")
    print(f"Wrote {md} and {csv_path}")


if __name__ == "__main__":
    main()

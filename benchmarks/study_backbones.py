"""Table 8 (Sec. 4.6): ComFace with several backbones, transferred by fine-tuning to the synthetic tasks.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m benchmarks.study_backbones [--scale cpu|paper]
        [--seeds 0 1] [--output_dir benchmarks/results/backbones] [--cache_dir outputs/study_cache]

Rows: ResNet18, ResNet50, ResNet101, ViT-B/16 (``vit_base_patch16_224`` built at the study's image size: ComFaceConfig
passes ``image_size`` to timm as ``img_size``, so at 32 px the ViT sees a 2 x 2 grid of 16-px patches). At the CPU
scale these are full-size networks on a 2-core CPU, so the pretraining and transfer are *tiny* (see CPU_OVERRIDES;
recorded in the table header): the table checks that the machinery runs for every backbone and gives a first, noisy
comparison, not the paper's numbers. The paper's claim — ResNet50 best — is evaluated pairwise.
"""

from __future__ import annotations

from benchmarks.studies import Variant, claim_line, run_and_write_study, scale_from_args, study_argument_parser

VARIANTS = [
    Variant("ResNet18", backbone="resnet18", info=(("Backbone", "resnet18"),)),
    Variant("ResNet50", backbone="resnet50", info=(("Backbone", "resnet50"),)),
    Variant("ResNet101", backbone="resnet101", info=(("Backbone", "resnet101"),)),
    Variant("ViT-B/16", backbone="vit_base_patch16_224", info=(("Backbone", "vit_base_patch16_224"),)),
]
#: Tiny CPU scale: 4 x 32 = 128 pairs per pretraining (8 optimiser steps over 2 epochs), 12 unseen subjects x 4
#: images per task, 1 fine-tuning epoch. ResNet101 and ViT-B take seconds per step on the shared 2-core CPU.
CPU_OVERRIDES = dict(samples_per_epoch=64, num_epochs=2, global_batch_size=32, projection_hidden_size=512,
                     validation_pairs=64, transfer_subjects=12, transfer_images_per_subject=4, pairs_per_subject=4,
                     transfer_epochs=1, transfer_batch_size=16)


def claims(study: dict) -> list[str]:
    rows = study["rows"]
    return [claim_line(study, f"Paper: ResNet50 > {other}", "ResNet50", other)
            for other in ("ResNet18", "ResNet101", "ViT-B/16") if other in rows and "ResNet50" in rows]


def main() -> None:
    args = study_argument_parser(__doc__.split("\n")[0], "backbones").parse_args()
    md, csv_path = run_and_write_study(
        args, VARIANTS, scale_from_args(args, **CPU_OVERRIDES), "table8", "Table 8 — backbones (fine-tuning)",
        info_columns=("Backbone",), claims=claims)
    print(f"Wrote {md} and {csv_path}")


if __name__ == "__main__":
    main()

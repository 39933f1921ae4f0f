"""Render the README.md model card of a saved ComFace folder from the repository's model_card.md template."""

from __future__ import annotations

import os
from pathlib import Path

TEMPLATE = Path(__file__).with_name("model_card_template.md")


def _markdown_table(rows: dict) -> str:
    if not rows:
        return "_Not filled: this folder was saved outside a training run._"
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)


def write_model_card(model, save_directory: str, **values) -> None:
    """Write `save_directory/README.md` with Hub metadata and the model's settings.

    Args:
        values: optional `model_id`, `training_data`, `training_procedure` (str), `validation` and `transfer`
            (dict metric -> value), `datasets` (list of dataset ids), `tags`.
    """
    if not TEMPLATE.exists():  # remote-code copies of the package carry no template
        return
    from huggingface_hub import ModelCard, ModelCardData

    config = model.config
    card_data = ModelCardData(
        library_name="transformers",
        license=values.get("license", "apache-2.0"),
        pipeline_tag="image-feature-extraction",
        tags=["comface", "face", "representation-learning", "synthetic-data", *values.get("tags", [])],
        datasets=values.get("datasets"),
        base_model=values.get("base_model"),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=values.get("model_name", f"ComFace ({config.backbone}, {config.image_size} px)"),
        model_id=values.get("model_id", os.path.basename(os.path.abspath(save_directory))),
        backbone=config.backbone,
        num_parameters=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
        image_size=config.image_size,
        projection_dim=config.projection_dim,
        temperature=config.temperature,
        inter_loss_weight=config.inter_loss_weight,
        intra_loss_weight=config.intra_loss_weight,
        intra_target=config.intra_target,
        training_data=values.get(
            "training_data", "Not recorded: this folder was saved outside a training run."
        ),
        training_procedure=values.get(
            "training_procedure", "Not recorded: this folder was saved outside a training run."
        ),
        validation_table=_markdown_table(values.get("validation", {})),
        transfer_table=_markdown_table(values.get("transfer", {})) if values.get("transfer") else "",
    )
    card.save(os.path.join(save_directory, "README.md"))

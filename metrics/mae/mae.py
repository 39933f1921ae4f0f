"""Mean absolute error between predicted and true facial changes (ComFace, Sec. 4.3)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Mean absolute error (MAE) between predicted and true signed changes
(value_y - value_x), e.g. AU intensity, weight (kg) or age (years) change.
MAE = mean(|prediction - reference|); lower is better.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted changes.
    references (`list` of `float`): true changes, same length.
Returns:
    mae (`float`): mean absolute error; NaN when there are no pairs.
Examples:
    >>> mae = evaluate.load("/path/to/comface_hf/metrics/mae")
    >>> mae.compute(predictions=[1.0, -2.0], references=[0.5, -1.0])
    {'mae': 0.75}
"""

_CITATION = """\
@misc{akamatsu2024comface,
  title={ComFace: Facial Representation Learning with Synthetic Data for Comparing Faces},
  author={Akamatsu, Yusuke and Umematsu, Terumi and Imaoka, Hitoshi and Gomi, Shizuko and Tsurushima, Hideo},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mae(evaluate.Metric):
    """Mean absolute error of predicted vs true changes."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.mean_absolute_error.html"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        preds = np.asarray(predictions, dtype=np.float64)
        refs = np.asarray(references, dtype=np.float64)
        if preds.size == 0:
            return {"mae": float("nan")}
        return {"mae": float(np.mean(np.abs(preds - refs)))}

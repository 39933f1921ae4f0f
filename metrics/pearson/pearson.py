"""Pearson correlation between predicted and true facial changes (ComFace, Sec. 4.3)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Pearson correlation coefficient ("Corr." in the ComFace paper) between predicted and
true signed changes (value_y - value_x); higher is better, in [-1, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted changes.
    references (`list` of `float`): true changes, same length.
Returns:
    pearson (`float`): the correlation; NaN when fewer than two pairs or when either
    side is constant (the coefficient is undefined there, as in scipy.stats.pearsonr).
Examples:
    >>> pearson = evaluate.load("/path/to/comface_hf/metrics/pearson")
    >>> pearson.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 2.5])["pearson"]
    0.9819805060619656
"""

_CITATION = """\
@misc{akamatsu2024comface,
  title={ComFace: Facial Representation Learning with Synthetic Data for Comparing Faces},
  author={Akamatsu, Yusuke and Umematsu, Terumi and Imaoka, Hitoshi and Gomi, Shizuko and Tsurushima, Hideo},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pearson(evaluate.Metric):
    """Pearson correlation of predicted vs true changes."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        x = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(references, dtype=np.float64)
        if x.size < 2:
            return {"pearson": float("nan")}
        # Centre first, in float64: the textbook formula on raw sums loses precision.
        xc, yc = x - x.mean(), y - y.mean()
        denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
        if denom == 0.0:
            return {"pearson": float("nan")}
        return {"pearson": float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))}

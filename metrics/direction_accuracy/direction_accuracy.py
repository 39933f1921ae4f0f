"""Direction accuracy of predicted facial changes (ComFace "Acc.", Sec. 4.3)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Direction accuracy ("Acc." in the ComFace paper, used for weight change): the fraction
of pairs whose predicted change has the same sign as the true change (increase vs
decrease, e.g. weight gain vs loss).

Zero true change: pairs with |reference| <= zero_tolerance (default 0, i.e. exactly
zero) have no direction and are EXCLUDED from both numerator and denominator. A
prediction of exactly 0 for a non-zero true change counts as wrong (it commits to no
direction).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted changes.
    references (`list` of `float`): true changes, same length.
    zero_tolerance (`float`, default 0.0): references with absolute value at most this
        are treated as "no change" and excluded.
Returns:
    direction_accuracy (`float`): in [0, 1]; NaN when no pair has a non-zero true change.
Examples:
    >>> acc = evaluate.load("/path/to/comface_hf/metrics/direction_accuracy")
    >>> acc.compute(predictions=[1.0, -1.0, 0.5, 2.0], references=[2.0, 1.0, 0.0, 3.0])
    {'direction_accuracy': 0.6666666666666666}
"""

_CITATION = """\
@misc{akamatsu2024comface,
  title={ComFace: Facial Representation Learning with Synthetic Data for Comparing Faces},
  author={Akamatsu, Yusuke and Umematsu, Terumi and Imaoka, Hitoshi and Gomi, Shizuko and Tsurushima, Hideo},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DirectionAccuracy(evaluate.Metric):
    """Fraction of pairs with sign(prediction) == sign(reference), zero references excluded."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
        )

    def _compute(self, predictions, references, zero_tolerance: float = 0.0) -> dict[str, float]:
        preds = np.asarray(predictions, dtype=np.float64)
        refs = np.asarray(references, dtype=np.float64)
        keep = np.abs(refs) > zero_tolerance
        if not keep.any():
            return {"direction_accuracy": float("nan")}
        return {"direction_accuracy": float(np.mean(np.sign(preds[keep]) == np.sign(refs[keep])))}

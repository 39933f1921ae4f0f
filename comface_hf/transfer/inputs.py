"""From dataset rows to model inputs and features: the per-row transform (decode, align, resize, normalise), the
image tensors kept for a run, the stored pairs as a Dataset, and backbone features for the exact ridge head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
from torch import nn

from .models import ChangeModelSpec
from .pairs import ChangePair
from .tasks import TaskData


class _RowTensors:
    """Model-ready tensors of the task's images, computed on first use and (with ``keep``) kept in memory.

    ``transform`` maps one dataset row (``image`` and, for real photos, ``landmarks``/``landmark_scheme``) to a
    normalised ``[C, S, S]`` tensor; with ``keep`` each image is decoded and aligned once per run, whatever the number
    of epochs and folds.
    """

    def __init__(self, data: TaskData, transform: Callable[[dict], torch.Tensor], keep: bool = True):
        columns = [c for c in ("image", "landmarks", "landmark_scheme") if c in data.dataset.column_names]
        self.rows = data.dataset.select_columns(columns)
        self.transform, self.keep = transform, keep
        self.cache: dict[int, torch.Tensor] = {}
        self.crops = data.crops if isinstance(transform, RowTransform) else None

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        tensor = self.cache.get(index)
        if tensor is None:
            if self.crops is not None:  # the aligned crop is shared by every run over the same table
                key = (index, self.transform.size)
                crop = self.crops.get(key)
                if crop is None:
                    crop = self.transform.crop(self.rows[index])
                    if self.keep:
                        self.crops[key] = crop
                tensor = self.transform.to_tensor(crop)
            else:
                tensor = self.transform(self.rows[index])
            if self.keep:
                self.cache[index] = tensor
        return tensor

    def warm(self, indices: Sequence[int], show_progress: bool = False) -> None:
        """Decode and align ``indices`` now (with a progress bar), so epochs only read memory."""
        from tqdm.auto import tqdm

        if not self.keep:
            return
        todo = sorted({int(i) for i in indices} - self.cache.keys())
        for i in tqdm(todo, desc="decoding and aligning images", disable=not show_progress or len(todo) < 50,
                      leave=False):
            self[i]


class RowTransform:
    """One dataset row -> the model's input: warped into the canonical face frame with the row's own landmarks (when
    the builder stored some, see ``--align``), then resized/normalised by the image processor with ``align="none"``.

    Rows without landmarks (``--align none``, rendered synthetic faces) go to the processor whole (shorter side
    resized, centre crop). The same function serves linear evaluation and fine-tuning; :meth:`crop` (the slow,
    init-independent part) and :meth:`to_tensor` are separate so crops can be shared across inits.
    """

    def __init__(self, spec: ChangeModelSpec):
        from ..face_alignment import FaceAligner

        self.size = int(spec.image_size)
        self.processor = spec.image_processor()
        # No detector: the builder already chose each row's landmarks (``--align``); here they are only applied.
        self.aligner = FaceAligner(size=self.size, detector=None, skip_if_aligned=False, warn_small=False)

    def crop(self, row: dict) -> Any:
        # Imported here, at call time: the one alignment function, looked up where it lives.
        from ..face_alignment import align_face, has_landmarks

        landmarks = row.get("landmarks")
        # The stored landmarks are this row's whole alignment decision: "landmarks" applies them, "none" (a row the
        # builder kept without a face) leaves the image whole.
        mode = "landmarks" if has_landmarks(landmarks) else "none"
        face = align_face(row["image"], mode, landmarks, scheme=row.get("landmark_scheme") or "auto",
                          aligner=self.aligner)
        return row["image"] if face is None else face.image

    def to_tensor(self, image: Any) -> torch.Tensor:
        return self.processor(image, align="none", return_tensors="pt")["pixel_values"][0]

    def __call__(self, row: dict) -> torch.Tensor:
        return self.to_tensor(self.crop(row))


def row_transform(spec: ChangeModelSpec) -> RowTransform:
    """The per-row input function of ``spec`` (see :class:`RowTransform`)."""
    return RowTransform(spec)


class _StoredPairs(torch.utils.data.Dataset):
    """Pairs over stored per-image tensors (images or backbone features) with ``pair_index`` (the row of pairs.csv).

    ``store[row]`` is the tensor of image row ``row`` (``row_of`` maps image rows to store rows; identity when
    omitted). With features, the ``pixel_values_x``/``pixel_values_y`` keys hold h `[F]` (not images) so that the
    training loop, `accelerator.prepare` and `gather_for_metrics` stay identical; `_HeadOnFeatures` consumes them.
    """

    def __init__(self, store: Any, pairs: Sequence[ChangePair], indices: Sequence[int],
                 row_of: Optional[dict[int, int]] = None):
        self.store, self.row_of, self.pairs, self.indices = store, row_of, list(pairs), list(indices)

    def __len__(self) -> int:
        return len(self.pairs)

    def _get(self, row: int) -> torch.Tensor:
        return self.store[self.row_of[row] if self.row_of is not None else row]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.pairs[i]
        return {
            "pixel_values_x": self._get(p.index_x),
            "pixel_values_y": self._get(p.index_y),
            "labels": torch.tensor(p.label, dtype=torch.float32),
            "pair_index": torch.tensor(self.indices[i]),
        }


def _augment_normalised(pixel_values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator):
    """SimCLR augmentation of normalised images: undo the normalisation, augment in [0, 1], normalise again."""
    from ..pretraining.augment import augment_batch

    return (augment_batch((pixel_values * std + mean).clamp(0, 1), generator) - mean) / std


class _HeadOnFeatures(nn.Module):
    """l applied to stored features: the change-estimation forward with f already evaluated.

    The same step as the models' forward after the backbone (`change_from_features`, including `symmetric_change`),
    sharing the model's `difference_head` module, so training this trains the model's l.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.difference_head = model.difference_head
        self.symmetric = bool(getattr(model.config, "symmetric_change", False))

    def forward(self, pixel_values_x: torch.Tensor, pixel_values_y: torch.Tensor, labels: Optional[torch.Tensor] = None):
        from ..modeling_comface import change_from_features

        return change_from_features(self.difference_head, pixel_values_x, pixel_values_y, labels, self.symmetric)


@torch.no_grad()
def _backbone_features(
    model: nn.Module, images: _RowTensors, image_indices: Sequence[int], batch_size: int, device
) -> tuple[torch.Tensor, dict[int, int]]:
    """f(image) `[U, F]` (CPU) for the given image rows, and image row -> feature row."""
    model.to(device)
    model.backbone.eval()
    rows = sorted(set(int(i) for i in image_indices))
    chunks = []
    for start in range(0, len(rows), 2 * batch_size):
        batch = torch.stack([images[i] for i in rows[start : start + 2 * batch_size]])
        chunks.append(model.backbone(batch.to(device)).float().cpu())
    return torch.cat(chunks), {row: k for k, row in enumerate(rows)}



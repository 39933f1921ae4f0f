"""Downstream tasks as tables of images, their pairs and their subject-disjoint folds (paper Sec. 4.2)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import datasets

# ``--align`` takes the package's one alignment vocabulary, and passes it unchanged to the builders' ``landmarks``.
from ..face_alignment import ALIGN_MODES
from .pairs import ChangePair, Fold, load_pairs, sample_change_pairs, subject_kfold
from .synthetic_task import make_synthetic_task

#: Tasks accepted by :func:`load_task_dataset` (and ``--task``).
TASKS: tuple[str, ...] = (
    "disfa_au6",
    "disfa_au12",
    "fgnet",
    "face_change",
    "synthetic_smile",
    "synthetic_weight",
    "synthetic_age",
)
#: ``linear``: f frozen, l from scratch; ``finetune``: f and l trained from the initial weights (Sec. 4.2).
MODES: tuple[str, ...] = ("linear", "finetune")
#: The units of each task's change, for a saved estimator (``--change_units`` overrides).
TASK_UNITS: dict[str, str] = {
    "fgnet": "years",
    "disfa_au6": "AU6 intensity levels (0-5)",
    "disfa_au12": "AU12 intensity levels (0-5)",
    "face_change": "units of the CSV's value column",
    "synthetic_smile": "alpha units",
    "synthetic_weight": "alpha units",
    "synthetic_age": "alpha units",
}


@dataclass
class TaskData:
    """A task's image table and what the builder left out.

    Attributes:
        task: one of :data:`TASKS`.
        dataset: ``datasets.Dataset`` with columns ``image``, ``subject``, ``value`` (one row per image).
        build_report: the builder's report as a dict (``num_rows``, ``bad_images``, ``single_image_subjects``...);
            ``None`` for synthetic tasks, which have nothing to skip.
        align: the ``--align`` mode the table was built with (:data:`ALIGN_MODES`).
    """

    task: str
    dataset: datasets.Dataset
    build_report: Optional[dict[str, Any]] = None
    align: str = "none"
    #: Aligned crops ``(row, size) -> PIL image`` made so far: warping a photo is the slow part of reading it, and it
    #: does not depend on the init, so every run over this table (inits, seeds, modes) shares it.
    crops: dict = field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> str:
        subjects = len(set(self.dataset["subject"]))
        text = f"{self.task}: {len(self.dataset)} images of {subjects} subjects"
        if self.build_report is not None:
            report = self.build_report
            text += (
                f"; builder skipped {len(report.get('bad_images', []))} unreadable image(s) and left out "
                f"{len(report.get('single_image_subjects', []))} subject(s) with fewer than 2 images"
            )
        return text


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    """Raise a ValueError listing the valid values when ``value`` is not one of them."""
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid values: {', '.join(valid)}.")


def load_task_dataset(
    task: str,
    data_dir: Optional[str] = None,
    *,
    image_size: int = 64,
    cache_dir: Optional[str] = None,
    data_seed: int = 0,
    synthetic_subjects: int = 40,
    synthetic_images_per_subject: int = 12,
    synthetic_nuisance: float = 1.0,
    max_frames_per_subject: Optional[int] = None,
    synthetic_generator: Any = None,
    align: str = "auto",
    synthetic_generator_spec: Any = None,
) -> TaskData:
    """Load (or render) a downstream task as one table of images.

    Args:
        task: one of :data:`TASKS`. ``disfa_au6``/``disfa_au12``/``fgnet``/``face_change`` read the user's copy in
            ``data_dir`` through ``dataset_builders``; ``synthetic_*`` render identities pretraining never saw.
        data_dir: the user's data folder (real tasks only; for ``face_change`` the folder holding the CSV).
        image_size: rendering resolution of synthetic tasks (the model's input size; real images are resized later).
        cache_dir: ``datasets`` cache for the builders.
        data_seed: seed of the synthetic rendering (alphas, nuisance) and of DISFA's frame subsampling.
        synthetic_subjects, synthetic_images_per_subject: size of a synthetic task.
        max_frames_per_subject: DISFA only: keep at most this many frames per subject (seeded).
        synthetic_generator: an ``EmbeddedFaceGenerator`` to reuse across tasks (saves its construction).
        synthetic_generator_spec: a pretrained model's ``config.generator_spec``: synthetic faces come from the
            embedded renderer it was trained with (its version and growth); default: the embedded renderer.
        align: where each photo's face landmarks come from (:data:`ALIGN_MODES`): ``auto`` (the dataset's own, e.g.
            FG-NET's ``.pts`` or a CSV column, else the face detector; ``face`` is the same here, as a builder skips
            an image without a face either way), ``landmarks`` (the dataset's only; images without are skipped),
            ``detector`` (always detect), ``none`` (whole images, shorter side resized and centre-cropped). The builder stores the landmarks (detections cached with the build); each image is then
            warped into the canonical face frame at ``image_size`` once per run. Synthetic faces are rendered in the
            frame: only ``auto`` and ``none`` apply to them.

    Returns:
        :class:`TaskData` with the builder's report.
    """
    check_choice("task", task, TASKS)
    check_choice("align", align, ALIGN_MODES)
    if task.startswith("synthetic_"):
        if align not in ("auto", "none"):
            raise ValueError(
                f"--align {align} does not apply to the synthetic task {task!r}: its faces are rendered in the "
                "canonical face frame already (no landmarks or detector needed). Use --align auto or none."
            )
        if data_dir:
            warnings.warn(f"--data_dir is ignored for the synthetic task {task!r} (its images are rendered).")
        dataset = make_synthetic_task(
            task.removeprefix("synthetic_"),
            num_subjects=synthetic_subjects,
            images_per_subject=synthetic_images_per_subject,
            image_size=image_size,
            seed=data_seed,
            nuisance=synthetic_nuisance,
            generator=synthetic_generator,
            generator_spec=synthetic_generator_spec,
        )
        return TaskData(task, dataset, None, "none")

    if not data_dir:
        raise ValueError(
            f"Task {task!r} reads your own copy of the dataset (it cannot be downloaded): pass --data_dir <folder>. "
            "See dataset_builders/<name>/README.md for the expected layout, or use a synthetic_* task."
        )
    # Imported here: the builders live at the repository root (like metrics/), not inside the package.
    face = {"landmarks": align, "face_size": int(image_size)}
    if task.startswith("disfa_"):
        from dataset_builders.disfa import Disfa

        builder = Disfa(
            config_name=task.removeprefix("disfa_"),
            data_dir=data_dir,
            cache_dir=cache_dir,
            max_frames_per_subject=max_frames_per_subject,
            seed=data_seed,
            **face,
        )
    elif task == "fgnet":
        from dataset_builders.fgnet import Fgnet

        builder = Fgnet(data_dir=data_dir, cache_dir=cache_dir, **face)
    else:
        from dataset_builders.face_change import FaceChange

        builder = FaceChange(data_dir=data_dir, cache_dir=cache_dir, **face)
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    report = builder.build_report
    return TaskData(task, dataset, report.to_dict() if report is not None else None, align)


def sample_task_pairs(
    data: TaskData, pairs_per_subject: int = 100, data_seed: int = 0, pairs_file: Optional[str] = None
) -> list[ChangePair]:
    """The task's pairs: loaded from ``pairs_file`` when given, else sampled with the fixed ``data_seed``.

    Sampling depends only on the task table and the seed (never on the init, mode or training seed), so separate runs
    of different methods get identical pairs; ``pairs_file`` reuses a saved ``pairs.csv`` explicitly.
    """
    if pairs_file:
        pairs = load_pairs(pairs_file)
        n = len(data.dataset)
        if any(not (0 <= p.index_x < n and 0 <= p.index_y < n) for p in pairs):
            raise ValueError(
                f"{pairs_file!r} refers to images beyond the {n} rows of {data.task!r}: it was saved for a different "
                "dataset (or builder options). Drop --pairs_file to sample new pairs."
            )
        return pairs
    return sample_change_pairs(data.dataset["subject"], data.dataset["value"], pairs_per_subject, seed=data_seed)


def make_folds(pairs: Sequence[ChangePair], n_folds: int = 4, data_seed: int = 0, val_fraction: float = 0.1) -> list[Fold]:
    """Subject-disjoint folds over the subjects that have pairs, with a clear error when there are too few."""
    subjects = sorted({p.subject for p in pairs})
    if len(subjects) < n_folds + 2:
        raise ValueError(
            f"{n_folds}-fold cross-validation needs at least {n_folds + 2} subjects with at least one pair "
            f"(each fold needs test, validation and training subjects), but only {len(subjects)} have pairs: "
            f"{', '.join(subjects[:10])}. Add subjects or use fewer folds (--folds, at least 2)."
        )
    return subject_kfold(subjects, n_folds=n_folds, seed=data_seed, val_fraction=val_fraction)

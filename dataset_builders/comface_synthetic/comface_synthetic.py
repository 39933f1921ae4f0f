"""ComFace synthetic face corpus as a ``datasets`` builder (paper Sec. 3.1 / 4.1).

Usage (datasets >= 3; datasets 5 no longer runs loading scripts by path, so instantiate
the builder class)::

    from dataset_builders.comface_synthetic import ComFaceSynthetic
    builder = ComFaceSynthetic(config_name="small", cache_dir="data")      # or num_identities=..., image_size=...
    builder.download_and_prepare(num_proc=2)                               # shards = identity shards
    ds = builder.as_dataset()                                              # DatasetDict(train, validation)
    ds.push_to_hub("user/comface-synthetic-small")                        # optional, standard Hub upload

Each row is one image of identity ``i`` edited along attribute ``m`` by ``alpha``; the two
splits are identity-disjoint (90/10 by identity, as in the paper).  Building is atomic:
``download_and_prepare`` writes into ``<dir>.incomplete`` and renames it on success.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import torch
from PIL import Image

from comface_hf.synthesis import ATTRIBUTE_NAMES, alpha_grid, get_generator
from comface_hf.synthesis.renderer import hash_uniform

_DESCRIPTION = (
    "Synthetic face images for ComFace pretraining: identities edited along 43 attributes "
    "(weight, age, smile and the 40 CelebA attributes) by alpha in [-5, 5]. Default images are "
    "rendered by a parametric face renderer (no real people); a latent-edit generator wraps a "
    "StyleGAN-style model with InterFaceGAN directions (w_edit = w + alpha * n_m)."
)
_CITATION = "ComFace: Facial Representation Learning with Synthetic Data for Comparing Faces."


@dataclass
class ComFaceSyntheticConfig(datasets.BuilderConfig):
    """What to generate.

    Attributes:
        num_identities: number of identities (0..num_identities-1).
        attributes: attribute names or ``"all"`` (the 43 of the paper).
        alpha_min, alpha_max, alpha_step: the alpha grid (paper: -5, 5, 0.1 -> 101 values).
        alphas: explicit subset of the grid (overrides the grid when given).
        alphas_per_identity_attribute: if set, sample this many grid alphas per (identity,
            attribute) deterministically from the seed instead of using all of them
            (alpha 0 is always included so every identity has its neutral face).
        image_size: output resolution in pixels.
        generator: ``"embedded"`` or ``"latent-edit"``.
        generator_kwargs: extra kwargs for :func:`comface_hf.synthesis.get_generator`
            (latent-edit: ``import_path``, ``checkpoint``, ``directions_dir``...).
        seed: corpus seed (identities, splits, alpha sampling).
        validation_fraction: share of identities held out (identity-disjoint).
        identities_per_shard: identities per generation shard (the unit of ``num_proc``).
        batch_size: images rendered per ``render`` call.
    """

    num_identities: int = 1000
    attributes: Union[str, Sequence[str]] = "all"
    alpha_min: float = -5.0
    alpha_max: float = 5.0
    alpha_step: float = 0.1
    alphas: Optional[Sequence[float]] = None
    alphas_per_identity_attribute: Optional[int] = None
    image_size: int = 112
    generator: str = "embedded"
    generator_kwargs: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    validation_fraction: float = 0.1
    identities_per_shard: int = 10
    batch_size: int = 256

    def attribute_list(self) -> List[str]:
        names = list(ATTRIBUTE_NAMES) if self.attributes == "all" else (
            [self.attributes] if isinstance(self.attributes, str) else list(self.attributes)
        )
        unknown = [n for n in names if n not in ATTRIBUTE_NAMES and self.generator == "embedded"]
        if unknown:
            raise ValueError(f"Unknown attributes {unknown}; valid names: {', '.join(ATTRIBUTE_NAMES)}")
        return names

    def alpha_values(self) -> List[float]:
        grid = alpha_grid(self.alpha_min, self.alpha_max, self.alpha_step).tolist()
        if self.alphas is None:
            return grid
        vals = [round(float(a), 6) for a in self.alphas]
        bad = [a for a in vals if a < self.alpha_min - 1e-6 or a > self.alpha_max + 1e-6]
        if bad:
            raise ValueError(f"alphas {bad} outside the alpha range [{self.alpha_min}, {self.alpha_max}]")
        return vals

    def alphas_per_row(self) -> int:
        n = len(self.alpha_values())
        return n if self.alphas_per_identity_attribute is None else min(n, int(self.alphas_per_identity_attribute))

    def split_identities(self) -> Tuple[List[int], List[int]]:
        """Identity-disjoint (train, validation) identity lists, deterministic in ``seed``."""
        n = int(self.num_identities)
        if n < 1:
            raise ValueError("num_identities must be >= 1")
        n_val = int(round(n * self.validation_fraction))
        if self.validation_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        perm = np.random.RandomState(self.seed).permutation(n)
        return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())

    def num_rows(self) -> Dict[str, int]:
        tr, va = self.split_identities()
        per = len(self.attribute_list()) * self.alphas_per_row()
        return {"train": len(tr) * per, "validation": len(va) * per}


def _cfg(name: str, description: str, **kw: Any) -> ComFaceSyntheticConfig:
    return ComFaceSyntheticConfig(name=name, version=datasets.Version("1.0.0"), description=description, **kw)


class ComFaceSynthetic(datasets.GeneratorBasedBuilder):
    """Synthetic ComFace corpus; see :class:`ComFaceSyntheticConfig` for the knobs."""

    BUILDER_CONFIG_CLASS = ComFaceSyntheticConfig
    BUILDER_CONFIGS = [
        _cfg("tiny", "Tests: 10 identities x 3 attributes x 5 alphas at 32 px (150 images).",
             num_identities=10, attributes=("weight", "age", "smile"), alphas=(-5.0, -2.5, 0.0, 2.5, 5.0),
             image_size=32, identities_per_shard=2),
        _cfg("small", "Embedded pretraining default: 100 identities x 43 attributes x 11 alphas at 112 px (47,300 images).",
             num_identities=100, attributes="all", alphas=tuple(float(a) for a in np.round(np.arange(-5, 5.01, 1.0), 1)),
             image_size=112, identities_per_shard=5),
        _cfg("medium", "2,000 identities x 43 attributes x 21 alphas (every 0.5) at 112 px (1.8M images).",
             num_identities=2000, attributes="all", alphas=tuple(float(a) for a in np.round(np.arange(-5, 5.01, 0.5), 1)),
             image_size=112, identities_per_shard=20),
        _cfg("paper", "Paper scale: 250,000 identities x 43 attributes x 101 alphas at 224 px (~1.09e9 images; "
             "stream from the generator instead unless you have the disk).",
             num_identities=250_000, attributes="all", image_size=224, identities_per_shard=100),
    ]
    DEFAULT_CONFIG_NAME = "small"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parent_pid = os.getpid()

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            license="apache-2.0",
            features=datasets.Features({
                "image": datasets.Image(),
                "identity": datasets.Value("int64"),
                "attribute": datasets.ClassLabel(names=self.config.attribute_list()),
                "alpha": datasets.Value("float32"),
                "generator": datasets.Value("string"),
                "generator_version": datasets.Value("string"),
            }),
        )

    def _split_generators(self, dl_manager: Any) -> List[datasets.SplitGenerator]:
        train_ids, val_ids = self.config.split_identities()
        k = max(1, int(self.config.identities_per_shard))

        def shards(ids: List[int]) -> List[List[int]]:
            # A list value in gen_kwargs is what datasets splits across num_proc workers.
            return [ids[i:i + k] for i in range(0, len(ids), k)]

        out = [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"identity_shards": shards(train_ids)})]
        if val_ids:
            out.append(datasets.SplitGenerator(name=datasets.Split.VALIDATION, gen_kwargs={"identity_shards": shards(val_ids)}))
        return out

    def _triples(self, identities: List[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (identity, attribute index, alpha) rows for these identities, in a fixed order."""
        cfg = self.config
        n_attr = len(cfg.attribute_list())
        grid = np.asarray(cfg.alpha_values(), dtype=np.float32)
        k = cfg.alphas_per_row()
        I, A, X = [], [], []
        for ident in identities:
            if k == len(grid):
                sel = np.tile(np.arange(len(grid)), (n_attr, 1))
            else:
                # Deterministic per (seed, identity): rank grid points by a hash, keep alpha 0.
                u = hash_uniform(cfg.seed, np.array([ident]), n_attr * len(grid), stream=7).reshape(n_attr, len(grid))
                u[:, np.isclose(grid, 0.0)] = -1.0
                sel = np.sort(np.argsort(u, axis=1)[:, :k], axis=1)
            I.append(np.full(sel.size, ident))
            A.append(np.repeat(np.arange(n_attr), sel.shape[1]))
            X.append(grid[sel.reshape(-1)])
        return np.concatenate(I), np.concatenate(A), np.concatenate(X)

    def _generate_examples(self, identity_shards: List[List[int]]) -> Iterator[Tuple[str, Dict[str, Any]]]:
        cfg = self.config
        if os.getpid() != getattr(self, "_parent_pid", os.getpid()):
            # num_proc > 1: datasets forks workers; torch's OpenMP pool does not survive a
            # fork (hangs), and one thread per worker is the right split of the cores anyway.
            torch.set_num_threads(1)
        names = cfg.attribute_list()
        kwargs = dict(cfg.generator_kwargs)
        kwargs.setdefault("seed", cfg.seed)
        kwargs.setdefault("image_size", cfg.image_size)
        if cfg.generator == "embedded":
            kwargs.setdefault("alpha_min", cfg.alpha_min)
            kwargs.setdefault("alpha_max", cfg.alpha_max)
        gen = get_generator(cfg.generator, **kwargs)  # built per worker process
        # Map the config's attribute order onto the generator's indices.
        to_gen = np.array([gen.attribute_index(n) for n in names])
        for shard in identity_shards:
            I, A, X = self._triples(list(shard))
            for s in range(0, len(I), cfg.batch_size):
                sl = slice(s, s + cfg.batch_size)
                imgs = gen.render(torch.from_numpy(I[sl]), torch.from_numpy(to_gen[A[sl]]), torch.from_numpy(X[sl]))
                arr = (imgs.cpu() * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                for j in range(arr.shape[0]):
                    buf = io.BytesIO()
                    Image.fromarray(arr[j]).save(buf, format="PNG", compress_level=1)
                    i, a, x = int(I[s + j]), int(A[s + j]), float(X[s + j])
                    yield f"{i}_{a}_{x:+.3f}", {
                        "image": {"bytes": buf.getvalue(), "path": None},
                        "identity": i,
                        "attribute": a,
                        "alpha": x,
                        "generator": gen.name,
                        "generator_version": str(gen.version),
                    }

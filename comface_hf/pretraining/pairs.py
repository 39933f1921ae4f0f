"""Pair sampling and curriculum for ComFace pretraining (Sec. 3.2, 3.3, 4.1).

A pair is an image x = (identity, attribute, alpha_x) and an image y = (same identity, same attribute, alpha_y) with
0 < |alpha_y - alpha_x| <= S, where S is the curriculum's current range (Eq. 2). Pairs are re-drawn every epoch and
are a pure function of (seed, epoch, sample index): any process, any resume, any number of processes draws the same
pair for the same index, so an interrupted run resumes exactly and N processes split one global sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAPER_STAGE_EPOCHS = (3, 6, 9, 12)  # e_1..e_4 of Sec. 4.1
PAPER_EPOCHS = 12


@dataclass(frozen=True)
class Curriculum:
    r"""Eq. 2: S = S_max / S_e, S_e = 1 for e <= e_1 and t for e_{t-1} < e <= e_t.

    The stage boundaries are given on the paper's 12-epoch scale and scaled to the run's number of epochs
    (e_t * num_epochs / 12), so a 24-epoch run narrows S at epochs 6, 12, 18.

    Args:
        s_max: the largest |alpha_y - alpha_x| in the corpus (10 for alpha in [-5, 5]).
        num_epochs: epochs of this run.
        stage_epochs: e_1..e_T on the paper's scale.
        enabled: False keeps S = S_max (Table 7 (e)).
    """

    s_max: float
    num_epochs: int
    stage_epochs: tuple[float, ...] = PAPER_STAGE_EPOCHS
    reference_epochs: int = PAPER_EPOCHS
    enabled: bool = True

    def stage(self, epoch: int) -> int:
        """S_e for a 1-based epoch."""
        if not self.enabled:
            return 1
        for t, boundary in enumerate(self.stage_epochs, start=1):
            if epoch <= boundary * self.num_epochs / self.reference_epochs + 1e-9:
                return t
        return len(self.stage_epochs)

    def range_at(self, epoch: int) -> float:
        """S for a 1-based epoch."""
        return self.s_max / self.stage(epoch)


def _partners(alphas: np.ndarray, index_in_group: np.ndarray, group_start: np.ndarray, group_size: np.ndarray,
              sorted_alpha: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """For each x (position in its alpha-sorted group), draw a y in the same group with 0 < |dalpha| <= s.

    Returns the sorted position of y, or -1 where the group has no such partner.
    """
    lo = np.searchsorted(sorted_alpha, alphas - s - 1e-6, side="left")
    hi = np.searchsorted(sorted_alpha, alphas + s + 1e-6, side="right")
    # searchsorted over the concatenation of sorted groups: clip the window to x's own group.
    lo = np.maximum(lo, group_start)
    hi = np.minimum(hi, group_start + group_size)
    count = hi - lo - 1  # candidates other than x itself (alphas within a group are unique)
    pick = np.floor(rng.random(len(alphas)) * np.maximum(count, 1)).astype(np.int64)
    y = lo + pick
    y = np.where(y >= group_start + index_in_group, y + 1, y)  # skip x
    return np.where(count > 0, y, -1)


class CorpusPairSampler:
    """Pairs over a built corpus (the rows of a `comface_synthetic` split).

    Args:
        identity, attribute, alpha: one entry per row of the split.
        seed: pairs of epoch e are a function of (seed, e).
    """

    def __init__(self, identity, attribute, alpha, seed: int = 0):
        identity = np.asarray(identity, dtype=np.int64)
        attribute = np.asarray(attribute, dtype=np.int64)
        alpha = np.round(np.asarray(alpha, dtype=np.float64), 4)
        if not (len(identity) == len(attribute) == len(alpha)) or len(alpha) == 0:
            raise ValueError("identity, attribute and alpha must be non-empty and of equal length (one per row).")
        self.seed = seed
        # Sort rows by (identity, attribute, alpha): each group is one contiguous, alpha-sorted run.
        self.order = np.lexsort((alpha, attribute, identity))
        key = identity[self.order] * (attribute.max() + 1) + attribute[self.order]
        boundaries = np.flatnonzero(np.diff(key)) + 1
        starts = np.concatenate([[0], boundaries])
        sizes = np.diff(np.concatenate([starts, [len(key)]]))
        self.group_start = np.repeat(starts, sizes)
        self.group_size = np.repeat(sizes, sizes)
        self.sorted_alpha = alpha[self.order]
        # Offset each group far apart so one searchsorted serves all groups.
        self.group_id = np.repeat(np.arange(len(starts)), sizes)
        span = float(alpha.max() - alpha.min()) + 1.0
        self._shifted = self.sorted_alpha + self.group_id * 4 * span
        if (np.diff(self._shifted) == 0).any():
            raise ValueError("The corpus has duplicate (identity, attribute, alpha) rows; build it again.")
        if sizes.min() < 2:
            raise ValueError(
                "Some (identity, attribute) groups have a single alpha value, so they have no pair: the corpus needs "
                "at least two alpha values per identity and attribute for intra-personal learning."
            )
        self.num_rows = len(alpha)
        self.s_max = float(alpha.max() - alpha.min())
        self.min_step = float(np.min(np.diff(np.unique(alpha)))) if len(np.unique(alpha)) > 1 else 0.0

    def check_range(self, s_min: float) -> None:
        """Every group must have partners at the curriculum's narrowest range."""
        if s_min < self.min_step - 1e-9:
            raise ValueError(
                f"The curriculum narrows S to {s_min:.3g} but the corpus's alpha grid step is {self.min_step:.3g}: "
                "no pair would qualify. Use a finer alpha grid or fewer curriculum stages."
            )

    def epoch_pairs(self, epoch: int, s: float) -> np.ndarray:
        """Rows of (row_x, row_y) for every row as x once, in a shuffled order, |dalpha| <= s. Shape [num_rows, 2]."""
        rng = np.random.default_rng([self.seed, epoch])
        positions = rng.permutation(self.num_rows)
        y_sorted = _partners(
            self._shifted[positions],
            positions - self.group_start[positions],
            self.group_start[positions],
            self.group_size[positions],
            self._shifted,
            s,
            rng,
        )
        keep = y_sorted >= 0
        if not keep.any():
            raise ValueError(f"No pair has 0 < |alpha_y - alpha_x| <= {s:.3g} in this corpus.")
        return np.stack([self.order[positions[keep]], self.order[y_sorted[keep]]], axis=1)


class StreamingPairSampler:
    """Pairs drawn straight from the generator's parameter space: no corpus on disk.

    Sample i of epoch e is a function of (seed, e, i // block): identity uniform over `identities`, attribute uniform,
    alpha_x uniform on the grid, alpha_y uniform among grid values with 0 < |alpha_y - alpha_x| <= S.
    """

    block = 256

    def __init__(self, identities, num_attributes: int, alpha_grid, seed: int = 0):
        self.identities = np.asarray(identities, dtype=np.int64)
        self.num_attributes = int(num_attributes)
        self.alpha_grid = np.round(np.sort(np.asarray(alpha_grid, dtype=np.float64)), 4)
        if len(self.alpha_grid) < 2:
            raise ValueError("The alpha grid needs at least two values for intra-personal pairs.")
        if len(self.identities) == 0 or self.num_attributes == 0:
            raise ValueError("Streaming needs at least one identity and one attribute.")
        self.seed = seed
        self.s_max = float(self.alpha_grid[-1] - self.alpha_grid[0])
        self.min_step = float(np.min(np.diff(self.alpha_grid)))

    check_range = CorpusPairSampler.check_range

    def draw(self, epoch: int, start: int, count: int, s: float) -> dict[str, np.ndarray]:
        """Samples start..start+count-1 of the epoch: identity, attribute, alpha_x, alpha_y (arrays of `count`)."""
        first, last = start // self.block, (start + count - 1) // self.block
        parts = [self._draw_block(epoch, b, s) for b in range(first, last + 1)]
        offset = start - first * self.block
        return {k: np.concatenate([p[k] for p in parts])[offset : offset + count] for k in parts[0]}

    def _draw_block(self, epoch: int, block: int, s: float) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, block])
        n = self.block
        ix = rng.integers(0, len(self.alpha_grid), n)
        alpha_x = self.alpha_grid[ix]
        y = _partners(alpha_x, ix, np.zeros(n, np.int64), np.full(n, len(self.alpha_grid)), self.alpha_grid, s, rng)
        if (y < 0).any():
            raise ValueError(f"No grid value lies within S = {s:.3g} of another; the alpha grid is too coarse.")
        return {
            "identity": self.identities[rng.integers(0, len(self.identities), n)],
            "attribute": rng.integers(0, self.num_attributes, n),
            "alpha_x": alpha_x.astype(np.float32),
            "alpha_y": self.alpha_grid[y].astype(np.float32),
        }


def split_identities(num_identities: int, validation_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """90/10 identity split (Sec. 4.1): (train identities, validation identities), disjoint, deterministic."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    ids = np.random.default_rng([seed, 90_10]).permutation(num_identities)
    n_val = max(1, int(round(num_identities * validation_fraction)))
    if n_val >= num_identities:
        raise ValueError(f"{num_identities} identities are too few for a train/validation split.")
    return np.sort(ids[n_val:]), np.sort(ids[:n_val])


__all__ = ["Curriculum", "CorpusPairSampler", "StreamingPairSampler", "split_identities"]

"""Does a generated smile look like a smile to a real-face expression model? (issue 24)

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.expression_check [--identities 48] [--out benchmarks/results]

Unseen identities of each generator the pretraining uses (the embedded renderer, the DCGAN along its shipped
boundaries, and optionally the DCGAN along ``--extra DIR`` boundaries such as a ``happiness`` one found by ``comface
directions --attributes happiness``) are rendered at 64 px, the trainer's size, with one expression attribute at
alpha -3, 0 and +3 (no capture: the generator's own pixels), and labelled by :class:`~comface_hf.synthesis.directions.
FaceLabeller`: ``happiness`` (the ``fer-expression`` peer's log-odds of happy, the reading that predicts JAFFE's
happiness change at 0.86 zero-shot) and the landmark ``smile``. Reported per generator and attribute: the share of
faces dlib finds, the mean P(happy) at each alpha, the mean within-identity change of the log-odds from -3 to +3 and
the share of identities whose P(happy) rises. Writes ``expression_check.json`` and ``docs/expression_check.png`` (one
identity per row, P(happy) under each face). No research database is read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ALPHAS = (-3.0, 0.0, 3.0)
#: (generator, attribute) pairs checked by default: every smile-like attribute the `make pretrain` mix edits.
CHECKS = (("embedded", "smile"), ("embedded", "Smiling"), ("dcgan", "smile"))
ROOT = Path(__file__).resolve().parents[1]


def generator_for(source: str, image_size: int):
    from benchmarks.zero_shot_realface import source_generator
    from comface_hf.synthesis.dcgan import load_gan_face_generate
    from comface_hf.synthesis.latent_edit import LatentEditGenerator

    if source.startswith("dcgan:"):  # the DCGAN along another folder of boundaries
        return LatentEditGenerator(load_gan_face_generate(), source.split(":", 1)[1], image_size=image_size)
    return source_generator(source, image_size)


def check(source: str, attribute: str, identities: int, image_size: int,
          labeller) -> tuple[dict, torch.Tensor, np.ndarray]:
    """The summary of one (generator, attribute), its images ``[N, A, 3, S, S]`` and P(happy) ``[N, A]`` (NaN: no
    face found)."""
    from benchmarks.zero_shot_realface import IDENTITY_OFFSET

    gen = generator_for(source, image_size)
    ids = torch.arange(identities) + IDENTITY_OFFSET
    index = gen.attribute_index(attribute)
    images = torch.stack([gen.render(ids, torch.full((identities,), index), torch.full((identities,), a))
                          for a in ALPHAS], 1)  # [N, A, 3, S, S]
    labels = labeller(images.flatten(0, 1))
    logodds = labels["happiness"].reshape(identities, len(ALPHAS))
    smile = labels["smile"].reshape(identities, len(ALPHAS))
    p = 1.0 / (1.0 + np.exp(-logodds))
    both = np.isfinite(logodds[:, 0]) & np.isfinite(logodds[:, -1])
    change = logodds[both, -1] - logodds[both, 0]
    result = {
        "generator": source, "attribute": attribute, "identities": identities, "alphas": list(ALPHAS),
        "found_fraction": float(np.isfinite(logodds).mean()),
        "p_happy_mean": [float(np.nanmean(p[:, k])) for k in range(len(ALPHAS))],
        "landmark_smile_mean": [float(np.nanmean(smile[:, k])) for k in range(len(ALPHAS))],
        "pairs_found_at_both_ends": int(both.sum()),
        "logodds_change_mean": float(change.mean()) if len(change) else None,
        "logodds_change_std": float(change.std(ddof=1)) if len(change) > 1 else None,
        "share_rising": float((change > 0).mean()) if len(change) else None,
    }
    return result, images, p


def picture(rows: list[tuple[str, torch.Tensor, np.ndarray]], path: Path, per_check: int = 3) -> None:
    """One row per (generator, attribute): ``per_check`` identities side by side, each at every alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = per_check * len(ALPHAS)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.05 * cols + 0.8, 1.35 * len(rows) + 0.5), squeeze=False)
    for r, (title, images, p) in enumerate(rows):
        for i in range(per_check):
            for k, a in enumerate(ALPHAS):
                ax = axes[r, i * len(ALPHAS) + k]
                ax.imshow(images[i, k].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_xlabel("no face" if not np.isfinite(p[i, k]) else f"{p[i, k]:.2f}", fontsize=7, labelpad=1)
                if r == 0:
                    ax.set_title(f"{a:+.0f}", fontsize=7, pad=2)
        axes[r, 0].set_ylabel(title, fontsize=7)
    fig.suptitle("fer's P(happy) under generated faces edited to alpha -3 / 0 / +3 (three identities per row; 64 px, "
                 "no capture)", fontsize=8)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    from comface_hf.synthesis.directions import FaceLabeller

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=int, default=48)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--extra", action="append", default=[], metavar="ATTR=DIR",
                        help="also the DCGAN along DIR's ATTR.npy (repeatable), e.g. happiness=/tmp/dirs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "expression_check.png"))
    args = parser.parse_args(argv)
    checks = list(CHECKS)
    for item in args.extra:
        attribute, _, folder = item.partition("=")
        if not folder or not (Path(folder) / f"{attribute}.npy").is_file():
            raise SystemExit(f"--extra {item!r}: write ATTR=DIR with DIR/ATTR.npy present")
        checks.append((f"dcgan:{folder}", attribute))
    labeller = FaceLabeller(["happiness", "smile"])
    results, rows = [], []
    for source, attribute in checks:
        result, images, p = check(source, attribute, args.identities, args.image_size, labeller)
        results.append(result)
        name = "dcgan (--extra)" if source.startswith("dcgan:") else source
        print(f"{name:>16} {attribute:>10}: found {result['found_fraction']:.0%}, P(happy) "
              + " / ".join(f"{v:.2f}" for v in result["p_happy_mean"])
              + f", log-odds change {result['logodds_change_mean']:+.2f}, rising {result['share_rising']:.0%}")
        rows.append((f"{name}\n{attribute}", images[:3], p[:3]))
    for r in results:
        if r["generator"].startswith("dcgan:"):
            r["generator"] = "dcgan (" + os.path.relpath(r["generator"].split(":", 1)[1], ROOT) + ")"
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU",
        "command": "python -m benchmarks.expression_check " + " ".join(argv if argv is not None else sys.argv[1:]),
        "labeller": "fer-expression's P(happy) (mini-Xception, FER-2013) on the face warped into the canonical frame",
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "expression_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    picture(rows, Path(args.picture))
    return summary


if __name__ == "__main__":
    main()

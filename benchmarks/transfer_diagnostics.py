"""Where does synthetic -> real transfer fail? Three diagnostics around the real-face table (issue 24).

Each changes one thing and runs :mod:`benchmarks.realface_table` (or the trainer) otherwise unchanged:

* ``adabn`` - AdaBN (Li et al., 2016): before f's features are extracted, its BatchNorm statistics are re-estimated
  on the real images of the fold (unlabelled, every image the fold uses: a transductive upper bound). If the gap were
  the generated faces' pixel statistics, this would close part of it.
* ``ensemble`` - f is the concatenation of several checkpoints' features (``--ensemble DIR,DIR``, appended to the
  ``--checkpoint``'s own): does averaging out the pretraining seed lift the real-face figures? The ridge head is
  solved on the concatenated features exactly as for one checkpoint (its penalty chosen by the same grouped CV).
* ``lowres-peers`` - the peers read each aligned face after it was downsampled to ``--peer_size`` px (default 64,
  ComFace's input) and resized back (bilinear, both ways): do the landmark peers still win when they see no more
  detail than ComFace's f does? If so, the 64 px input is not what limits f.
* ``pretrain-greyscale`` - the trainer with every training image turned to grey after its capture (JAFFE and part of
  FG-NET are black-and-white; the default capture makes 20% of images grey): is colour a cue that cannot transfer?

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m benchmarks.transfer_diagnostics adabn \\
        --checkpoint "mix s0 + AdaBN=outputs/mix-s0/model" --methods "mix s0 + AdaBN" --peers "" \\
        --fgnet_align "" --jaffe_align "" --modes linear --out /tmp/adabn
    ... transfer_diagnostics ensemble --ensemble outputs/mix-s1/model,outputs/mix-s2/model --checkpoint ...
    ... transfer_diagnostics lowres-peers --peer_size 64 --peers dlib-landmarks,dlib-face-descriptor,... --out ...
    .venv/bin/accelerate launch -m benchmarks.transfer_diagnostics pretrain-greyscale --preset dcgan-mix ...

The arguments after the diagnostic's name (and ``--ensemble``) go to ``realface_table`` / ``training/pretrain.py``
unchanged. Results: BENCHMARKS.md, "What else was screened".
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn

DIAGNOSTICS = ("adabn", "ensemble", "lowres-peers", "pretrain-greyscale")


def adabn(features_fn: Callable) -> Callable:
    """``_backbone_features`` with f's BatchNorm statistics re-estimated on ``image_indices`` first (cumulative mean
    over one pass in train mode, no gradient), then f evaluated in eval mode as usual."""

    @torch.no_grad()
    def features(model, images, image_indices, batch_size, device):
        model.to(device)
        norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise ValueError("AdaBN needs a backbone with BatchNorm layers; this one has none.")
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the pass below, not an exponential one
        rows = sorted(set(int(i) for i in image_indices))
        model.backbone.train()
        for start in range(0, len(rows), 2 * batch_size):
            model.backbone(torch.stack([images[i] for i in rows[start : start + 2 * batch_size]]).to(device))
        model.backbone.eval()
        return features_fn(model, images, image_indices, batch_size, device)

    return features


def ensemble(features_fn: Callable, others: Sequence[nn.Module]) -> Callable:
    """``_backbone_features`` returning ``[U, F * (1 + len(others))]``: the model's own f, then each other model's."""

    @torch.no_grad()
    def features(model, images, image_indices, batch_size, device):
        own, row_of = features_fn(model, images, image_indices, batch_size, device)
        parts = [own] + [features_fn(m, images, image_indices, batch_size, device)[0] for m in others]
        return torch.cat(parts, 1), row_of

    return features


def greyscale_capture(capture: Callable) -> Callable:
    """``photographic`` whose output is the luma of the captured photo in all three channels."""

    from comface_hf.synthesis.photographic import luma

    def captured(*args, **kwargs):
        x = capture(*args, **kwargs)
        return luma(x).expand_as(x).contiguous()

    return captured


def low_resolution(size: int) -> Callable:
    """A crop transform: the image downsampled to ``size`` px on its longer side and resized back (bilinear)."""
    from PIL import Image

    from comface_hf.peers import _as_uint8_rgb

    def transform(crop):
        image = Image.fromarray(_as_uint8_rgb(crop))
        w, h = image.size
        scale = size / max(w, h)
        small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)

    return transform


def _replace_everywhere(name: str, original: Callable, replacement: Callable) -> None:
    """Point every loaded comface_hf / benchmarks module's ``name`` that is ``original`` at ``replacement``."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(("comface_hf", "benchmarks")) and \
                getattr(module, name, None) is original:
            setattr(module, name, replacement)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in DIAGNOSTICS:
        raise SystemExit(f"usage: python -m benchmarks.transfer_diagnostics {{{','.join(DIAGNOSTICS)}}} ARGS...")
    which, rest = argv[0], argv[1:]
    if which == "pretrain-greyscale":
        import comface_hf.synthesis.photographic as photographic_module

        # sources.py imports `photographic` inside the step, so replacing the module attribute reaches it
        photographic_module.photographic = greyscale_capture(photographic_module.photographic)
        from training.pretrain import main as pretrain

        pretrain(rest)
        return

    if which == "lowres-peers":
        size = 64
        if "--peer_size" in rest:
            i = rest.index("--peer_size")
            size, rest = int(rest[i + 1]), rest[:i] + rest[i + 2 :]
        from comface_hf.peers import FacePeer

        features, transform = FacePeer.features, low_resolution(size)
        FacePeer.features = lambda self, crops: features(self, [transform(c) for c in crops])
        from benchmarks import realface_table

        sys.argv = [f"benchmarks.transfer_diagnostics {which} --peer_size {size}", *rest]
        realface_table.main()
        return

    import comface_hf.transfer.fold as fold
    import comface_hf.transfer.inputs as inputs
    from benchmarks import realface_table

    original = inputs._backbone_features
    if which == "adabn":
        replacement = adabn(original)
    else:
        if "--ensemble" not in rest or rest.index("--ensemble") + 1 >= len(rest):
            raise SystemExit("ensemble needs --ensemble DIR[,DIR...]: the checkpoints whose f is appended.")
        i = rest.index("--ensemble")
        folders, rest = rest[i + 1].split(","), rest[:i] + rest[i + 2 :]
        from comface_hf.transfer.models import build_change_model

        replacement = ensemble(original, [build_change_model(d, "linear").model for d in folders])
        # the test predictions come from the probe on the design; a head of the concatenated width does not fit l
        fold.write_ridge_head = lambda *args, **kwargs: None
    _replace_everywhere("_backbone_features", original, replacement)
    sys.argv = [f"benchmarks.transfer_diagnostics {which}", *rest]  # the command realface_table records
    realface_table.main()


if __name__ == "__main__":
    main()

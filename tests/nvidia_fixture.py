"""NVIDIA's own StyleGAN2-ADA networks for tests and benchmarks, built from ``../shared`` (never copied here).

``../shared/nvidia/stylegan2-ada-pytorch`` (beside the repository's root: /work/shared for a worktree at /work/wt-N,
``../shared`` for a CI clone) holds NVIDIA's network code under its own licence. A generator is built with random
weights exactly as NVIDIA's training loop builds one (``dnnlib.util.construct_class_by_name`` with
``training.networks.Generator``) and pickled as its snapshots are (a dict of ``G``, ``D``, ``G_ema`` copied with
``eval().requires_grad_(False).cpu()``). That runs in a subprocess: NVIDIA's ``training`` package has the same name
as this repository's ``training/`` (the trainer), so both cannot be imported in one process; unpickling needs only
NVIDIA's ``dnnlib`` and ``torch_utils`` (its classes carry their source), which :func:`nvidia_on_path` adds *after*
the repository on ``sys.path``.

``../shared/interfacegan/`` holds InterFaceGAN's public z boundaries for StyleGAN2/3 FFHQ (MIT): 39
``boundary_<CelebA attribute>.npy`` of shape (1, 512).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
STYLEGAN2_ADA = SHARED / "nvidia" / "stylegan2-ada-pytorch"
INTERFACEGAN = SHARED / "interfacegan"

# Small enough for a shared 2-core CPU, shaped like NVIDIA's FFHQ configs: z_dim 512 (so InterFaceGAN's real
# boundaries fit), the two highest resolutions in fp16 with conv_clamp 256 (what NVIDIA's fp16 layers rely on).
SMALL = {"z_dim": 512, "w_dim": 32, "img_resolution": 64, "channel_base": 256, "channel_max": 32, "num_fp16_res": 2,
         "mapping_layers": 2, "seed": 0}

_BUILD = r"""
import copy, json, pickle, sys
import torch
import dnnlib

cfg = json.loads(sys.argv[1])
torch.manual_seed(cfg["seed"])
common = dict(c_dim=0, img_resolution=cfg["img_resolution"], img_channels=3)
G_kwargs = dnnlib.EasyDict(class_name="training.networks.Generator", z_dim=cfg["z_dim"], w_dim=cfg["w_dim"],
                           mapping_kwargs=dnnlib.EasyDict(num_layers=cfg["mapping_layers"]),
                           synthesis_kwargs=dnnlib.EasyDict(channel_base=cfg["channel_base"],
                                                            channel_max=cfg["channel_max"],
                                                            num_fp16_res=cfg["num_fp16_res"], conv_clamp=256))
D_kwargs = dnnlib.EasyDict(class_name="training.networks.Discriminator", channel_base=cfg["channel_base"],
                           channel_max=cfg["channel_max"], num_fp16_res=cfg["num_fp16_res"], conv_clamp=256)
G = dnnlib.util.construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False)
D = dnnlib.util.construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False)
with torch.no_grad():
    # What training leaves behind and a random init does not: a tracked average w (truncation pulls towards it) and
    # non-zero noise strengths (so an image depends on the noise mode).
    G.mapping.w_avg.copy_(G.mapping(torch.randn(512, cfg["z_dim"]), None)[:, 0].mean(0))
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.fill_(0.05)
G_ema = copy.deepcopy(G).eval()
snapshot = dict(training_set_kwargs=dict(resolution=cfg["img_resolution"]))
for name, module in [("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", None)]:
    if module is not None:
        module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    snapshot[name] = module
with open(cfg["out"], "wb") as f:
    pickle.dump(snapshot, f)
print(json.dumps({"num_ws": G.num_ws, "class": type(G_ema).__module__}))
"""


def require_shared() -> None:
    """Fail (not skip) with the fix when ``../shared``'s NVIDIA code is not beside the repository."""
    if not (STYLEGAN2_ADA / "torch_utils" / "persistence.py").is_file():
        raise RuntimeError(
            f"NVIDIA's StyleGAN2-ADA code is not at {STYLEGAN2_ADA}: these tests build NVIDIA's own networks from it. "
            "Put the shared folder beside the repository's root (CI has it), e.g. git clone "
            "https://github.com/NVlabs/stylegan2-ada-pytorch ../shared/nvidia/stylegan2-ada-pytorch "
            "(network code only is needed; no weights).")


def build_nvidia_pickle(out: Path, **overrides) -> dict:
    """Build and pickle a random-weight NVIDIA StyleGAN2-ADA generator at ``out``; returns ``{num_ws, ...}``."""
    require_shared()
    cfg = {**SMALL, **overrides, "out": str(out)}
    env = {**os.environ, "PYTHONPATH": str(STYLEGAN2_ADA)}
    done = subprocess.run([sys.executable, "-c", _BUILD, json.dumps(cfg)], cwd=STYLEGAN2_ADA, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"Building NVIDIA's generator failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def nvidia_on_path(monkeypatch) -> None:
    """NVIDIA's dnnlib and torch_utils importable, after this repository (whose ``training`` package must win)."""
    require_shared()
    monkeypatch.setattr(sys, "path", [*sys.path, str(STYLEGAN2_ADA)])

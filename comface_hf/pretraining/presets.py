"""Pretraining presets: named sets of option values a run starts from (defaults <- preset <- config file <- flags).

Each preset's comment says why its numbers are what they are (the budget it was sized for and what was measured);
``training/pretrain.py --preset NAME`` applies one.
"""

from __future__ import annotations

from pathlib import Path

# Renderer 1.1.0's attributes whose +-5 edit changes the mean pixel value by at least ~0.9% at 64 px (mean
# |render(alpha=+-5) - render(0)| over 16 identities); the other 28 (smile, lipstick, earrings...) changed a handful
# of pixels each. The embedded preset before renderer 2.0.0 (`--renderer_version 1.1.0 --attributes` this).
EMBEDDED_ATTRIBUTES_R1 = (
    "weight,age,Chubby,Gray_Hair,Bald,Young,Pale_Skin,Blond_Hair,Black_Hair,Brown_Hair,Blurry,Wearing_Hat,Bangs,"
    "Male,Oval_Face"
)
# Renderer 2 (2.0.0, 2.1.0): the same plus the expressions it draws visibly at 64 px (smile = AU12 + AU6, Smiling, and the
# optional AU1+2, AU4, AU15, AU26). `--attributes all` (the paper preset) is the paper's 43, without the AUs.
EMBEDDED_ATTRIBUTES = (
    EMBEDDED_ATTRIBUTES_R1 + ",smile,Smiling,brow_raise_AU1_2,brow_lower_AU4,lip_corner_depressor_AU15,jaw_drop_AU26"
)

# Issue 24: boundaries that `comface directions --loader gan-face-generate --samples 2500` found in the registry DCGAN's
# z (InterFaceGAN's procedure, offline labels; report.md beside them). cheek_jaw_ratio is left out of the preset: its
# edit mostly opens the mouth (docs/dcgan_directions_sheet.png).
DCGAN_DIRECTIONS = str(Path(__file__).resolve().parents[1] / "synthesis" / "dcgan_directions")
DCGAN_ATTRIBUTES = "age,smile,mouth_open,weight,brow_raise,eye_open"

#: The generators of the `dcgan-mix` preset (a --generators_file shipped with the package).
DCGAN_MIX_GENERATORS = str(Path(__file__).resolve().parent / "generators_dcgan_mix.json")

PRESETS: dict[str, dict] = {
    # A fresh 2-core CPU: ResNet18 at 64 px on pairs streamed from the embedded generator, 6 short epochs of 1536
    # pairs (curriculum S = 10, 5, 3.3, 2.5 scaled to them), validated on 256 pairs and saved within 10 minutes.
    # Renderer 2 costs ~1.7x renderer 1.1.0 per face and its worker shares the 2 cores with training: 6 x 2048 pairs
    # took 12.8 min on the idle machine (2026-11-27), so the epochs are 1536 pairs (9,216 in all, was 12,288).
    "embedded": {"attributes": EMBEDDED_ATTRIBUTES, "num_epochs": 6, "samples_per_epoch": 1536, "validation_pairs": 256,
                 "photographic": 1.0},
    # Photographic pairs (issue 24): latent edits z + alpha * n of gan-face-generate's 64 px DCGAN (DigiFace-1M:
    # research use only) along the shipped boundaries, with the embedded preset's recipe otherwise.
    "dcgan": {"generator": "latent-edit", "generator_loader": "gan-face-generate", "directions_dir": DCGAN_DIRECTIONS,
              "latent_space": "z",  # the DCGAN has no mapping network: its boundaries are z boundaries
              "attributes": DCGAN_ATTRIBUTES, "num_epochs": 6, "samples_per_epoch": 1536, "validation_pairs": 256,
              "photographic": 1.0},
    # `make pretrain`'s default (issue 24): the DCGAN preset's recipe on a mix of the DCGAN (its six directions) and
    # the embedded renderer (six attributes), the source that transferred best to real faces (BENCHMARKS.md).
    "dcgan-mix": {"generator": "latent-edit", "generator_loader": "gan-face-generate", "directions_dir": DCGAN_DIRECTIONS,
                  "latent_space": "z", "attributes": DCGAN_ATTRIBUTES, "num_epochs": 6, "samples_per_epoch": 1536,
                  "validation_pairs": 256, "photographic": 1.0, "generators_file": DCGAN_MIX_GENERATORS},
    # Under an hour on the 2 CPU cores (47 min, data wait 0.4%, 2026-11-28): the reference checkpoint for real-face
    # evidence. 112 px (ResNet18 costs ~3x per image of 64 px), 12 epochs of 2048 pairs (2.7x the embedded preset's).
    "cpu-hour": {"attributes": EMBEDDED_ATTRIBUTES, "image_size": 112, "num_epochs": 12, "samples_per_epoch": 2048,
                 "photographic": 1.0, "num_identities": 4000},
    # Sec. 4.1: ResNet50, 224 px, 250k identities (90/10), 43 attributes, alpha -5..5 step 0.1, 35 M images,
    # 12 epochs, batch 1024, Adam 4e-4 halved at epoch 10, curriculum S_max = 10, e = (3, 6, 9, 12).
    "paper": {
        "backbone": "resnet50",
        "image_size": 224,
        "attributes": "all",
        "num_identities": 250_000,
        "samples_per_epoch": 31_500_000,
        "num_epochs": 12,
        "global_batch_size": 1024,
        "projection_hidden_size": 2048,
        "validation_pairs": 10_000,
        "num_workers": 0,  # streaming renders on the GPU itself; use 8 with --data_source corpus
        "compile_generator": True,  # fused kernels instead of ~1,700 small ones per chunk of faces
        "checkpointing_steps": 2000,
    },
}


__all__ = ["DCGAN_ATTRIBUTES", "DCGAN_DIRECTIONS", "EMBEDDED_ATTRIBUTES", "EMBEDDED_ATTRIBUTES_R1", "PRESETS"]

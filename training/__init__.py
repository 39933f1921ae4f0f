"""Accelerate-launched training scripts: `pretrain.py` (ComFace / FaceCycle) and `transfer.py` (downstream)."""

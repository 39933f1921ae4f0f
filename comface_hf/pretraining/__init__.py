"""Pretraining stage, what `training/pretrain.py` runs: ``pairs`` (pair sampler, curriculum, Eq. 2), ``augment``
(SimCLR views), ``presets``, ``generators`` (the run's generator specs), ``sources`` (pairs per micro-batch, streamed or
from a corpus), ``methods`` (ComFace and the FaceCycle baseline) and ``distributed`` (multi-process helpers)."""

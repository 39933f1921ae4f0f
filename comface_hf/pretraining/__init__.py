"""Pretraining stage: the pair sampler and curriculum (Eq. 2), the SimCLR augmentation, and (with the trainer) the
data sources and presets that `training/pretrain.py` streams from."""

"""DISFA AU6/AU12 intensity-change dataset builder (manual download). See README.md."""

from .disfa import Disfa, DisfaConfig

__all__ = ["Disfa", "DisfaConfig"]

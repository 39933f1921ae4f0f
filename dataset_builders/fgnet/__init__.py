"""FG-NET age-change dataset builder (manual download). See README.md."""

from .fgnet import Fgnet

__all__ = ["Fgnet"]

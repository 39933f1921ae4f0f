"""``ComFaceSynthetic``: the ComFace synthetic face corpus as a ``datasets`` builder."""

from .comface_synthetic import ComFaceSynthetic, ComFaceSyntheticConfig

__all__ = ["ComFaceSynthetic", "ComFaceSyntheticConfig"]

"""Old module paths, kept importable with a DeprecationWarning after the package was grouped by pipeline stage.

``import comface_hf.pairs`` (say) still works and returns a module that forwards every attribute to its new home;
``comface_hf.transfer_data`` was split in four, so its stand-in looks each name up in the new modules in turn.
Remove an entry one release after its move (moved in 0.2.0).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: old module -> new module(s), in the order a name is looked up.
MOVED: dict[str, tuple[str, ...]] = {
    "comface_hf.pairs": ("comface_hf.pretraining.pairs",),
    "comface_hf.augment": ("comface_hf.pretraining.augment",),
    "comface_hf.photographic": ("comface_hf.synthesis.photographic",),
    "comface_hf.linear_probe": ("comface_hf.transfer.linear_probe",),
    "comface_hf.reports": ("comface_hf.transfer.reports",),
    "comface_hf.saliency": ("comface_hf.monitoring.saliency",),
    "comface_hf.transfer_data": ("comface_hf.transfer.pairs", "comface_hf.transfer.metrics",
                                 "comface_hf.transfer.synthetic_task", "comface_hf.transfer.schema",
                                 "dataset_builders.base"),
}


class _MovedModule(types.ModuleType):
    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"Moved: use {' / '.join(targets)}.")
        self._targets = targets

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attribute):
                warnings.warn(f"{self.__name__}.{attribute} moved to {target}.{attribute}; import it from there "
                              f"({self.__name__} will be removed)", DeprecationWarning, stacklevel=2)
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r} (it moved to "
                             f"{' / '.join(self._targets)})")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return _MovedModule(spec.name, MOVED[spec.name])

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())

"""Loaders for the StyleGAN checkpoints people have: NVIDIA network pickles and any ``module:callable``.

NVIDIA's StyleGAN2-ADA-PyTorch and StyleGAN3 release their generators as Python pickles (``network-snapshot-*.pkl``,
``stylegan3-t-ffhq-1024x1024.pkl``): a dict with ``G``, ``D`` and ``G_ema`` whose classes live in NVIDIA's own code
(``dnnlib``, ``torch_utils``, ``training``). So:

* a pickle is code: unpickling runs whatever the file says. :func:`load_nvidia_pickle` only opens a local path the
  user gave, says so once, and never fetches anything;
* NVIDIA's code must be importable: the loader checks before unpickling and says which folder to put on
  ``PYTHONPATH``;
* the generator used is ``G_ema`` (the weights NVIDIA samples with); a discriminator, an augmentation pipe or any other
  object is refused.

``--generator_loader nvidia-pickle --generator_checkpoint path.pkl`` in ``training/pretrain.py`` uses it; any other
format goes through an import path, ``package.module:callable`` called as ``callable(checkpoint, **kwargs)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..errors import ComFaceInputError

logger = logging.getLogger(__name__)

NVIDIA_MODULES = ("dnnlib", "torch_utils")
NVIDIA_REPOSITORIES = "https://github.com/NVlabs/stylegan3 (or https://github.com/NVlabs/stylegan2-ada-pytorch)"
GENERATOR_ATTRIBUTES = ("mapping", "synthesis", "z_dim", "w_dim")


def missing_nvidia_modules() -> list[str]:
    """NVIDIA's top-level packages that an NVIDIA pickle needs and that cannot be imported here."""
    return [name for name in NVIDIA_MODULES if importlib.util.find_spec(name) is None]


def _nvidia_code_error(path: Path, missing: list[str]) -> ComFaceInputError:
    return ComFaceInputError(
        f"{path} is an NVIDIA StyleGAN network pickle: its classes live in NVIDIA's code, and "
        f"{' and '.join(missing)} cannot be imported here. Clone {NVIDIA_REPOSITORIES} and put the clone's root folder "
        "(the one holding dnnlib/ and torch_utils/) on the path, e.g.\n"
        "    git clone https://github.com/NVlabs/stylegan3 /path/to/stylegan3\n"
        "    PYTHONPATH=/path/to/stylegan3:$PYTHONPATH accelerate launch training/pretrain.py ...\n"
        "(StyleGAN2-ADA pickles load with either repository; StyleGAN3 pickles need the stylegan3 one.)"
    )


def check_generator(G: Any, source: str) -> Any:
    """Refuse anything that is not a StyleGAN-style generator; returns ``G``."""
    missing = [a for a in GENERATOR_ATTRIBUTES if not hasattr(G, a)]
    if missing or not callable(getattr(G, "mapping", None)) or not callable(getattr(G, "synthesis", None)):
        kind = type(G).__module__ + "." + type(G).__qualname__
        raise ComFaceInputError(
            f"{source} holds a {kind}, not a StyleGAN generator: it lacks "
            f"{', '.join(missing) or 'callable mapping/synthesis'}. "
            "Pass a generator pickle (a training snapshot or a released *.pkl with G_ema), not a discriminator or "
            "another network."
        )
    return G


def load_nvidia_pickle(checkpoint: str | os.PathLike, key: str = "G_ema", **_: Any):
    """``G_ema`` of an NVIDIA StyleGAN2-ADA / StyleGAN3 network pickle at a local path (float32, eval mode).

    Raises:
        ComFaceInputError: a URL or missing file, NVIDIA's code not importable (the message says what to put on
            ``PYTHONPATH``), a TensorFlow-era pickle, or an object that is not a generator.
    """
    text = str(checkpoint)
    if "://" in text:
        raise ComFaceInputError(
            f"{text!r} is a URL: the loader only opens files you downloaded yourself (a pickle runs code when loaded). "
            "Download it, check it comes from where you expect, and pass the local path."
        )
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"No generator checkpoint at {path}: pass the path of a StyleGAN network pickle (*.pkl).")
    with open(path, "rb") as f:
        data = f.read()
    needs_nvidia = any(name.encode() in data for name in NVIDIA_MODULES)
    missing = missing_nvidia_modules()
    if needs_nvidia and missing:
        raise _nvidia_code_error(path, missing)
    logger.warning("Loading %s: a pickle runs code when it is loaded; load only files from a source you trust.", path)
    try:
        obj = pickle.loads(data)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root in NVIDIA_MODULES or root == "training":
            raise _nvidia_code_error(path, [exc.name or root]) from None
        raise ComFaceInputError(f"{path} needs the Python module {exc.name!r}, which is not installed here.") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ComFaceInputError(f"{path} is not a readable pickle ({exc}); download it again.") from None
    if isinstance(obj, tuple) and len(obj) == 3:
        raise ComFaceInputError(
            f"{path} is a TensorFlow-era StyleGAN/StyleGAN2 pickle (G, D, Gs). Convert it with NVIDIA's "
            "stylegan2-ada-pytorch: `python legacy.py --source=old.pkl --dest=new.pkl`, then pass new.pkl."
        )
    if isinstance(obj, Mapping):
        if key not in obj:
            raise ComFaceInputError(
                f"{path} holds {', '.join(map(str, obj))} but no {key!r}: ComFace renders with the generator's "
                "moving average (G_ema). Pass a generator snapshot or a released generator pickle."
            )
        obj = obj[key]
    G = check_generator(obj, str(path))
    if hasattr(G, "float"):
        G = G.float()
    return G.eval().requires_grad_(False) if hasattr(G, "requires_grad_") else G


LOADERS: dict[str, Callable[..., Any]] = {"nvidia-pickle": load_nvidia_pickle}


def resolve_loader(loader: str) -> Callable[..., Any]:
    """A built-in loader name (``nvidia-pickle``) or ``package.module:callable``."""
    if loader in LOADERS:
        return LOADERS[loader]
    if ":" not in loader:
        raise ComFaceInputError(
            f"Unknown generator loader {loader!r}: use one of {', '.join(LOADERS)} or an import path "
            "'package.module:callable' (called as callable(checkpoint, **kwargs))."
        )
    module, name = loader.split(":", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ComFaceInputError(
            f"Cannot import the generator loader {loader!r} ({exc}). Put the package on PYTHONPATH "
            f"(now: {os.pathsep.join(sys.path[:3])}...) or fix the name."
        ) from None


def load_generator(loader: str, checkpoint: Optional[str] = None, **kwargs: Any):
    """``G`` from a loader and an optional checkpoint path, checked to be a generator."""
    fn = resolve_loader(loader)
    G = fn(checkpoint, **kwargs) if checkpoint is not None else fn(**kwargs)
    return check_generator(G, checkpoint or loader)


__all__ = ["LOADERS", "check_generator", "load_generator", "load_nvidia_pickle", "missing_nvidia_modules",
           "resolve_loader"]

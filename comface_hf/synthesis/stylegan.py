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
format goes through an import path, ``package.module:callable`` called as ``callable(checkpoint, **kwargs)``. An import
path is code: naming one imports that module and calls that function (``os:system`` would run the checkpoint string as a
shell command), so :func:`load_generator` refuses import paths unless the caller opts in (``trust_code=True``, the
trainer's ``--trust_loader_code``); the built-in ``nvidia-pickle`` loader needs no opt-in.

What a loader must return (checked by :func:`check_generator`):

* ``z_dim``: size of the latent ``z``;
* ``synthesis(w)``: latents -> images ``[B, 3, R, R]`` in [-1, 1];
* ``mapping(z, c)``: ``z`` -> ``w`` (``[B, w_dim]`` or ``[B, num_ws, w_dim]``), with ``w_dim``; or ``mapping = None``
  for a generator without a mapping network (a DCGAN: ``z`` goes straight to ``synthesis``, so ``w = z`` and
  ``w_dim`` defaults to ``z_dim``);
* optional: ``c_dim`` (default 0), ``num_ws`` (W+ boundaries), ``img_resolution`` (recorded), ``mapping.w_avg``
  (needed for ``truncation_psi != 1``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from ..errors import ComFaceInputError

logger = logging.getLogger(__name__)

NVIDIA_MODULES = ("dnnlib", "torch_utils")
NVIDIA_REPOSITORIES = "https://github.com/NVlabs/stylegan3 (or https://github.com/NVlabs/stylegan2-ada-pytorch)"
GENERATOR_ATTRIBUTES = ("synthesis", "z_dim")
# Modules NVIDIA's code imports that today's environments may lack, and the exact fix for each.
IMPORT_FIXES = {
    "pkg_resources": 'setuptools >= 82 no longer ships pkg_resources: pip install "setuptools<82"',
    "distutils": "Python >= 3.12 has no distutils of its own: pip install setuptools (it provides distutils)",
}


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
    """Refuse anything that is not a StyleGAN-style generator (the interface in the module docstring); returns ``G``."""
    missing = [a for a in GENERATOR_ATTRIBUTES if not hasattr(G, a)]
    mapping = getattr(G, "mapping", None)
    if mapping is not None and not hasattr(G, "w_dim"):
        missing.append("w_dim")
    if missing or not callable(getattr(G, "synthesis", None)) or not (mapping is None or callable(mapping)):
        raise ComFaceInputError(
            f"{source} holds a {generator_class_name(G)}, not a StyleGAN generator: it lacks "
            f"{', '.join(missing) or 'a callable synthesis (and a callable mapping, or mapping = None)'}. "
            "Pass a generator pickle (a training snapshot or a released *.pkl with G_ema), not a discriminator or "
            "another network."
        )
    return G


def nvidia_code_root() -> Optional[Path]:
    """The folder holding NVIDIA's ``torch_utils`` (the clone's root), if it can be imported here."""
    spec = importlib.util.find_spec("torch_utils")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent.parent


def generator_class_name(G: Any) -> str:
    """``module.Class`` of ``G``; for NVIDIA's pickled networks the real class, not the persistence wrapper.

    NVIDIA's ``torch_utils.persistence`` wraps every network class in a ``Decorator`` subclass and, when a pickle is
    loaded, re-creates the class from the module source stored in the pickle under a random module name
    (``_imported_module_<hex>``): ``type(G)`` then says ``torch_utils.persistence.persistent_class.<locals>.Decorator``.
    The stored source is matched against the ``training/*.py`` files of the NVIDIA clone on the path to name the module
    (``training.networks``, ``training.networks_stylegan3``...); if none matches, the source's hash is recorded instead.
    """
    cls = type(G)
    name, source = getattr(cls, "_orig_class_name", None), getattr(cls, "_orig_module_src", None)
    if not (name and isinstance(source, str)):
        return cls.__module__ + "." + cls.__qualname__
    root = nvidia_code_root()
    for path in sorted((root / "training").glob("*.py")) if root else []:
        try:
            if path.read_text(encoding="utf-8-sig") == source:  # inspect.getsource drops the byte-order mark
                return f"training.{path.stem}.{name}"
        except (OSError, UnicodeDecodeError):
            continue
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    where = root / "training" if root else "any clone on the path"
    return f"<NVIDIA module, source sha256 {digest}, not in {where}>.{name}"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (network pickles are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _nvidia_import_compat() -> Iterator[None]:
    """Let NVIDIA's code import under today's setuptools while a pickle is loaded.

    StyleGAN3's ``torch_utils/ops/conv2d_gradfix.py`` and ``grid_sample_gradfix.py`` do
    ``from pkg_resources import parse_version`` to compare torch versions; setuptools >= 82 ships no
    ``pkg_resources``. That one function is ``packaging.version.parse`` (pkg_resources re-exported packaging's), so
    while the pickle's code is imported, and only if no real ``pkg_resources`` is installed, a module offering just
    ``parse_version`` stands in. It is removed afterwards so that other code still sees ``pkg_resources`` as absent
    (NVIDIA's modules keep the function they imported).
    """
    try:
        installed = importlib.util.find_spec("pkg_resources") is not None
    except ValueError:  # a module object without a spec in sys.modules: something provides it already
        installed = True
    if installed:
        yield
        return
    from packaging.version import parse

    shim = types.ModuleType("pkg_resources", "comface_hf stand-in: parse_version only (for NVIDIA's torch_utils)")
    shim.parse_version = parse
    missing = object()
    previous = sys.modules.get("pkg_resources", missing)
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is shim:
            if previous is missing:
                del sys.modules["pkg_resources"]
            else:
                sys.modules["pkg_resources"] = previous


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
        with _nvidia_import_compat():
            obj = pickle.loads(data)
    except ImportError as exc:
        root = (exc.name or "").split(".")[0]
        if isinstance(exc, ModuleNotFoundError) and (root in NVIDIA_MODULES or root == "training"):
            raise _nvidia_code_error(path, [exc.name or root]) from None
        fix = IMPORT_FIXES.get(root) or next((f for m, f in IMPORT_FIXES.items() if m in str(exc)), None)
        raise ComFaceInputError(
            f"{path}: NVIDIA's code could not import what it needs ({type(exc).__name__}: {exc}). "
            + (f"Fix: {fix}." if fix else f"Install the module {exc.name or root!r} in this environment.")
        ) from None
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


def resolve_loader(loader: str, trust_code: bool = False) -> Callable[..., Any]:
    """A built-in loader name (``nvidia-pickle``) or, with ``trust_code=True``, ``package.module:callable``."""
    if loader in LOADERS:
        return LOADERS[loader]
    if ":" not in loader:
        raise ComFaceInputError(
            f"Unknown generator loader {loader!r}: use one of {', '.join(LOADERS)} or an import path "
            "'package.module:callable' (called as callable(checkpoint, **kwargs))."
        )
    module, name = loader.split(":", 1)
    if not trust_code:
        raise ComFaceInputError(
            f"The generator loader {loader!r} is code: it would import {module!r} and call {name}(checkpoint, "
            "**kwargs) (a loader such as 'os:system' would run the checkpoint string as a shell command). Check where "
            "it comes from (a --generators_file or --config_file can name one), then pass --trust_loader_code "
            f"(trust_code=True) to run it; the built-in {', '.join(map(repr, LOADERS))} loader needs no opt-in."
        )
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ComFaceInputError(
            f"Cannot import the generator loader {loader!r} ({exc}). Put the package on PYTHONPATH "
            f"(now: {os.pathsep.join(sys.path[:3])}...) or fix the name."
        ) from None


def load_generator(loader: str, checkpoint: Optional[str] = None, trust_code: bool = False, **kwargs: Any):
    """``G`` from a loader and an optional checkpoint path, checked to be a generator.

    ``trust_code``: allow an import-path loader (it runs that code); the built-in loaders need no opt-in.
    """
    fn = resolve_loader(loader, trust_code=trust_code)
    G = fn(checkpoint, **kwargs) if checkpoint is not None else fn(**kwargs)
    return check_generator(G, checkpoint or loader)


__all__ = ["LOADERS", "check_generator", "file_sha256", "generator_class_name", "load_generator", "load_nvidia_pickle",
           "missing_nvidia_modules", "nvidia_code_root", "resolve_loader"]

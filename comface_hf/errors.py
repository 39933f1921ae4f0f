"""Errors a user can fix, and the one way command-line tools report them.

Library code raises :class:`ComFaceInputError` (a ``ValueError``) for bad input, with the problem and the fix in the
message. Command-line entry points wrap their ``main`` in :func:`run_cli`, which prints such errors as one line and
exits with status 2 instead of a traceback (``COMFACE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


class ComFaceInputError(ValueError):
    """Bad input (an image, a file, a dataset, an option) that the user can fix; the message says how."""


class ImageReadError(ComFaceInputError):
    """A file or object that is not a usable image."""


class NoFaceError(ComFaceInputError):
    """No face was found in an image that must show one."""


#: What command-line tools report as one clear line: user-fixable errors, missing files, bad values and options.
REPORTED_ERRORS: tuple[type[BaseException], ...] = (ComFaceInputError, FileNotFoundError, ValueError, KeyError)


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a command-line ``main``; bad input ends it with ``error: <message>`` on stderr and exit status 2."""
    try:
        return main(*args, **kwargs)
    except REPORTED_ERRORS as exc:
        if os.environ.get("COMFACE_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        print("(set COMFACE_DEBUG=1 to see where it happened)", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["ComFaceInputError", "ImageReadError", "NoFaceError", "REPORTED_ERRORS", "run_cli"]

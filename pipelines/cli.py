"""Running an entry point: user errors as one line and exit 2, tracebacks only with --debug.

    if __name__ == "__main__":
        run(main)

`--debug` on the command line (removed before `main` parses it) or `VOCALNET_DEBUG=1` lets the
traceback through.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from tokenization.errors import UserError

EXIT_USER_ERROR = 2


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("VOCALNET_DEBUG", "") not in ("", "0")


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Call `main(argv)`; a `UserError` prints `error: <message>` (one line) and exits 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except UserError as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the library wrote
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None

"""Running an entry point: user errors as one line and exit 2 (or a code the entry point names), tracebacks only with --debug.

    if __name__ == "__main__":
        run(main)

`--debug` on the command line (removed before `main` parses it) or `VOCALNET_DEBUG=1` lets the
traceback through. The `require_*` helpers check paths where the person is, before a model
loads or Ray starts, and raise `UserError` naming the flag, the path and what to do.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from pipelines.logs import announce_log
from tokenization.errors import UserError
from tokenization.paths import nearest_existing

EXIT_USER_ERROR = UserError.exit_code
EXIT_CONFIG_PROBLEM = 1  # `pipelines.train --dry-run`: its verdict on a config (issue 11), apart from usage errors
MODEL_CONFIG = "config.json"  # what VocalNetM2.save_pretrained writes first


def require_input(flag: str, path: str, hint: str = "check the path") -> None:
    """`path` (local or s3://) must exist."""
    from tokenization import storage

    if not storage.exists(path):
        raise UserError(f"{flag} {path}: no such file or folder; {hint}")


def require_checkpoint(flag: str, path: str) -> str:
    """An exported model folder (or a Ray checkpoint holding `model/`); returns the model folder."""
    from tokenization import storage
    from training.checkpointing import model_dir_of

    require_input(flag, path, "pass a model exported by pipelines.train (<storage_path>/<run_name>/export)")
    model_dir = model_dir_of(path)
    if not storage.exists(storage.join(model_dir, MODEL_CONFIG)):
        raise UserError(f"{flag} {path}: no {MODEL_CONFIG} there, so not an exported model; pass "
                        "<storage_path>/<run_name>/export of pipelines.train")
    return model_dir


def require_codec(flag: str, spec: str) -> None:
    """`tiny` or a local checkpoint folder (nothing is downloaded)."""
    if spec not in ("tiny", "mimi:tiny"):
        require_input(flag, spec.removeprefix("mimi:"), "pass 'tiny' or a local Mimi checkpoint folder")


def require_writable_folder(flag: str, path: str) -> None:
    """An output folder can be written (it or its nearest existing parent is a writable folder): fail before
    Ray starts, not on the first write (read-only mount, a path under a file)."""
    if path.startswith("s3://"):
        return  # checked by the first write; S3 has no local permission model to probe
    _require_writable_parent(flag, path, nearest_existing(path), "a folder path", "a folder")


def require_writable_file(flag: str, path: str) -> None:
    """The folder that will hold `path` exists or can be created, and is writable."""
    _require_writable_parent(flag, path, nearest_existing(os.path.dirname(os.path.abspath(path))), "a path in a folder", "a path")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: is a folder; pass a file name")


def _require_writable_parent(flag: str, path: str, probe: str, pass_instead: str, writable: str) -> None:
    """`probe` (the nearest existing folder of what `path` will create) is a folder this process can write to."""
    if not os.path.isdir(probe):
        raise UserError(f"{flag} {path}: {probe} is a file, not a folder; pass {pass_instead}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {probe} is not writable; pass {writable} you can write to")


def require_at_least(flag: str, value: float | None, low: float) -> None:
    if value is not None and value < low:
        raise UserError(f"{flag} {value}: must be >= {low}")


@contextmanager
def user_errors_exit(code: int) -> Iterator[None]:
    """A `UserError` raised inside exits with `code` instead of 2 (still one line, via `run`)."""
    try:
        yield
    except UserError as exc:
        exc.exit_code = code
        raise


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("VOCALNET_DEBUG", "") not in ("", "0")


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Call `main(argv)`; a `UserError` prints `error: <message>` (one line) and exits with its `exit_code` (2).

    Otherwise, at the end (success or a crash), names the job's log file once (`pipelines.logs`).
    """
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
        raise SystemExit(exc.exit_code) from None
    except BaseException:
        announce_log()
        raise
    announce_log()

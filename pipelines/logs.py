"""One log file per job; the terminal keeps progress bars, summaries and real errors.

    from pipelines.logs import setup_logging
    setup_logging("tokenize", args.output)      # in main(), right after the flags parse

Everything else goes to `<output>/logs/<job>.log` (or a temp file for s3:// outputs), printed once:
our INFO lines, Python warnings of our dependencies (`FutureWarning` & co., through
`logging.captureWarnings`), Ray's own loggers, and every line Ray workers print (Ray Train's
per-report dicts, model-loading chatter). A worker line that must reach the terminal (the
training progress line) is printed with `terminal_line(...)`; the driver strips the mark.
Warnings and errors of our own packages, and errors of any logger but Ray Data's (the job raises those
errors itself), still reach the terminal; a `UserError` is printed as one line by `pipelines.cli.run`.
A log whose disk fills up moves to the temp folder, once, with one line saying where.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

OWN_PACKAGES = ("pipelines", "training", "tokenization", "filtering")
# A worker's stdout line starting with this goes to the driver's terminal (mark removed).
TERMINAL_MARK = "[vocalnet] "
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_log_path: Path | None = None
_job = ""
_announced = False


def log_path_for(job: str, output: str | os.PathLike | None) -> Path:
    """`<output>/logs/<job>.log` for a local output folder, else a file under the temp folder."""
    out = "" if output is None else str(output)
    if out and "://" not in out:
        return Path(out).resolve() / "logs" / f"{job}.log"
    return Path(tempfile.gettempdir()) / "vocalnet-logs" / f"{job}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


class _ConsoleFilter(logging.Filter):
    """Our packages' warnings, and anyone's errors; never captured Python warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            # Ray Data logs a failed task with its trace, then raises it in the job, which reports it (a storage
            # error as one line): the trace stays in the log file.
            return record.name != "py.warnings" and not record.name.startswith("ray.data")
        return record.levelno >= logging.WARNING and record.name.split(".")[0] in OWN_PACKAGES


class _LazyFileHandler(logging.FileHandler):
    """Opens (and creates the folder of) its file at the first record, so a job that stops on a
    user error leaves nothing in its output; an unwritable folder falls back to the temp folder."""

    def __init__(self, path: Path, job: str):
        super().__init__(path, encoding="utf-8", delay=True)
        self.job = job

    def _open(self):
        global _log_path
        try:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            return super()._open()
        except OSError:
            self.baseFilename = str(log_path_for(self.job, None))
            _log_path = Path(self.baseFilename)
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        """A log on a full or failing disk moves to the temp folder once (one line says where), instead of
        printing logging's own traceback for every record."""
        global _log_path
        exc = sys.exc_info()[1]
        moved = str(log_path_for(self.job, None))
        if not isinstance(exc, OSError) or self.baseFilename == moved or "://" in moved:
            return super().handleError(record)
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()  # its unwritten buffer is lost with the disk
            self.stream = None
        print(f"[{self.job}] log moved to {moved} ({self.baseFilename}: {exc.strerror or exc})", file=sys.stderr, flush=True)
        self.baseFilename, _log_path = moved, Path(moved)
        Path(moved).parent.mkdir(parents=True, exist_ok=True)
        self.emit(record)


def setup_logging(job: str, output: str | os.PathLike | None = None) -> Path:
    """Route logging and warnings of this process to the job's log file; returns its path.

    Called once by each entry point right after its flags parse; a nested call (the demo
    running the jobs) keeps the first file, so one run writes one log. Prints nothing:
    `announce_log` names the file once (when Ray starts, or when the job ends).
    """
    global _log_path, _job
    if _log_path is not None:
        return _log_path
    path = log_path_for(job, output)
    file_handler = _LazyFileHandler(path, job)
    file_handler.setFormatter(logging.Formatter(FORMAT))
    file_handler.setLevel(logging.INFO)  # Ray Data's loggers run at DEBUG; their records still pass through here
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_ConsoleFilter())
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:  # basicConfig's; not a test's capture
        root.removeHandler(h)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    _log_path, _job = path, job
    return path


def announce_log() -> None:
    """Print where the log file is, once per run."""
    global _announced
    if _log_path is None or _announced:
        return
    _announced = True
    print(f"[{_job}] log (warnings, Ray workers' output): {_log_path}", file=sys.stderr, flush=True)


def quiet_ray_loggers() -> None:
    """Send Ray's driver-side loggers (`ray`, `ray.data`, ...) to the log file instead of stderr.

    Ray installs its own stderr handlers and turns propagation off; we drop those handlers and
    let the records reach the root logger (file; errors also on the terminal).
    """
    if _log_path is None:
        return
    names = [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]
    for name in names:
        logger = logging.getLogger(name)
        streams = [h for h in logger.handlers if type(h) is logging.StreamHandler
                   or getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
        for h in streams:
            logger.removeHandler(h)
        if streams:
            logger.propagate = True


def terminal_line(line: str) -> None:
    """Print a line that belongs on the driver's terminal, also from a Ray worker or actor."""
    print(f"{TERMINAL_MARK}{line}", flush=True)


def route_worker_output() -> bool:
    """Worker stdout/stderr lines go to the log file; marked lines to the terminal.

    Replaces Ray's handler that prints every worker line on the driver (private API, checked:
    Ray 2.60); returns False and leaves Ray's printing alone where that is not available.
    """
    if _log_path is None:
        return False
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    if not any(name == "ray_print_logs" for name, _ in dispatcher.handlers):
        return False
    worker_log = logging.getLogger("ray_workers")  # not under "ray": ray.init sets that logger to WARNING

    def handle(data: dict) -> None:
        who = data.get("actor_name") or data.get("task_name") or "worker"
        for line in data.get("lines", []):
            if line.startswith(TERMINAL_MARK):
                print(line[len(TERMINAL_MARK):], flush=True)
            else:
                worker_log.info("(%s pid=%s) %s", who, data.get("pid"), line)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", handle)
    return True

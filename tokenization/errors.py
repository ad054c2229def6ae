"""`UserError`: a mistake the person running a job can fix (a flag, a config value, a path).

Libraries raise it with a message that names the key, file or path and what to do; entry
points (`pipelines.cli.run`) print that message as one line and exit 2, so a typo never
costs a cluster allocation or a wall of tracebacks.
"""

from __future__ import annotations


class UserError(Exception):
    """A message for the user, not a bug: shown as one line, exit code `exit_code`."""

    exit_code: int = 2  # `pipelines.cli.user_errors_exit` sets another where an entry point promises one

"""Helper programs the tool runs, found by absolute path in the system's own directories.

Never through PATH: the tool starts as root, and a PATH that holds a directory someone else
can write (or a poisoned environment from sudo -E, a cron job, a unit file) would make it run
their ``ethtool`` as root."""

from __future__ import annotations

import os

SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# What a helper sees: the same directories, and messages in the untranslated form parsed here.
HELPER_ENV = {"PATH": ":".join(SYSTEM_DIRS), "LC_ALL": "C"}


class MissingProgram(Exception):
    """A helper program is not installed: one line for the user."""


def system_program(name: str) -> str:
    """The absolute path of ``name`` in the first of SYSTEM_DIRS that holds it executable."""
    for directory in SYSTEM_DIRS:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise MissingProgram(f"{name} is not installed (looked in {', '.join(SYSTEM_DIRS)})")

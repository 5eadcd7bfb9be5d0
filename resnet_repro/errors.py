"""User-facing errors.

Anything raised as a `ReproError` is bad input or a broken environment, not a bug: the CLI
prints its message as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class ReproError(Exception):
    """Base class: the message is shown to the user as-is, on one line."""


class ConfigError(ReproError):
    """An invalid model / recipe / trainer setting (unknown name, wrong depth, bad size)."""


class DataError(ReproError):
    """Missing, malformed or unreadable data."""


class CheckpointError(ReproError):
    """A missing, corrupt, unsafe or mismatched checkpoint."""

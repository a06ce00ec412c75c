"""Turning exceptions from third-party code into the one-line messages squeezelab shows."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DamagedFileError(ValueError):
    """A file squeezelab cannot read as what it claims to be (truncated, corrupted, crafted or foreign).

    One line naming the file and, for a record with the wrong structure, the field. A ``ValueError``, so the
    command line prints it as one line and callers that catch ``ValueError`` keep working.
    """

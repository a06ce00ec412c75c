"""Turning exceptions from third-party code into the one-line messages squeezelab shows."""

from __future__ import annotations

import difflib
from typing import Any, Collection, Mapping


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DamagedFileError(ValueError):
    """A file squeezelab cannot read as what it claims to be (truncated, corrupted, crafted or foreign).

    One line naming the file and, for a record with the wrong structure, the field. A ``ValueError``, so the
    command line prints it as one line and callers that catch ``ValueError`` keep working.
    """


def check_settings_mapping(data: Any, known: Collection[str], source: str) -> Mapping[str, Any]:
    """``data`` if it is a mapping of known setting names; else one line naming ``source`` and the first
    unknown key, with the closest known name as a hint (for configs read from files or ``--set``)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{source}: unknown setting {key!r}{hint}")
    return data

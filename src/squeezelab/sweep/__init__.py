"""Design-space exploration: studies (grid/random over builder and training settings) run with Optuna.

Optuna is an optional dependency (``pip install "squeezelab[sweep]"``): study files are read and
checked without it, and the runner and report are imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .study import Range, StudySpec, point_key

if TYPE_CHECKING:
    from .report import markdown_table, pareto_front, trial_rows, write_report
    from .runner import open_study, run_study, run_trial

_OPTUNA_NAMES = {
    "markdown_table": "report",
    "pareto_front": "report",
    "trial_rows": "report",
    "write_report": "report",
    "open_study": "runner",
    "run_study": "runner",
    "run_trial": "runner",
}

__all__ = [
    "Range",
    "StudySpec",
    "markdown_table",
    "open_study",
    "pareto_front",
    "point_key",
    "run_study",
    "run_trial",
    "trial_rows",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _OPTUNA_NAMES:
        return getattr(importlib.import_module(f".{_OPTUNA_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Design-space exploration: studies (grid/random over builder and training settings) run with Optuna."""

from .report import markdown_table, pareto_front, trial_rows, write_report
from .runner import open_study, run_study, run_trial
from .study import Range, StudySpec, point_key

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

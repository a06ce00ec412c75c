"""Optional dependencies: imported where a feature needs them, never when ``squeezelab`` is imported.

A missing one is reported in one line that names the pip extra bringing it, so a base install runs
every command that needs only base dependencies.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Which extra of pyproject.toml brings each optional module.
EXTRAS = {
    "optuna": "sweep",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
    "executorch": "executorch",
    "torchao": "executorch",
    "ncnn": "ncnn",
    "pnnx": "ncnn",
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str) -> ModuleType:
    """Import ``module`` (a key of ``EXTRAS``, or a submodule of one), or say which extra installs it."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != top:
            raise  # the package is there but broken: its own error says more than ours would
        raise MissingDependency(
            f"this needs {top}, which is not installed: pip install \"squeezelab[{EXTRAS[top]}]\""
        ) from None

"""ExecuTorch: ``.pte`` programs with the XNNPACK delegate (fp32, or int8 by XNNPACK's own quantizer) and an
``nn.Module`` runtime, for phones and embedded Linux.

The model goes through ``torch.export`` (dynamic batch axis), optionally post-training quantization with
``XNNPACKQuantizer`` (symmetric per-channel int8 weights, int8 activations, calibrated on real images), and is
lowered with the XNNPACK partitioner, so every supported layer runs in XNNPACK's kernels. The squeezelab
metadata (preprocessing config, model spec, precision) is stored as a constant method, so a ``.pte`` file alone
is enough to classify images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from squeezelab.models import ModelConfig
from squeezelab.models.registry import model_config
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import atomic_write_bytes
from squeezelab.utils.optional import MissingDependency, require

from .onnx_export import metadata_config

METADATA_METHOD = "squeezelab_metadata"
# Upper bound of the exported dynamic batch axis. ExecuTorch plans activation memory for it at load time, and
# in ExecuTorch 1.5 bounds far above the example batch were not honoured (inputs above 15 failed whatever the
# bound), so programs take up to 8 images per call and ExecuTorchModel splits larger batches.
MAX_BATCH = 8
CALIBRATION_CHUNK = 8


class ConversionError(ValueError):
    """A runtime cannot convert the model; the message names the runtime, the layer and the reason."""


class GlobalMaxPool(nn.Module):
    """``AdaptiveMaxPool2d(1)`` as a reduction: ``adaptive_max_pool2d`` is not in the Core ATen op set that
    ExecuTorch accepts, ``amax`` is (and gives identical values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


def exportable(model: nn.Module, input_size: Sequence[int] | None = None) -> nn.Module:
    """A copy of ``model`` with layers ExecuTorch cannot take, or cannot hand to XNNPACK, replaced by
    equivalent ones it can (at ``input_size``, (C, H, W), default the model's)."""
    import copy

    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveMaxPool2d) and child.output_size in (1, (1, 1)):
                setattr(parent, name, GlobalMaxPool())
    _floor_mode_where_equal(model, tuple(input_size or model_config(model).input_size))
    return model


def _floor_mode_where_equal(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Switch ``ceil_mode`` max pools (Caffe's rounding, in SqueezeNet v1.0/v1.1) to floor mode where both give
    the same output size at this input size, as they do at 224 and 227: XNNPACK does not take ceil-mode pools,
    and ExecuTorch's portable fallback for them made SqueezeNet about 10x slower than onnxruntime."""
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d) and m.ceil_mode]
    if not pools:
        return
    shapes: dict[nn.Module, tuple[torch.Size, torch.Size]] = {}
    hooks = [pool.register_forward_hook(lambda m, args, out: shapes.__setitem__(m, (args[0].shape, out.shape))) for pool in pools]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
    for pool in pools:
        if pool not in shapes:  # not reached by this input
            continue
        in_shape, out_shape = shapes[pool]
        floor = nn.functional.max_pool2d(torch.zeros(in_shape), pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=False)
        if floor.shape == out_shape:
            pool.ceil_mode = False


def export_executorch(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int] | None = None,
    calibration: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` as an ExecuTorch program delegated to XNNPACK; int8 when ``calibration`` (a float32 batch
    from :func:`~squeezelab.interop.quantize.calibration_batch`) is given. Returns ``path`` (written atomically)."""
    require("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    cfg = model_config(model)
    given = tuple(int(v) for v in (input_size or cfg.input_size))
    size = (cfg.input_size[0], given[-2], given[-1])  # (C, H, W) from (C, H, W) or (H, W)
    prepared = exportable(model, size)
    example = (torch.zeros(2, *size),)  # batch 2: torch.export specialises a dynamic axis seen at size 1
    program = _exported(prepared, example, model_name(model))
    if calibration is not None:
        program = _quantized(program, example, calibration, model_name(model))
    entries = {
        "squeezelab.default_cfg": json.dumps(replace(cfg, input_size=size).to_dict()),
        "squeezelab.model_spec": json.dumps(getattr(model, "model_spec", None)),
        "squeezelab.precision": "int8" if calibration is not None else "fp32",
        "squeezelab.max_batch": str(MAX_BATCH),
        **(metadata or {}),
    }
    try:
        lowered = to_edge_transform_and_lower(
            program, partitioner=[XnnpackPartitioner()], constant_methods={METADATA_METHOD: json.dumps(entries)}
        ).to_executorch()
    except Exception as exc:  # the exporter's errors name an operator; we name the layer holding it
        raise _conversion_error(program, model_name(model), exc) from None
    out = Path(path)
    atomic_write_bytes(out, lowered.buffer)
    return out


def model_name(model: nn.Module) -> str:
    spec = getattr(model, "model_spec", None)
    return spec["name"] if isinstance(spec, dict) and "name" in spec else type(model).__name__


def _exported(model: nn.Module, example: tuple[torch.Tensor, ...], name: str) -> Any:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        return torch.export.export(model, example, dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types (unsupported Python, data-dependent control flow)
        raise ConversionError(f"executorch cannot convert {name}: torch.export failed ({first_line(exc)})") from None


def _quantized(program: Any, example: tuple[torch.Tensor, ...], calibration: np.ndarray, name: str) -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    observed = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for chunk in np.array_split(calibration, max(1, len(calibration) // CALIBRATION_CHUNK)):
            observed(torch.from_numpy(np.ascontiguousarray(chunk)))
    converted = convert_pt2e(observed)
    return _exported(converted, example, name)


def _conversion_error(program: Any, name: str, exc: Exception) -> ConversionError:
    """``executorch cannot convert NAME: layer L (Type): reason``, the layer found from the operator the
    exporter names (``aten.xxx``) in the exported graph's module stack."""
    reason = first_line(exc)
    match = re.search(r"aten\.([A-Za-z0-9_]+)", str(exc))
    layer = _layer_of_operator(program, match.group(1)) if match else None
    where = f"layer {layer}: " if layer else ""
    return ConversionError(f"executorch cannot convert {name}: {where}{reason}")


def _layer_of_operator(program: Any, operator: str) -> str | None:
    for node in program.graph.nodes:
        if node.op == "call_function" and operator in str(node.target):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                return f"{path} ({getattr(kind, '__name__', str(kind).rsplit('.', 1)[-1])})"
    return None


def set_executorch_threads(threads: int) -> None:
    """ExecuTorch's XNNPACK thread pool is one per process: this sets it for every program."""
    require("executorch")
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)


def _load_program(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    log: list[str] = []
    try:
        with _native_log_captured(log):
            require("executorch")
            from executorch.runtime import Runtime

            return Runtime.get().load_program(path)
    except MissingDependency:
        raise
    except Exception as exc:  # the runtime raises RuntimeError with an error code; its log says what is wrong
        reason = _last_runtime_message(log) or first_line(exc)
        raise DamagedFileError(f"{path}: ExecuTorch cannot load it ({reason})") from None


@contextlib.contextmanager
def _native_log_captured(log: list[str]) -> Iterator[None]:
    """Collect what ExecuTorch prints while loading into ``log`` instead of the terminal.

    Its C++ runtime reports a damaged file on the process's stderr (file descriptor 2) before raising a bare
    error code, and importing it logs a deprecation warning: captured, the reason goes into one error line.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stderr(io.StringIO()) as python_side:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log += sink.read().decode(errors="replace").splitlines() + python_side.getvalue().splitlines()


def _last_runtime_message(log: list[str]) -> str | None:
    """The runtime's own message (``[program.cpp:114] File size is too small...``), without its source tag."""
    messages = [line for line in log if line.startswith("[") and "] " in line]
    return messages[-1].split("] ", 1)[1].strip() if messages else None


def executorch_metadata(path: str | os.PathLike) -> dict[str, str]:
    """squeezelab's metadata stored in a ``.pte`` file by :func:`export_executorch` (empty if none)."""
    return _program_metadata(_load_program(path))


def _program_metadata(program: Any) -> dict[str, str]:
    if METADATA_METHOD not in program.method_names:
        return {}
    return json.loads(program.load_method(METADATA_METHOD).execute([])[0])


class ExecuTorchModel(nn.Module):
    """Runs a ``.pte`` program behind an ``nn.Module`` interface (CPU, inference only).

    ``threads`` resets the process-wide XNNPACK thread pool (see :func:`set_executorch_threads`).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.path = str(path)
        program = _load_program(path)
        metadata = _program_metadata(program)
        self.default_cfg: ModelConfig = metadata_config(metadata, path)
        self.precision = metadata.get("squeezelab.precision", "fp32")
        self.file_bytes = Path(path).stat().st_size
        self.max_batch = int(metadata.get("squeezelab.max_batch", 1))
        if threads is not None:
            set_executorch_threads(threads)
        self.method = program.load_method("forward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.detach().float().split(self.max_batch)
        outputs = [self.method.execute([chunk.contiguous()])[0] for chunk in chunks]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

"""Device, mixed precision and distributed set-up for training and evaluation."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: where oneDNN runs bf16 convolutions natively. Elsewhere bf16 is emulated and
    slower than fp32, so ``amp: auto`` stays fp32 there."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an unavailable explicit choice is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise ValueError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name == "mps" and not mps:
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    if name not in ("cpu", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, got {name!r}")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` (auto/off/bf16/fp16) on ``device``, or None for full fp32."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        # bf16 autocast trains 1.6-1.9x faster than fp32 with channels_last on such CPUs and reaches the same
        # accuracy (docs/training.md: benchmarks/bench_train_settings.py, experiments/studies/10_bf16_autocast.yaml)
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if mode == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp 'bf16' requested but this GPU does not support bfloat16; use fp16")
        return torch.bfloat16
    if mode == "fp16":
        if device.type == "cpu":
            raise ValueError("amp 'fp16' is for GPUs; on a CPU use 'bf16' or 'off'")
        return torch.float16
    raise ValueError(f"amp must be auto, off, bf16 or fp16, got {mode!r}")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA).

    Outside torchrun (no ``WORLD_SIZE`` > 1) this is a single-process run and nothing is initialised.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    use_nccl = torch.cuda.is_available() and device_name in ("auto", "cuda")
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def join_process_group(device_name: str = "auto") -> tuple[DistInfo, bool]:
    """:func:`init_distributed`, and whether this call created the group (its owner destroys it)."""
    was_initialized = dist.is_available() and dist.is_initialized()
    info = init_distributed(device_name)
    return info, info.enabled and not was_initialized


@contextlib.contextmanager
def distributed_session(device_name: str = "auto") -> Iterator[DistInfo]:
    """Stay in torchrun's process group across several :func:`fit` calls (each would otherwise join and
    leave it), e.g. a compression pipeline's fine-tuning stages; a no-op outside torchrun."""
    info, own = join_process_group(device_name)
    try:
        yield info
    finally:
        if own:
            dist.destroy_process_group()

"""Dependency-free helpers used by every layer (atomic file writes, safe loading)."""

from .files import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_text, safe_torch_load

__all__ = ["atomic_torch_save", "atomic_write", "atomic_write_bytes", "atomic_write_text", "safe_torch_load"]

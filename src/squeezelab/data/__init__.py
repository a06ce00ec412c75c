"""Datasets and transforms (``torch.utils.data`` / torchvision conventions)."""

from .transforms import eval_transform

__all__ = ["eval_transform"]

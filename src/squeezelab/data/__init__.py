"""Datasets, loaders and transforms (``torch.utils.data`` / torchvision conventions).

``build_datasets(name, root, ...)`` gives train / val / test splits of uint8 images; ``build_loaders`` turns
them into ``DataLoader``s that augment and normalise whole batches.
"""

from .augment import BatchAugment, BatchCollate, Normalization
from .datasets import DatasetSplits, build_datasets, dataset_options_from_config, list_datasets, stratified_split
from .images import ImageDecodeError, InMemoryImages
from .loaders import EpochLoader, Loaders, build_loaders, epoch_seed
from .transforms import eval_transform

__all__ = [
    "BatchAugment",
    "BatchCollate",
    "DatasetSplits",
    "EpochLoader",
    "ImageDecodeError",
    "InMemoryImages",
    "Loaders",
    "Normalization",
    "build_datasets",
    "build_loaders",
    "dataset_options_from_config",
    "epoch_seed",
    "eval_transform",
    "list_datasets",
    "stratified_split",
]

"""Top-1/top-5 accuracy of any backend (PyTorch or onnxruntime) on a labelled image folder.

Images are preprocessed with :func:`~squeezelab.data.transforms.eval_transform` of the model's config, so a
Caffe model is evaluated exactly as it was trained to see images (BGR, 0-255, OpenCV-style resize).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from squeezelab.data.folders import FileImages, ImageList, read_class_table, scan_class_folders, scan_flat_imagenet
from squeezelab.data.transforms import eval_transform
from squeezelab.models import ModelConfig
from squeezelab.models.registry import model_config

IMAGENET_CLASS_TABLE = "imagenet_classes.tsv"


def labelled_images(folder: str | os.PathLike, classes: str | os.PathLike | None = None) -> ImageList:
    """``<class>/<image>`` folders, or a flat ImageNet sample of ``<wnid>_<name>.JPEG`` files.

    A flat sample is labelled with ``classes`` (``index<TAB>wnid<TAB>name``; default: an
    ``imagenet_classes.tsv`` in the folder or next to it, else torchvision's class names).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if any(p.is_dir() for p in folder.iterdir()):
        return scan_class_folders(folder)
    table_path = Path(classes) if classes is not None else _class_table_near(folder)
    return scan_flat_imagenet(folder, read_class_table(table_path) if table_path is not None else None)


def _class_table_near(folder: Path) -> Path | None:
    for candidate in (folder / IMAGENET_CLASS_TABLE, folder.parent / IMAGENET_CLASS_TABLE):
        if candidate.is_file():
            return candidate
    return None


def topk_accuracy(
    model: nn.Module,
    images: ImageList,
    cfg: ModelConfig | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> dict[str, float]:
    """``{"top1", "top5", "images"}`` (percentages) of ``model`` on ``images``, preprocessed as ``cfg`` says."""
    return topk_accuracies({"model": model}, images, cfg or model_config(model), batch_size, progress)["model"]


@torch.inference_mode()
def topk_accuracies(
    models: Mapping[str, nn.Module],
    images: ImageList,
    cfg: ModelConfig,
    batch_size: int = 50,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """:func:`topk_accuracy` of several models (backends) at once: every image is decoded only once."""
    for model in models.values():
        model.eval()
    data = FileImages(images, eval_transform(cfg), cfg.input_size[0])
    hits1 = dict.fromkeys(models, 0)
    hits5 = dict.fromkeys(models, 0)
    total = 0
    loader = DataLoader(data, batch_size=batch_size)
    batches = tqdm(loader, desc="evaluating", unit="batch", disable=not progress, leave=False)
    for batch, labels in batches:
        for name, model in models.items():
            logits = model(batch)
            hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
            hits1[name] += int(hits[:, 0].sum())
            hits5[name] += int(hits.any(1).sum())
        total += len(labels)
    if total == 0:
        raise ValueError("no images to evaluate")
    return {
        name: {"top1": 100.0 * hits1[name] / total, "top5": 100.0 * hits5[name] / total, "images": total} for name in models
    }

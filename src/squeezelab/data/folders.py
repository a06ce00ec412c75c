"""Image folders: ``<split>/<class>/<image>`` trees (torchvision ``ImageFolder`` layout) and flat ImageNet samples.

Scanning checks the layout up front, so a missing split, an empty class folder or mismatched class lists are
one clear error naming the folder instead of a crash deep inside a ``DataLoader``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import InterpolationMode
from tqdm import tqdm

from .images import load_pil_image, read_image
from .transforms import resize_crop_steps

TEST_SPLIT_NAMES = ("test", "val")


@dataclass(frozen=True)
class ImageList:
    """Image files with their class indices and the class names the indices refer to."""

    paths: tuple[Path, ...]
    targets: tuple[int, ...]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, indices: Sequence[int]) -> "ImageList":
        return ImageList(tuple(self.paths[i] for i in indices), tuple(self.targets[i] for i in indices), self.class_names)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def class_folders(folder: Path) -> list[Path]:
    """The class sub-folders of ``folder`` in sorted order (hidden folders ignored)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def scan_class_folders(folder: Path, class_names: Sequence[str] | None = None) -> ImageList:
    """List ``folder/<class>/<image>`` files; ``class_names`` (e.g. the training split's) fixes the index order."""
    folders = class_folders(folder)
    if not folders:
        raise ValueError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")
    found = [p.name for p in folders]
    if class_names is not None and found != list(class_names):
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        raise ValueError(f"{folder}: class folders differ from the training split's (missing {missing}, extra {extra})")
    paths: list[Path] = []
    targets: list[int] = []
    for index, class_folder in enumerate(folders):
        files = sorted(name for name in os.listdir(class_folder) if is_image_file(name))
        if not files:
            raise ValueError(f"{class_folder}: empty class folder (no {'/'.join(IMG_EXTENSIONS)} images)")
        paths.extend(class_folder / name for name in files)
        targets.extend([index] * len(files))
    return ImageList(tuple(paths), tuple(targets), tuple(found))


def split_folders(root: Path) -> tuple[Path, Path] | None:
    """``(train, test)`` sub-folders of ``root`` (``val`` stands in for ``test``), or None if ``root`` has neither."""
    train = root / "train"
    test = next((root / name for name in TEST_SPLIT_NAMES if (root / name).is_dir()), None)
    if not train.is_dir() and test is None:
        return None
    if test is None:
        raise FileNotFoundError(f"{root}: has a 'train' folder but no 'test' (or 'val') folder")
    if not train.is_dir():
        raise FileNotFoundError(f"{root}: has a '{test.name}' folder but no 'train' folder")
    return train, test


def read_class_table(path: Path) -> list[tuple[str, str]]:
    """``index<TAB>wnid<TAB>name`` rows (with a header) -> ``[(wnid, name), ...]`` in index order."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle, delimiter="\t") if row]
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read the class table ({exc.strerror})") from None
    if rows and not rows[0][0].isdigit():
        rows = rows[1:]
    try:
        table = sorted((int(index), wnid, name) for index, wnid, name in rows)
    except ValueError:
        raise ValueError(f"{path}: expected 'index<TAB>wnid<TAB>name' rows") from None
    if [index for index, _, _ in table] != list(range(len(table))):
        raise ValueError(f"{path}: class indices are not 0..{len(table) - 1}")
    return [(wnid, name) for _, wnid, name in table]


def scan_flat_imagenet(folder: Path, classes: list[tuple[str, str]] | None) -> ImageList:
    """``folder/<wnid>_<name>.JPEG`` files; labels from the class table, else by name from torchvision's list."""
    files = sorted(name for name in os.listdir(folder) if is_image_file(name)) if folder.is_dir() else []
    if not files:
        raise ValueError(f"{folder}: no images (expected <wnid>_<name>.JPEG files or train/ and val/ folders)")
    if classes is not None:
        index_of = {wnid: i for i, (wnid, _) in enumerate(classes)}
        names = tuple(name for _, name in classes)
        key = _wnid_of
    else:
        names = tuple(torchvision_imagenet_categories())
        index_of = _unique_name_index(names)
        key = _name_of
    targets = []
    for name in files:
        label = index_of.get(key(name))
        if label is None:
            raise ValueError(f"{folder / name}: cannot tell the ImageNet class from the file name (no class table match)")
        targets.append(label)
    return ImageList(tuple(folder / name for name in files), tuple(targets), names)


def torchvision_imagenet_categories() -> list[str]:
    from torchvision.models import SqueezeNet1_0_Weights

    return list(SqueezeNet1_0_Weights.IMAGENET1K_V1.meta["categories"])


def _wnid_of(file_name: str) -> str:
    return file_name.split("_", 1)[0]


def _name_of(file_name: str) -> str:
    return _normalize_name(Path(file_name).stem.split("_", 1)[-1])


def _normalize_name(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def _unique_name_index(names: Sequence[str]) -> dict[str, int]:
    # Two of torchvision's names differ only in case ('Cardigan' the corgi, 'cardigan' the sweater): such
    # classes cannot be told apart from a file name without its wnid.
    counts: dict[str, int] = {}
    for name in names:
        counts[_normalize_name(name)] = counts.get(_normalize_name(name), 0) + 1
    return {_normalize_name(n): i for i, n in enumerate(names) if counts[_normalize_name(n)] == 1}


def decode_images(images: ImageList, in_chans: int, size: tuple[int, int], desc: str, progress: bool = True) -> torch.Tensor:
    """Decode every file into one ``N x C x H x W`` uint8 tensor (shorter side resized, centre crop to ``size``)."""
    out = torch.empty((len(images), in_chans, *size), dtype=torch.uint8)
    fit = T.Compose(resize_crop_steps(size, max(size), InterpolationMode.BILINEAR))
    for i, path in enumerate(tqdm(images.paths, desc=desc, unit="img", disable=not progress, leave=False)):
        image = read_image(path, in_chans)
        out[i] = image if tuple(image.shape[-2:]) == size else fit(image)
    return out


class FileImages(Dataset):
    """Images decoded from files on access (for data too large to hold in memory), as uint8 ``C x H x W``."""

    def __init__(self, images: ImageList, transform: Callable, in_chans: int) -> None:
        self.images = images
        self.transform = transform
        self.in_chans = in_chans
        self.targets = torch.as_tensor(images.targets, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_pil_image(self.images.paths[index], self.in_chans)
        return self.transform(image), self.images.targets[index]


def file_transform(
    train: bool, size: tuple[int, int], resize_size: int, interpolation: InterpolationMode, antialias: bool = True
) -> T.Compose:
    """PIL -> uint8 tensor: ImageNet-style RandomResizedCrop + flip for training, resize + centre crop otherwise.

    ``antialias=False`` resizes the uint8 tensor without a low-pass filter (PIL always filters), as the
    OpenCV resize of Caffe-trained models did.
    """
    if train:
        return T.Compose([T.RandomResizedCrop(size, interpolation=interpolation), T.RandomHorizontalFlip(), T.PILToTensor()])
    steps = resize_crop_steps(size, resize_size, interpolation, antialias)
    return T.Compose([*steps, T.PILToTensor()] if antialias else [T.PILToTensor(), *steps])

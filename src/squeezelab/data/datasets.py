"""Data sets by name, split into train / validation / test: ``build_datasets``.

The validation split is carved from the training data (stratified, ``val_fraction`` and ``seed``) for model
selection; the test split is the data set's own test set (or, where there is none, a fixed stratified part
that does not depend on ``seed``) and is meant to be evaluated once, at the end.

Small images (input side <= 64 px) are decoded once into an in-memory uint8 tensor and augmented in batches;
larger ones are decoded from files by ``DataLoader`` workers with torchvision's PIL transforms.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, Sized, cast

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from squeezelab.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from squeezelab.utils.errors import first_line

from .augment import BatchAugment, Normalization
from .cache import cache_root, cached, files_fingerprint
from .folders import (
    FileImages,
    ImageList,
    file_transform,
    read_class_table,
    scan_class_folders,
    scan_flat_imagenet,
    split_folders,
    torchvision_imagenet_categories,
)
from .folders import decode_images as decode_image_list
from .images import InMemoryImages, channel_stats, convert_channels, resize_images

TEST_SPLIT_SEED = 0  # fixed, so every run of a data set without its own test set is tested on the same images
IN_MEMORY_MAX_SIDE = 64
IMAGENET_CLASS_TABLE = "imagenet_classes.tsv"


@dataclass
class DatasetSplits:
    """Train / validation / test data sets plus what a model needs to know about them.

    Every data set yields ``(uint8 C x H x W tensor, int label)``; normalisation with ``mean``/``std`` (and
    ``augment`` for in-memory training data) happens per batch in the loader (see ``build_loaders``).
    ``train`` and ``val`` are None for evaluation-only data (a flat ImageNet sample); ``val`` is None when
    ``val_fraction`` is 0.
    """

    train: Dataset | None
    val: Dataset | None
    test: Dataset
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    augment: BatchAugment | None = None
    channel_order: str = "RGB"
    pixel_scale: float = 1.0
    resize_size: int = 256
    in_memory: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std, self.channel_order, self.pixel_scale)

    def describe(self) -> str:
        sizes = ", ".join(
            f"{len(cast(Sized, ds)):,} {split}" for split, ds in (("train", self.train), ("val", self.val), ("test", self.test)) if ds is not None
        )
        return f"{self.name}: {sizes}; input {'x'.join(map(str, self.input_size))}; {self.num_classes} classes"

    def model_config(self, base: ModelConfig | None = None) -> ModelConfig:
        """``base`` (or a default config) updated with this data's input size, statistics and class names."""
        return replace(
            base or ModelConfig(),
            input_size=self.input_size,
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            pixel_scale=self.pixel_scale,
            resize_size=self.resize_size,
            class_names=self.class_names,
            dataset=self.name,
        )


@dataclass(frozen=True)
class _Request:
    root: Path | None
    in_chans: int
    size: tuple[int, int]
    limit: int | None
    test_fraction: float
    cache: bool
    download: bool | None
    progress: bool


@dataclass(frozen=True)
class _Pools:
    """A source's training pool and test set, in memory (``InMemoryImages``) or as file lists."""

    train: InMemoryImages | ImageList | None
    test: InMemoryImages | ImageList
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    load: Callable[[_Request], _Pools]
    channels: int
    side: int
    flip: bool
    needs_root: bool = False
    files_only: bool = False


def build_datasets(
    name: str,
    root: str | Path | None = None,
    *,
    in_chans: int | None = None,
    input_size: int | Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    cutout: int = 0,
    translate: int | None = None,
    translate_mode: str = "zeros",
    flip: str = "random",
    limit: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channel_order: str = "RGB",
    pixel_scale: float = 1.0,
    resize_size: int | None = None,
    antialias: bool = True,
    in_memory: bool | None = None,
    test_fraction: float = 0.2,
    cache: bool = True,
    download: bool | None = None,
    progress: bool = True,
) -> DatasetSplits:
    """Load data set ``name`` (see :func:`list_datasets`) as train / val / test splits.

    Args:
        root: where the data is: an ``ImageFolder``-style ``<root>/{train,test}/<class>/*`` tree, a
            torchvision download folder, or a folder holding ``cifar10-jpeg``/``MNIST``/``imagenet-sample``.
            None downloads MNIST/CIFAR-10 into the squeezelab cache; ``digits`` needs no root. A root that does
            not hold the data set is an error naming it (unless ``download=True``): nothing is created there.
        in_chans, input_size: the model's input channels and size (int or (H, W) or (C, H, W));
            default: the data set's own. Grayscale/colour is converted to ``in_chans``.
        val_fraction, seed: the stratified validation split carved from the training data.
        augment: random crop + flip (ImageNet-style RandomResizedCrop for large inputs) on training data.
        cutout: with ``augment``, also blank a random square of this side (pixels) in each training image
            (Cutout; in-memory data only).
        translate, translate_mode, flip: in-memory augmentation (see :class:`BatchAugment`): random
            translation by up to ``translate`` pixels (default: 1/8 of the side) with a ``"zeros"`` or
            ``"reflect"`` border, and ``"random"``, ``"alternate"`` or ``"none"`` horizontal flips (data sets
            of digits are never flipped).
        limit: use at most this many images of the training pool and of the test set (quick runs, tests).
        mean, std: normalisation (default: per-channel statistics of the training pool for in-memory data,
            ImageNet's otherwise); ``channel_order``/``pixel_scale`` as in :class:`ModelConfig` (Caffe models).
        resize_size: evaluation resize of the shorter side, recorded for deployment (default: side / 0.875 for
            file-backed data, the side itself for in-memory data, whose whole images are resized to the input).
        antialias: low-pass filter when the evaluation resize shrinks (False reproduces Caffe/OpenCV models).
        in_memory: decode everything once into memory (default: when the input side is <= 64 px).
        test_fraction: test part of data sets that have no test split (digits, a single image folder).
        cache: keep decoded image folders in the user cache (``$SQUEEZELAB_CACHE`` or ~/.cache/squeezelab).
        download: let torchvision download MNIST/CIFAR-10 when they are not found. None (default): only
            into the squeezelab cache, when no ``root`` is given; True: into ``root`` too; False: never.
    """
    source = _source(name)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    chans, size = _resolve_size(in_chans, input_size, source)
    if source.needs_root and root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    request = _Request(
        Path(root).expanduser() if root is not None else None, chans, size, limit, test_fraction, cache, download, progress
    )
    pools = source.load(request)
    if isinstance(pools.test, InMemoryImages):
        in_memory = True  # array data sets (digits, torchvision's MNIST/CIFAR-10) are in memory already
    elif in_memory is None or source.files_only:
        in_memory = max(size) <= IN_MEMORY_MAX_SIDE and not source.files_only
    # The evaluation geometry recorded for deployment must be the one the model trained on: in-memory data
    # holds whole images resized to the input size (a 32x32 CIFAR image as it is), so its resize is the input
    # side itself; file-backed data follows ImageNet's resize-then-centre-crop (side / 0.875).
    resize = resize_size or (max(size) if in_memory else int(round(max(size) / 0.875)))
    splits = _memory_splits(pools, request, val_fraction, seed) if in_memory else _file_splits(pools, request, val_fraction, seed, augment, resize, antialias)
    train, val, test, pool_images = splits
    if mean is None or std is None:
        stats = channel_stats(pool_images) if pool_images is not None else _imagenet_stats(chans)
        mean = stats[0] if mean is None else mean
        std = stats[1] if std is None else std
    Normalization(tuple(mean), tuple(std), channel_order, pixel_scale)  # validates before any training starts
    if len(mean) != chans:
        raise ValueError(f"mean/std have {len(mean)} values but the model takes {chans} channels")
    if cutout and not (augment and in_memory):
        raise ValueError(f"cutout={cutout}: needs augment on and in-memory data (input side <= {IN_MEMORY_MAX_SIDE} px)")
    padding = max(1, round(max(size) / 8)) if translate is None else translate
    batch_augment = BatchAugment(padding, source.flip, cutout, translate_mode, flip) if augment and in_memory else None
    return DatasetSplits(
        train=train,
        val=val,
        test=test,
        class_names=pools.class_names,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        name=name,
        input_size=(chans, *size),
        augment=batch_augment,
        channel_order=channel_order,
        pixel_scale=pixel_scale,
        resize_size=resize,
        in_memory=in_memory,
    )


def list_datasets() -> list[str]:
    return sorted(_SOURCES)


def dataset_options_from_config(cfg: ModelConfig) -> dict:
    """``build_datasets`` keyword arguments that preprocess data the way a model was trained to see it."""
    return {
        "in_chans": cfg.input_size[0],
        "input_size": tuple(cfg.input_size[1:]),
        "mean": cfg.mean,
        "std": cfg.std,
        "channel_order": cfg.channel_order,
        "pixel_scale": cfg.pixel_scale,
        "resize_size": cfg.resize_size,
        "antialias": cfg.antialias,
    }


def stratified_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held_out)`` sorted index tensors; ``round(fraction * count)`` of each class is held out."""
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in torch.unique(targets).tolist():
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = int(math.floor(fraction * len(members) + 0.5))
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def _source(name: str) -> _Source:
    try:
        return _SOURCES[name]
    except KeyError:
        close = difflib.get_close_matches(name, _SOURCES, n=3)
        hint = f"; did you mean {', '.join(close)}" if close else ""
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(list_datasets())}){hint}") from None


def _resolve_size(
    in_chans: int | None, input_size: int | Sequence[int] | None, source: _Source
) -> tuple[int, tuple[int, int]]:
    if input_size is None:
        size: tuple[int, ...] = (source.side, source.side)
    elif isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        size = tuple(int(v) for v in input_size)
    if len(size) == 3:
        if in_chans is not None and in_chans != size[0]:
            raise ValueError(f"input_size {size} has {size[0]} channels but in_chans is {in_chans}")
        in_chans, size = size[0], size[1:]
    chans = source.channels if in_chans is None else in_chans
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be S, (H, W) or (C, H, W) of positive ints, got {input_size}")
    if chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3 for image data, got {chans}")
    return chans, (int(size[0]), int(size[1]))


def _memory_splits(pools: _Pools, request: _Request, val_fraction: float, seed: int):
    test = _in_memory(pools.test, request, "test")
    if pools.train is None:
        return None, None, test, None
    pool = _in_memory(pools.train, request, "train")
    if val_fraction == 0:
        return pool, None, test, pool.images
    kept, held = stratified_split(pool.targets, val_fraction, seed)
    return pool.subset(kept), pool.subset(held), test, pool.images


def _in_memory(data: InMemoryImages | ImageList, request: _Request, split: str) -> InMemoryImages:
    """Limit, decode (for file lists, with the cache), then convert channels and size."""
    if isinstance(data, ImageList):
        data = data.select(_limited(len(data), request.limit))
        return InMemoryImages(_decoded(data, request, split), torch.as_tensor(data.targets))
    data = data.subset(torch.as_tensor(_limited(len(data), request.limit)))
    images = resize_images(convert_channels(data.images, request.in_chans), request.size)
    return InMemoryImages(images, data.targets)


def _decoded(images: ImageList, request: _Request, split: str) -> torch.Tensor:
    key = {"kind": "image-folder", "size": request.size, "in_chans": request.in_chans, **files_fingerprint(list(images.paths))}
    build = lambda: {"images": decode_image_list(images, request.in_chans, request.size, f"decoding {split}", request.progress)}  # noqa: E731
    return cached(key, build, enabled=request.cache)["images"]


def _file_splits(
    pools: _Pools, request: _Request, val_fraction: float, seed: int, augment: bool, resize: int, antialias: bool
):
    interpolation = InterpolationMode.BILINEAR
    eval_tf = file_transform(False, request.size, resize, interpolation, antialias)
    train_tf = file_transform(True, request.size, resize, interpolation) if augment else eval_tf

    def files(images: ImageList, transform) -> FileImages:
        return FileImages(images, transform, request.in_chans)

    test, train = pools.test, pools.train
    if not isinstance(test, ImageList) or not (train is None or isinstance(train, ImageList)):
        raise TypeError("file-backed splits need file lists (in-memory pools are split in memory)")
    test_list = test.select(_limited(len(test), request.limit))
    if train is None:
        return None, None, files(test_list, eval_tf), None
    pool = train.select(_limited(len(train), request.limit))
    if val_fraction == 0:
        return files(pool, train_tf), None, files(test_list, eval_tf), None
    kept, held = stratified_split(torch.as_tensor(pool.targets), val_fraction, seed)
    return files(pool.select(kept.tolist()), train_tf), files(pool.select(held.tolist()), eval_tf), files(test_list, eval_tf), None


def _limited(count: int, limit: int | None) -> list[int]:
    """All indices, or ``limit`` of them drawn with a fixed seed (so every class is likely represented)."""
    if limit is None or limit >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(TEST_SPLIT_SEED)
    return sorted(torch.randperm(count, generator=generator)[:limit].tolist())


def _imagenet_stats(chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


# ----------------------------------------------------------------------------------------------- sources


def _load_digits(request: _Request) -> _Pools:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The 8x8 images hold counts 0..16 of an original 32x32 bitmap; scale them to the usual 0..255 pixels.
    images = torch.from_numpy(digits.images).mul(255.0 / 16.0).round_().to(torch.uint8).unsqueeze(1)
    data = InMemoryImages(images, torch.from_numpy(digits.target))
    return _with_fixed_test_split(data, request.test_fraction, tuple(str(d) for d in range(10)))


def _with_fixed_test_split(data: InMemoryImages | ImageList, fraction: float, class_names: tuple[str, ...]) -> _Pools:
    targets = data.targets if isinstance(data, InMemoryImages) else torch.as_tensor(data.targets)
    train, test = stratified_split(targets, fraction, TEST_SPLIT_SEED)
    if isinstance(data, InMemoryImages):
        return _Pools(data.subset(train), data.subset(test), class_names)
    return _Pools(data.select(train.tolist()), data.select(test.tolist()), class_names)


def _load_mnist(request: _Request) -> _Pools:
    from torchvision.datasets import MNIST

    folder = _find_folder_layout(request.root, ("MNIST", "mnist"))
    if folder is not None:
        return _folder_pools(folder)
    root, download = _torchvision_root(request)
    train, test = (_torchvision_dataset(MNIST, root, split, download) for split in (True, False))
    classes = tuple(str(d) for d in range(10))
    return _Pools(_array_images(train.data.unsqueeze(1), train.targets), _array_images(test.data.unsqueeze(1), test.targets), classes)


def _load_cifar10(request: _Request) -> _Pools:
    from torchvision.datasets import CIFAR10

    folder = _find_folder_layout(request.root, ("cifar10-jpeg", "cifar10", "CIFAR10", "cifar-10"))
    if folder is not None:
        return _folder_pools(folder)
    root, download = _torchvision_root(request)
    train, test = (_torchvision_dataset(CIFAR10, root, split, download) for split in (True, False))

    def images(ds) -> InMemoryImages:
        return _array_images(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(ds.targets))

    return _Pools(images(train), images(test), tuple(train.classes))


def _array_images(images: torch.Tensor, targets: torch.Tensor) -> InMemoryImages:
    return InMemoryImages(images, torch.as_tensor(targets))


def _torchvision_root(request: _Request) -> tuple[Path, bool]:
    """Where torchvision looks for MNIST/CIFAR-10, and whether it may download there.

    Only the squeezelab cache is a download target by default: a root the user names is where their copy
    is supposed to be, so a wrong path must be reported, not filled with a fresh download (or created).
    """
    if request.root is None:
        return cache_root() / "datasets", request.download is not False
    if not request.root.is_dir() and not request.download:
        raise FileNotFoundError(f"{request.root}: no such folder (the data root is read, never created or downloaded into)")
    return request.root, bool(request.download)


def _torchvision_dataset(cls, root: Path, train: bool, download: bool):
    try:
        return cls(str(root), train=train, download=download)
    except RuntimeError as exc:
        if not download:
            raise FileNotFoundError(
                f"{root}: holds no {cls.__name__} data (torchvision's download layout or train/ and test/ class "
                "folders); give the folder that holds it, or no data root to download into the squeezelab cache"
            ) from None
        raise FileNotFoundError(
            f"{root}: {cls.__name__} not found and could not be downloaded: {first_line(exc)}; "
            f"pass a folder holding the data as root"
        ) from None


def _find_folder_layout(root: Path | None, child_names: Sequence[str]) -> Path | None:
    """``root`` or one of its ``child_names`` if it has ``train``/``test`` class folders."""
    if root is None:
        return None
    for candidate in (root, *(root / child for child in child_names)):
        if candidate.is_dir() and split_folders(candidate) is not None:
            return candidate
    return None


def _folder_pools(root: Path) -> _Pools:
    folders = split_folders(root)
    if folders is None:
        raise FileNotFoundError(f"{root}: has no 'train' and 'test' folders")
    train_dir, test_dir = folders
    train = scan_class_folders(train_dir)
    return _Pools(train, scan_class_folders(test_dir, train.class_names), train.class_names)


def _load_imagefolder(request: _Request) -> _Pools:
    root = _required_root(request)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if split_folders(root) is not None:
        return _folder_pools(root)
    images = scan_class_folders(root)
    return _with_fixed_test_split(images, request.test_fraction, images.class_names)


def _required_root(request: _Request) -> Path:
    if request.root is None:
        raise ValueError("this data set needs a root folder")
    return request.root


def _load_imagenet(request: _Request) -> _Pools:
    folder = _required_root(request)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    splits = split_folders(folder)
    if splits is None and (folder / "imagenet-sample").is_dir():
        folder = folder / "imagenet-sample"  # the shared data folder itself was given
    classes = _imagenet_class_table(folder)
    if splits is None:
        return _Pools(None, scan_flat_imagenet(folder, classes), _imagenet_names(classes))
    train_dir, test_dir = splits
    return _Pools(_imagenet_folder(train_dir, classes), _imagenet_folder(test_dir, classes), _imagenet_names(classes))


def _imagenet_class_table(folder: Path) -> list[tuple[str, str]] | None:
    for candidate in (folder / IMAGENET_CLASS_TABLE, folder.parent / IMAGENET_CLASS_TABLE):
        if candidate.is_file():
            return read_class_table(candidate)
    return None


def _imagenet_names(classes: list[tuple[str, str]] | None) -> tuple[str, ...]:
    return tuple(name for _, name in classes) if classes else tuple(torchvision_imagenet_categories())


def _imagenet_folder(folder: Path, classes: list[tuple[str, str]] | None) -> ImageList:
    """A ``<wnid>/<image>`` tree with labels by wnid (table order, or sorted wnids when all 1000 are there)."""
    images = scan_class_folders(folder)
    if classes is None:
        if len(images.class_names) != 1000:
            raise ValueError(
                f"{folder}: {len(images.class_names)} class folders, not 1000; put {IMAGENET_CLASS_TABLE} next to it "
                "to map wnids to ImageNet class indices"
            )
        return images
    index_of = {wnid: i for i, (wnid, _) in enumerate(classes)}
    unknown = [wnid for wnid in images.class_names if wnid not in index_of]
    if unknown:
        raise ValueError(f"{folder}: folders {unknown[:3]} are not ImageNet wnids of {IMAGENET_CLASS_TABLE}")
    targets = tuple(index_of[images.class_names[t]] for t in images.targets)
    return ImageList(images.paths, targets, images.class_names)


_SOURCES: dict[str, _Source] = {
    "digits": _Source(_load_digits, channels=1, side=16, flip=False),
    "mnist": _Source(_load_mnist, channels=1, side=28, flip=False),
    "cifar10": _Source(_load_cifar10, channels=3, side=32, flip=True),
    "imagefolder": _Source(_load_imagefolder, channels=3, side=224, flip=True, needs_root=True),
    "imagenet": _Source(_load_imagenet, channels=3, side=224, flip=True, needs_root=True, files_only=True),
}

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeezelab.data import ImageDecodeError, build_datasets, build_loaders, stratified_split
from squeezelab.data.cache import cache_root
from tests.conftest import SHARED_DATA, require


def _indices_of(dataset, pool) -> set[int]:
    """Rows of ``pool`` (an InMemoryImages) that ``dataset`` holds, found by exact image content."""
    keys = {bytes(img.flatten().tolist()): i for i, img in enumerate(pool.images)}
    return {keys[bytes(img.flatten().tolist())] for img in dataset.images}


def test_digits_splits_are_disjoint_stratified_and_deterministic():
    a = build_datasets("digits", input_size=8, seed=0, augment=False)
    b = build_datasets("digits", input_size=8, seed=0, augment=False)
    c = build_datasets("digits", input_size=8, seed=1, augment=False)
    assert a.input_size == (1, 8, 8) and a.class_names == tuple("0123456789")
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.val.images, c.val.images)  # the seed moves the validation split...
    assert torch.equal(a.test.images, c.test.images)  # ...but never the test split
    assert torch.bincount(a.val.targets, minlength=10).min() >= 13  # stratified: ~10% of every class
    train_keys = {bytes(img.flatten().tolist()) for img in a.train.images}
    assert not any(bytes(img.flatten().tolist()) in train_keys for img in a.val.images)


def test_stratified_split_partitions_every_index():
    targets = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    kept, held = stratified_split(targets, 0.2, seed=3)
    assert sorted(kept.tolist() + held.tolist()) == list(range(35))
    assert torch.bincount(targets[held]).tolist() == [2, 4, 1]


def test_digits_upsampled_and_normalised_by_loader():
    splits = build_datasets("digits", input_size=16, in_chans=3, val_fraction=0.0)
    assert splits.val is None and splits.input_size == (3, 16, 16) and len(splits.mean) == 3
    loaders = build_loaders(splits, batch_size=64)
    images, labels = next(iter(loaders.test))
    assert images.shape == (64, 3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    # Normalised with the training pool's own statistics: close to zero mean and unit spread.
    assert abs(float(images.mean())) < 0.3 and 0.7 < float(images.std()) < 1.3


def test_batched_augmentation_is_reproducible_per_epoch_and_keeps_labels():
    splits = build_datasets("digits", input_size=8, val_fraction=0.0)
    loader = build_loaders(splits, batch_size=32, seed=5).train
    loader.set_epoch(3)
    first = next(iter(loader))
    loader.set_epoch(4)
    other = next(iter(loader))
    loader.set_epoch(3)
    again = next(iter(loader))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    no_aug = build_datasets("digits", input_size=8, val_fraction=0.0, augment=False)
    assert no_aug.augment is None and splits.augment is not None and splits.augment.flip is False


def _write_folder(root: Path, classes=("cat", "dog"), per_class=5, size=12) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_in_memory_and_from_files(tmp_path):
    _write_folder(tmp_path)
    splits = build_datasets("imagefolder", tmp_path, input_size=8, val_fraction=0.2)
    assert splits.in_memory and splits.class_names == ("cat", "dog")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 2, 10)
    assert splits.train.images.shape[1:] == (3, 8, 8)
    files = build_datasets("imagefolder", tmp_path, input_size=8, in_memory=False, in_chans=1)
    images, labels = next(iter(build_loaders(files, batch_size=4, workers=0).test))
    assert images.shape == (4, 1, 8, 8) and labels.tolist() == [0, 0, 0, 0]


def test_imagefolder_single_folder_is_split_by_fraction(tmp_path):
    _write_folder(tmp_path, per_class=10)
    splits = build_datasets("imagefolder", tmp_path / "train", input_size=8, test_fraction=0.2, val_fraction=0.0)
    assert len(splits.test) == 4 and len(splits.train) == 16


def test_corrupt_image_is_named(tmp_path):
    _write_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageDecodeError, match=r"dog/3\.png: cannot decode image"):
        build_datasets("imagefolder", tmp_path, input_size=8, cache=False, progress=False)


def test_layout_errors_are_clear(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "train" / "bird").mkdir()
    with pytest.raises(ValueError, match=r"train/bird: empty class folder"):
        build_datasets("imagefolder", tmp_path, input_size=8)
    (tmp_path / "train" / "bird").rmdir()
    for name in ("cat", "dog"):
        for file in (tmp_path / "test" / name).iterdir():
            file.unlink()
        (tmp_path / "test" / name).rmdir()
    (tmp_path / "test").rmdir()
    with pytest.raises(FileNotFoundError, match="has a 'train' folder but no 'test'"):
        build_datasets("imagefolder", tmp_path, input_size=8)
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'"):
        build_datasets("cifar100")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        build_datasets("imagefolder", tmp_path / "missing")


def test_decoded_folders_are_cached(tmp_path):
    _write_folder(tmp_path / "data")
    first = build_datasets("imagefolder", tmp_path / "data", input_size=8, val_fraction=0.0)
    entries = list((cache_root() / "decoded").glob("*.pt"))
    assert len(entries) == 2  # train and test
    # A cached entry is used even when the files can no longer be decoded... as long as they are unchanged.
    second = build_datasets("imagefolder", tmp_path / "data", input_size=8, val_fraction=0.0)
    assert torch.equal(first.train.images, second.train.images)
    other_size = build_datasets("imagefolder", tmp_path / "data", input_size=6, val_fraction=0.0)
    assert other_size.train.images.shape[-1] == 6
    assert len(list((cache_root() / "decoded").glob("*.pt"))) == 4


def test_cifar10_jpeg_copy_is_detected():
    root = require(SHARED_DATA / "cifar10-jpeg")
    splits = build_datasets("cifar10", root.parent, limit=200, progress=False)
    assert splits.class_names[0] == "airplane" and splits.class_names[-1] == "truck"
    assert splits.input_size == (3, 32, 32) and len(splits.test) == 200
    assert len(splits.train) + len(splits.val) == 200 and splits.augment.flip


def test_mnist_raw_idx_from_shared():
    require(SHARED_DATA / "MNIST" / "raw")
    splits = build_datasets("mnist", SHARED_DATA, limit=300, val_fraction=0.0)
    assert splits.input_size == (1, 28, 28) and len(splits.test) == 300
    full = build_datasets("mnist", SHARED_DATA, val_fraction=0.0, augment=False)
    assert int(full.test.targets[0]) == 7 and int(full.train.targets[0]) == 5  # the files' original order


def test_imagenet_sample_labels_come_from_the_class_table():
    require(SHARED_DATA / "imagenet-sample")
    splits = build_datasets("imagenet", SHARED_DATA, input_size=64)
    assert splits.train is None and len(splits.test) == 500 and splits.num_classes == 1000
    assert splits.test.targets.tolist() == list(range(0, 1000, 2))
    images, labels = next(iter(build_loaders(splits, batch_size=4, workers=0).test))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == [0, 2, 4, 6]


def test_flat_imagenet_without_class_table_uses_torchvision_names(tmp_path):
    for name in ("n01440764_tench", "n01443537_goldfish", "n04612504_yawl"):
        Image.fromarray(np.full((20, 30, 3), 128, dtype=np.uint8)).save(tmp_path / f"{name}.JPEG")
    splits = build_datasets("imagenet", tmp_path, input_size=16)
    assert splits.test.targets.tolist() == [0, 1, 914] and splits.class_names[914] == "yawl"
    (tmp_path / "n02963159_cardigan.JPEG").write_bytes((tmp_path / "n04612504_yawl.JPEG").read_bytes())
    with pytest.raises(ValueError, match="cardigan.JPEG: cannot tell the ImageNet class"):
        build_datasets("imagenet", tmp_path, input_size=16)  # the corgi and the sweater


@pytest.fixture
def no_download(monkeypatch):
    """Record torchvision download attempts instead of making them (a test must never reach the network)."""
    attempts: list[str] = []
    from torchvision.datasets import CIFAR10, MNIST

    for cls in (MNIST, CIFAR10):
        monkeypatch.setattr(cls, "download", lambda self: attempts.append(self.root))
    return attempts


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_explicit_root_without_the_data_is_an_error_not_a_download_target(tmp_path, no_download, name):
    missing = tmp_path / "nope" / "data"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such folder"):
        build_datasets(name, missing, progress=False)
    assert not (tmp_path / "nope").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty}: holds no (MNIST|CIFAR10) data"):
        build_datasets(name, empty, progress=False)
    assert list(empty.iterdir()) == [] and no_download == []


def test_downloads_go_to_the_cache_or_where_explicitly_asked(tmp_path, no_download):
    # the recorded "download" fetches nothing, so loading still fails after it
    with pytest.raises(FileNotFoundError, match="not found and could not be downloaded"):
        build_datasets("mnist", progress=False)
    assert no_download == [str(cache_root() / "datasets")]
    with pytest.raises(FileNotFoundError, match="not found and could not be downloaded"):
        build_datasets("mnist", tmp_path / "mine", download=True, progress=False)
    assert no_download[-1] == str(tmp_path / "mine")
    with pytest.raises(FileNotFoundError, match="holds no MNIST data"):
        build_datasets("mnist", download=False, progress=False)
    assert len(no_download) == 2

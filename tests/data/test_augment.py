import pytest
import torch

from squeezelab.data import build_datasets, build_loaders
from squeezelab.data.augment import BatchAugment, cutout


def test_cutout_blanks_one_clipped_square_per_image():
    images = torch.ones(500, 2, 12, 12)
    erased = cutout(images, 4, torch.Generator().manual_seed(0))
    blank = erased[:, 0] == 0
    assert torch.equal(blank, erased[:, 1] == 0)  # the same square in every channel
    counts = blank.sum((1, 2))
    assert counts.max() == 16 and counts.min() >= 4  # whole inside, a quarter in a corner
    rows, cols = blank.any(2), blank.any(1)
    assert torch.equal(counts, rows.sum(1) * cols.sum(1))  # a rectangle, not scattered pixels
    assert erased[~blank.unsqueeze(1).expand_as(erased)].eq(1).all()


def test_cutout_fills_with_the_normalised_mean_and_is_reproducible():
    splits = build_datasets("digits", input_size=8, val_fraction=0.0, cutout=4, progress=False)
    assert splits.augment.cutout == 4
    loader = build_loaders(splits, batch_size=64, seed=1).train
    loader.set_epoch(2)
    first, _ = next(iter(loader))
    loader.set_epoch(2)
    again, _ = next(iter(loader))
    assert torch.equal(first, again)
    assert ((first == 0).flatten(1).sum(1) >= 4).all()  # every image has its square at the mean (0)


def test_cutout_errors_name_the_setting():
    with pytest.raises(ValueError, match="cutout must be >= 0"):
        BatchAugment(cutout=-1)
    with pytest.raises(ValueError, match="cutout=4: needs augment on"):
        build_datasets("digits", input_size=8, augment=False, cutout=4, progress=False)


def test_reflected_translation_mirrors_the_border_without_repeating_the_edge():
    from squeezelab.data.augment import random_crop

    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    shifted = random_crop(images, 2, torch.Generator().manual_seed(0), mode="reflect")
    padded = torch.nn.functional.pad(images[:1].float(), (2, 2, 2, 2), mode="reflect")[0, 0]
    windows = {tuple(padded[y : y + 4, x : x + 4].flatten().tolist()) for y in range(5) for x in range(5)}
    seen = {tuple(s.flatten().float().tolist()) for s in shifted[:, 0]}
    assert seen <= windows and len(seen) == 25  # every offset in [-2, 2]^2 occurs, each equal to F.pad's reflect


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    splits = build_datasets("digits", input_size=8, val_fraction=0.0, translate=0, flip="alternate", progress=False)
    # digits are never flipped (a mirrored 2 is no 2): use the augmentation directly on the same images
    augment = BatchAugment(padding=0, flip=True, flip_mode="alternate")
    images = splits.train.images[:256]
    indices = torch.arange(256)
    even = augment(images, torch.Generator(), indices, epoch=0, seed=3)
    odd = augment(images, torch.Generator(), indices, epoch=1, seed=3)
    flipped_even = (even != images).flatten(1).any(1)
    flipped_odd = (odd != images).flatten(1).any(1)
    symmetric = (images == images.flip(-1)).flatten(1).all(1)
    assert torch.equal((flipped_even ^ flipped_odd)[~symmetric], torch.ones_like(symmetric)[~symmetric])
    assert 0.35 < flipped_even[~symmetric].float().mean() < 0.65
    again = augment(images, torch.Generator(), indices, epoch=2, seed=3)
    assert torch.equal(again, even)  # the same half in every even epoch
    with pytest.raises(ValueError, match="needs in-memory data"):
        augment(images, torch.Generator(), None, epoch=0)


def test_new_augmentation_settings_are_checked():
    with pytest.raises(ValueError, match="translate_mode must be one of"):
        BatchAugment(translate_mode="wrap")
    with pytest.raises(ValueError, match="flip must be one of"):
        BatchAugment(flip_mode="sometimes")

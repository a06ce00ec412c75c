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

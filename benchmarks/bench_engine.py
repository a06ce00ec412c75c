"""Training throughput of squeezelab's trainer against a minimal hand-written PyTorch loop (same run).

Both train the same model from the same initial weights on the same CIFAR-10 images (the JPEG copy in
../shared/data/cifar10-jpeg, decoded once) with the same settings: SGD + Nesterov, batch 128, random crop
with 4-pixel padding and horizontal flip, fp32, channels_last (the trainer's defaults). The minimal loop is the floor of overhead: a random
permutation, tensor slicing, the same batched augmentation, forward/backward/step. The engine adds its
DataLoader, scheduler, metrics, NaN checks and progress bar. A third row shows the usual per-image pipeline
(torchvision ImageFolder + PIL transforms in 2 DataLoader workers) on the same model.

Measurements alternate between the variants and the best of ``--repeats`` is kept, so a machine shared with
other jobs penalises all of them alike. Target: engine >= 95% of the minimal loop.

    python benchmarks/bench_engine.py --limit 2048
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from squeezelab.cli.common import format_table
from squeezelab.data import build_datasets
from squeezelab.models import create_model
from squeezelab.train import TrainConfig, fit

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="squeezenet1_1_cifar")
    parser.add_argument("--limit", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--root", type=Path, default=CIFAR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = build_datasets("cifar10", args.root, limit=args.limit, val_fraction=0.0)
    config = TrainConfig(model=args.model, dataset="cifar10", epochs=1, batch_size=args.batch_size, lr=0.05,
                         schedule="constant", device="cpu", amp="off", weight_decay=5e-4)
    torch.manual_seed(0)
    initial = create_model(args.model, num_classes=10).state_dict()

    def fresh_model() -> torch.nn.Module:
        model = create_model(args.model, num_classes=10)
        model.load_state_dict(initial)
        return model

    def engine() -> float:
        result = fit(fresh_model(), config, splits, None, progress=True, log=None, evaluate_test=False)
        return result.history[0]["images_per_s"]

    def minimal() -> float:
        return minimal_loop(fresh_model(), splits, config)

    def per_image() -> float:
        return per_image_pipeline(fresh_model(), args.root / "train", args.limit, config, splits.mean, splits.std)

    variants = {"minimal loop (in-memory tensors)": minimal, "squeezelab fit (default pipeline)": engine,
                "ImageFolder + PIL transforms, 2 workers": per_image}
    best = {name: 0.0 for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            best[name] = max(best[name], run())
    baseline = best["minimal loop (in-memory tensors)"]
    rows = [[name, f"{rate:,.1f}", f"{rate / baseline:.3f}"] for name, rate in best.items()]
    print(f"{args.model}, {args.limit} CIFAR-10 (JPEG copy) training images, batch {args.batch_size}, "
          f"{args.threads} threads, best of {args.repeats}")
    print(format_table(["variant", "train images/s", "ratio to minimal loop"], rows))


def minimal_loop(model: torch.nn.Module, splits, config: TrainConfig) -> float:
    """The least a training epoch can do with the same data and settings."""
    images, targets = splits.train.images, splits.train.targets
    normalize, augment = splits.normalization, splits.augment
    layout = _layout(config)
    model = model.to(memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(0)
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(images), generator=generator)
    seen = 0
    for first in range(0, len(order) - config.batch_size + 1, config.batch_size):
        index = order[first : first + config.batch_size]
        x = normalize(augment(images[index], generator)).contiguous(memory_format=layout)
        loss = F.cross_entropy(model(x), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(index)
    return seen / (time.perf_counter() - start)


def per_image_pipeline(model: torch.nn.Module, folder: Path, limit: int, config: TrainConfig, mean, std) -> float:
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    subset = torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit].tolist())
    loader = DataLoader(subset, batch_size=config.batch_size, shuffle=True, num_workers=2, drop_last=True)
    layout = _layout(config)
    model = model.to(memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    model.train()
    start = time.perf_counter()
    seen = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x.contiguous(memory_format=layout)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def _layout(config: TrainConfig) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format


if __name__ == "__main__":
    main()

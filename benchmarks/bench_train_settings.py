"""Training-step throughput of execution settings on this CPU: fp32, bf16 autocast, channels_last, torch.compile.

Every variant starts from the same weights and trains on the same CIFAR-10 batches (JPEG copy, in-memory,
augmented and normalised by squeezelab's loader) with the trainer's own step (SGD + Nesterov). Reported:
training images/s, the ratio to fp32 measured in the same run, and two correctness signals: the largest
difference of the initial model's logits from fp32 (numerical error of the setting) and the mean training
loss over the timed steps (does it still learn the same?). Variants alternate, best of ``--repeats``.

    python benchmarks/bench_train_settings.py --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from squeezelab.cli.common import format_table
from squeezelab.data import build_datasets, build_loaders
from squeezelab.models import create_model
from squeezelab.utils.errors import first_line

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"
VARIANTS = {
    "fp32": {},
    "bf16 autocast": {"amp": torch.bfloat16},
    "channels_last": {"channels_last": True},
    "channels_last + bf16": {"channels_last": True, "amp": torch.bfloat16},
    "torch.compile": {"compile": True},
    "channels_last + torch.compile": {"channels_last": True, "compile": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="squeezenet1_1_cifar")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant and repeat")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip", action="append", default=[], help="variant to leave out (e.g. 'torch.compile')")
    parser.add_argument("--root", type=Path, default=CIFAR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = build_datasets("cifar10", args.root, limit=args.batch_size * (args.steps + 3), val_fraction=0.0)
    batches = list(build_loaders(splits, args.batch_size).train)
    torch.manual_seed(0)
    initial = create_model(args.model, num_classes=10).state_dict()
    probe = batches[0][0]
    reference = _model(args.model, initial, {}).eval()(probe).detach()

    variants = {name: options for name, options in VARIANTS.items() if name not in args.skip}
    best = {name: 0.0 for name in variants}
    losses: dict[str, float] = {}
    errors: dict[str, str] = {}
    logit_error: dict[str, float] = {}
    warmups: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, options in variants.items():
            if name in errors:
                continue
            try:
                rate, loss, logits, warmups[name] = measure(args.model, initial, options, batches, probe)
            except Exception as exc:  # a setting that does not work here is a result, not a crash
                errors[name] = f"{type(exc).__name__}: {first_line(exc)[:60]}"
                continue
            best[name] = max(best[name], rate)
            losses[name] = loss
            logit_error[name] = float((logits - reference).abs().max())
    baseline = best["fp32"]
    rows = []
    for name in variants:
        if name in errors:
            rows.append([name, "failed", "", "", "", errors[name]])
        else:
            rows.append([name, f"{best[name]:,.1f}", f"{best[name] / baseline:.3f}", f"{warmups[name]:.1f}",
                         f"{logit_error[name]:.2e}", f"{losses[name]:.4f}"])
    print(f"{args.model}, batch {args.batch_size}, {args.steps} timed steps, {args.threads} threads, best of {args.repeats}")
    headers = ["setting", "train images/s", "ratio to fp32", "first 3 steps s", "max |logit - fp32|", "mean train loss"]
    print(format_table(headers, rows))


def _model(name: str, initial: dict, options: dict) -> torch.nn.Module:
    model = create_model(name, num_classes=10)
    model.load_state_dict(initial)
    if options.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


def measure(
    name: str, initial: dict, options: dict, batches: list, probe: torch.Tensor
) -> tuple[float, float, torch.Tensor, float]:
    model = _model(name, initial, options)
    layout = torch.channels_last if options.get("channels_last") else torch.contiguous_format
    amp = options.get("amp")
    autocast = (lambda: torch.autocast("cpu", dtype=amp)) if amp else contextlib.nullcontext
    with torch.no_grad(), autocast():
        logits = model.eval()(probe.contiguous(memory_format=layout)).float()
    step_model = torch.compile(model) if options.get("compile") else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    torch.manual_seed(0)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with autocast():
            out = step_model(x.contiguous(memory_format=layout))
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    start = time.perf_counter()
    for x, y in batches[:3]:  # warm-up (and compilation)
        step(x, y)
    warmup = time.perf_counter() - start
    timed = batches[3:]
    start = time.perf_counter()
    total_loss = sum(step(x, y) for x, y in timed)
    seconds = time.perf_counter() - start
    return sum(len(y) for _, y in timed) / seconds, total_loss / len(timed), logits, warmup


if __name__ == "__main__":
    main()

"""Training-step throughput of the fast CIFAR-10 networks, against airbench93's network in the same run.

One training step (bf16 autocast forward, fp32 loss, backward, Nesterov SGD step) at batch 1024 on
random 3x32x32 images, channels_last, as the fast recipe trains. Networks are measured in turns (A B C A B
C ...) and the best of ``--repeats`` rounds is kept, so a noisy machine penalises all alike; the ratio column
is against ``airbench93_cifar``. ``--compile`` adds a torch.compile row for each network (compile time
excluded, printed apart).

    python benchmarks/bench_fast_nets.py
    python benchmarks/bench_fast_nets.py --compile
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from squeezelab.cli.common import format_table
from squeezelab.models import count_macs, count_params, create_model

CANDIDATES = {
    "airbench93_cifar": ("airbench93_cifar", {}),
    "fast, squeeze_ratio 0.25": ("squeezenet_fast_cifar", {"squeeze_ratio": 0.25}),
    "fast (squeeze_ratio 0.5)": ("squeezenet_fast_cifar", {}),
    "fast + pool_early": ("squeezenet_fast_cifar", {"pool_early": True}),
    "fast + pool_early + linear_squeeze": ("squeezenet_fast_cifar", {"pool_early": True, "linear_squeeze": True}),
}


class Stepper:
    """One network, its optimiser and a fixed batch; ``step()`` runs one training step."""

    def __init__(self, name: str, kwargs: dict, batch: int, compiled: bool) -> None:
        torch.manual_seed(0)
        self.model = create_model(name, **kwargs).to(memory_format=torch.channels_last).train()
        self.run = torch.compile(self.model) if compiled else self.model
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
        self.images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        self.labels = torch.randint(0, 10, (batch,))

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = self.run(self.images)
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (best kept)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile each network")
    args = parser.parse_args()

    variants = [(label, name, kwargs, False) for label, (name, kwargs) in CANDIDATES.items()]
    if args.compile:
        variants += [(f"{label} [compiled]", name, kwargs, True) for label, (name, kwargs) in CANDIDATES.items()]
    steppers = {}
    for label, name, kwargs, compiled in variants:
        steppers[label] = Stepper(name, kwargs, args.batch, compiled)
        start = time.perf_counter()
        steppers[label].step()  # warm-up; compiles here
        if compiled:
            print(f"{label}: first step (compilation) {time.perf_counter() - start:.0f} s", flush=True)
    best = {label: float("inf") for label in steppers}
    for _ in range(args.repeats):
        for label, stepper in steppers.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                stepper.step()
            best[label] = min(best[label], (time.perf_counter() - start) / args.steps)
    anchor = best["airbench93_cifar"]
    rows = []
    for label, name, kwargs, _ in variants:
        model = steppers[label].model
        rows.append([
            label, f"{count_params(model):,}", f"{count_macs(model, (3, 32, 32)) / 1e6:.1f}", f"{1000 * best[label]:.0f}",
            f"{args.batch / best[label]:,.0f}", f"{anchor / best[label]:.2f}x",
        ])
    print(format_table(["network", "params", "MMACs", "ms/step", "images/s", "speed vs airbench93"], rows))


if __name__ == "__main__":
    main()

"""Can context modelling shrink the sparse-position streams of the Deep Compression SqueezeNet (issue 27)?

For every pruned convolution of the release (density <= 95%), the cost in bytes of its pruning mask under:
the static per-layer entropy (what .sqz's mask/gap coders approach), and adaptive binary models (KT estimator)
with three contexts: the output channel; the kernel tap and the previous input channel's bit at the same tap;
the (output channel, tap) pair. Prints one row per layer and the totals.

    python benchmarks/position_contexts.py > benchmarks/results/position_contexts/results.txt
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from squeezelab import load_model

RELEASE = Path(__file__).resolve().parents[2] / "shared" / "models" / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"


def binary_entropy(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def adaptive_bytes(bits: np.ndarray, contexts: np.ndarray, count: int) -> float:
    """Bytes an adaptive binary coder (Krichevsky-Trofimov counts per context) needs for ``bits``."""
    zeros, ones, total = np.full(count, 0.5), np.full(count, 0.5), 0.0
    for bit, context in zip(bits.tolist(), contexts.tolist()):
        p_one = ones[context] / (zeros[context] + ones[context])
        total -= math.log2(p_one if bit else 1 - p_one)
        if bit:
            ones[context] += 1
        else:
            zeros[context] += 1
    return total / 8


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(RELEASE)
    totals = np.zeros(4)
    print("layer | weights | density | static B | per output channel B | tap + previous input channel B | (channel, tap) B")
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Conv2d):
            continue
        mask = module.weight.detach().numpy() != 0
        if mask.mean() > 0.95:
            continue
        outs, ins, taps = mask.shape[0], mask.shape[1], mask.shape[2] * mask.shape[3]
        bits = mask.reshape(outs, ins, taps)
        previous = np.zeros_like(bits)
        previous[:, 1:, :] = bits[:, :-1, :]
        channel = np.broadcast_to(np.arange(outs)[:, None, None], bits.shape)
        tap = np.broadcast_to(np.arange(taps)[None, None, :], bits.shape)
        costs = np.array([
            mask.size * binary_entropy(float(mask.mean())) / 8,
            adaptive_bytes(bits.reshape(-1), channel.reshape(-1), outs),
            adaptive_bytes(bits.reshape(-1), (tap * 2 + previous).reshape(-1), taps * 2),
            adaptive_bytes(bits.reshape(-1), (channel * taps + tap).reshape(-1), outs * taps),
        ])  # fmt: skip
        totals += costs
        print(f"{name} | {mask.size} | {mask.mean():.3f} | " + " | ".join(f"{c:.0f}" for c in costs))
    print("total | | | " + " | ".join(f"{c:.0f}" for c in totals))


if __name__ == "__main__":
    main()

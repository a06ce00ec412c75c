"""Small real files for interop/bench tests: images on disk and a Deep Compression file from known weights."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from squeezelab.interop.caffe import CODEBOOK_SIZE
from squeezelab.models import create_model

MAX_GAP = 16


def write_images(folder: Path, count: int, size: int = 40, seed: int = 0) -> list[Path]:
    """``count`` smooth random RGB JPEGs (gradients plus noise, so they compress like photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        ramp = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.2, 1.0, 3)
        pixels = np.clip(ramp + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def encode_deep_compression(seed: int = 0, density: float = 0.3) -> tuple[bytes, list[dict]]:
    """A Deep Compression SqueezeNet v1.0 file of random sparse codebook weights, and the layers it holds.

    Written from the format description independently of the decoder: counts header, then per layer the
    codebook, biases, codes and 4-bit gaps (low nibble first), bridging gaps over 16 with zero-code entries.
    """
    rng = np.random.default_rng(seed)
    model = create_model("squeezenet1_0", final_conv_padding=1)
    convs = [m for m in model.modules() if m.__class__.__name__ == "Conv2d"]
    counts, bodies, layers = [], [], []
    for conv in convs:
        shape = tuple(conv.weight.shape)
        numel = int(np.prod(shape))
        codebook = np.concatenate([[0.0], rng.normal(0, 0.1, CODEBOOK_SIZE - 1)]).astype("<f4")
        bias = rng.normal(0, 0.1, shape[0]).astype("<f4")
        kept = np.flatnonzero(rng.random(numel) < density)
        codes = rng.integers(1, CODEBOOK_SIZE, len(kept))
        positions, entry_codes, previous = [], [], -1
        for position, code in zip(kept.tolist(), codes.tolist()):
            while position - previous > MAX_GAP:
                previous += MAX_GAP
                positions.append(previous)
                entry_codes.append(0)
            positions.append(position)
            entry_codes.append(code)
            previous = position
        gaps = np.diff(np.array([-1] + positions)) - 1
        if len(gaps) % 2:
            gaps = np.append(gaps, 0)
        packed = (gaps[0::2] | (gaps[1::2] << 4)).astype(np.uint8)
        counts.append(len(positions))
        bodies.append(codebook.tobytes() + bias.tobytes() + np.array(entry_codes, np.uint8).tobytes() + packed.tobytes())
        weight = np.zeros(numel, np.float32)
        weight[kept] = codebook[codes]
        layers.append({"shape": shape, "weight": weight.reshape(shape), "bias": bias, "codebook": codebook})
    data = struct.pack(f"<{len(counts)}I", *counts) + b"".join(bodies)
    return data, layers

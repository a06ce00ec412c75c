"""Import the Deep Compression release of SqueezeNet v1.0 (``compressed_SqueezeNet.net``).

File layout (little-endian): 26 uint32 entry counts, one per convolution in the prototxt's order; then per
layer a 256-entry float32 codebook, the float32 biases, one uint8 codebook index per stored entry and a
4-bit position stream (two gaps per byte, low nibble first). Each gap is the distance to the previous
stored entry minus one over the flattened (out, in, kh, kw) weight; gaps longer than 16 are bridged by
stored entries whose code points at a zero weight.

:func:`decode_caffe_compressed` keeps the quantized form (codebook, indices, positions) so compression
code can re-encode the original weights; :func:`import_caffe_compressed` builds the dense model with the
Caffe preprocessing recorded in ``default_cfg``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from squeezelab.models import ModelConfig, create_model
from squeezelab.models.registry import set_model_config
from squeezelab.utils.errors import DamagedFileError

from .classes import imagenet_class_names

CODEBOOK_SIZE = 256
FILLER_CODE = 0  # the release codes zero weights (the entries that bridge long gaps) as codebook entry 0
MAX_GAP = 15  # the largest 4-bit gap value: only after such a gap can a filler entry be needed
# No checksum exists: values beyond this bound are taken for damage (the release's largest codebook value
# is 1.7 and its largest bias 4.7; flipping a float32's top exponent bit turns 0.01-1 into 1e36-1e38).
PLAUSIBLE_MAGNITUDE = 100.0
CAFFE_ARCH = "squeezenet1_0"
CAFFE_ARCH_KWARGS: dict[str, Any] = {"final_conv_padding": 1}
DEFAULT_PROTOTXT_NAME = "SqueezeNet_deploy.prototxt"
# Caffe's SqueezeNet: BGR pixels on a 0-255 scale minus the per-channel mean, no std scaling, 227x227 crop,
# resized like OpenCV (no anti-aliasing filter): that reproduces the release's 60.8% / 82.4% on the sample.
CAFFE_SQUEEZENET_CFG = ModelConfig(
    input_size=(3, 227, 227),
    num_classes=1000,
    mean=(104.0, 117.0, 123.0),
    std=(1.0, 1.0, 1.0),
    resize_size=256,
    interpolation="bilinear",
    channel_order="BGR",
    pixel_scale=255.0,
    dataset="imagenet",
    extra={"source": "caffe-deep-compression"},
    antialias=False,
)


@dataclass(frozen=True)
class CompressedLayer:
    """One decoded convolution of a Deep Compression file, still in its quantized sparse form.

    ``positions`` are flat indices into the (out, in, kh, kw) weight of every stored entry (including the
    filler entries that bridge long gaps); ``indices`` are their codebook indices.
    """

    caffe_name: str
    module_name: str
    shape: tuple[int, int, int, int]
    codebook: np.ndarray
    bias: np.ndarray
    indices: np.ndarray
    positions: np.ndarray

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def dense_weight(self) -> np.ndarray:
        """The float32 weight: codebook values at the stored positions, zeros elsewhere."""
        flat = np.zeros(self.numel, dtype=np.float32)
        flat[self.positions] = self.codebook[self.indices]
        return flat.reshape(self.shape)

    def mask(self) -> np.ndarray:
        """Boolean sparsity pattern: True where the decoded weight is non-zero (filler entries excluded)."""
        flat = np.zeros(self.numel, dtype=bool)
        flat[self.positions] = self.codebook[self.indices] != 0
        return flat.reshape(self.shape)

    @property
    def nonzero(self) -> int:
        return int(np.count_nonzero(self.codebook[self.indices]))


@dataclass(frozen=True)
class CaffeConvolution:
    name: str
    num_output: int
    kernel_size: int
    stride: int
    pad: int


def caffe_layer_names(num_fires: int = 8) -> list[str]:
    """The prototxt's convolution names in file order: conv1, fireN/{squeeze, expand 1x1, expand 3x3}, conv_final."""
    names = ["conv1"]
    for number in range(2, 2 + num_fires):
        names += [f"fire{number}/conv1x1_1", f"fire{number}/conv1x1_2", f"fire{number}/conv3x3_2"]
    return names + ["conv_final"]


def _convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _caffe_template() -> nn.Module:
    return create_model(CAFFE_ARCH, **CAFFE_ARCH_KWARGS)


def decode_caffe_compressed(path: str | os.PathLike) -> list[CompressedLayer]:
    """Decode every layer of a Deep Compression SqueezeNet v1.0 file, checking what the format allows.

    The format has no checksum, so only structural damage can be detected: entry counts beyond the layer
    sizes, missing or trailing bytes, non-finite or implausibly large codebook and bias values, a filler code
    that is not zero, and position streams that run past their layer, set the unused last nibble, or place
    zero-weight entries where no gap needed bridging. Every such error is one line naming the file; a changed
    index, position or in-range value still decodes (see docs/interop.md).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    convs = _convolutions(_caffe_template())
    names = caffe_layer_names()
    header_bytes = 4 * len(convs)
    if len(data) < header_bytes:
        raise _damaged(path, f"only {len(data)} bytes")
    counts = np.frombuffer(data, dtype="<u4", count=len(convs))
    offset = header_bytes
    layers = []
    for caffe_name, (module_name, conv), count in zip(names, convs, counts.tolist()):
        layer, offset = _decode_layer(path, data, offset, caffe_name, module_name, conv, count)
        layers.append(layer)
    if offset != len(data):
        raise _damaged(path, f"{len(data) - offset} unexpected bytes after the last layer")
    return layers


def _damaged(path: Path, detail: str) -> DamagedFileError:
    """The one error a damaged or foreign ``.net`` file gets: one line naming the file (the CLI prints it)."""
    return DamagedFileError(f"{path}: not a Deep Compression SqueezeNet file ({detail})")


def _decode_layer(
    path: Path, data: bytes, offset: int, caffe_name: str, module_name: str, conv: nn.Conv2d, count: int
) -> tuple[CompressedLayer, int]:
    out_channels, in_channels, kh, kw = conv.weight.shape  # a Conv2d weight: (out, in, kh, kw)
    shape = (out_channels, in_channels, kh, kw)
    numel = int(np.prod(shape))
    if not 0 < count <= numel:
        raise _damaged(path, f"layer {caffe_name} claims {count} stored entries for a {numel}-weight tensor")
    sizes = (4 * CODEBOOK_SIZE, 4 * out_channels, count, (count + 1) // 2)
    if offset + sum(sizes) > len(data):
        raise _damaged(path, f"truncated in layer {caffe_name} ({len(data)} bytes)")
    codebook = np.frombuffer(data, dtype="<f4", count=CODEBOOK_SIZE, offset=offset).astype(np.float32)
    offset += sizes[0]
    bias = np.frombuffer(data, dtype="<f4", count=out_channels, offset=offset).astype(np.float32)
    offset += sizes[1]
    indices = np.frombuffer(data, dtype=np.uint8, count=count, offset=offset).copy()
    offset += sizes[2]
    packed = np.frombuffer(data, dtype=np.uint8, count=sizes[3], offset=offset)
    offset += sizes[3]
    _check_values(path, caffe_name, codebook, bias)
    gaps = _gaps(path, caffe_name, packed, count)
    _check_fillers(path, caffe_name, codebook[indices] == 0, gaps)
    positions = np.cumsum(gaps + 1) - 1
    if positions[-1] >= numel:
        raise _damaged(path, f"layer {caffe_name} positions run past its {numel} weights (corrupt position stream)")
    layer = CompressedLayer(caffe_name, module_name, shape, codebook, bias, indices, positions)
    return layer, offset


def _check_values(path: Path, caffe_name: str, codebook: np.ndarray, bias: np.ndarray) -> None:
    """Codebook and biases finite and of a magnitude a trained network has; the filler code exactly zero."""
    for what, values in (("codebook", codebook), ("bias", bias)):
        if not np.isfinite(values).all():
            raise _damaged(path, f"layer {caffe_name} holds non-finite {what} values")
        largest = float(np.abs(values).max())
        if largest > PLAUSIBLE_MAGNITUDE:
            raise _damaged(path, f"layer {caffe_name} holds a {what} value of magnitude {largest:.3g} (> {PLAUSIBLE_MAGNITUDE:g})")
    if codebook[FILLER_CODE] != 0:
        raise _damaged(path, f"layer {caffe_name}: codebook entry {FILLER_CODE}, the filler code, is {codebook[FILLER_CODE]:.3g}, not 0")


def _gaps(path: Path, caffe_name: str, packed: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` 4-bit gaps, low nibble first; an odd count leaves the last high nibble unused (zero)."""
    gaps = np.empty(2 * len(packed), dtype=np.int64)
    gaps[0::2] = packed & 0x0F
    gaps[1::2] = packed >> 4
    if count % 2 and gaps[-1] != 0:
        raise _damaged(path, f"layer {caffe_name}: the unused last nibble of its position stream is {gaps[-1]}, not 0")
    return gaps[:count]


def _check_fillers(path: Path, caffe_name: str, is_filler: np.ndarray, gaps: np.ndarray) -> None:
    """Zero-weight entries exist only to bridge gaps longer than 4 bits hold: each sits at the longest gap, and
    the last entry (which bridges to nothing) is a real weight."""
    misplaced = np.flatnonzero(is_filler & (gaps != MAX_GAP))
    if len(misplaced):
        raise _damaged(path, f"layer {caffe_name}: entry {misplaced[0]} codes a zero weight but bridges no gap")
    if is_filler[-1]:
        raise _damaged(path, f"layer {caffe_name} ends with a zero-weight entry (a filler bridging nothing)")


def read_prototxt_convolutions(path: str | os.PathLike) -> list[CaffeConvolution]:
    """Convolution layers of a Caffe prototxt, in order (only the fields needed to check shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(errors="replace")
    convolutions = []
    for block in _layer_blocks(text):
        if _field(block, "type", str) != "Convolution":
            continue
        convolutions.append(
            CaffeConvolution(
                name=_field(block, "name", str),
                num_output=_field(block, "num_output", int),
                kernel_size=_field(block, "kernel_size", int),
                stride=_field(block, "stride", int, default=1),
                pad=_field(block, "pad", int, default=0),
            )
        )
    if not convolutions:
        raise ValueError(f"{path}: no Convolution layers found (not a Caffe prototxt?)")
    return convolutions


def _layer_blocks(text: str) -> list[str]:
    blocks = []
    for match in re.finditer(r"\blayers?\s*\{", text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        blocks.append(text[match.end() : end])
    return blocks


def _field(block: str, key: str, kind: type, default=None):
    match = re.search(rf"\b{key}\s*:\s*\"?([^\"\s}}]+)\"?", block)
    if match is None:
        if default is None:
            raise ValueError(f"prototxt layer without {key!r}: {block.strip()[:60]!r}")
        return default
    return kind(match.group(1))


def check_against_prototxt(layers: Sequence[CompressedLayer], prototxt: str | os.PathLike) -> None:
    """Raise if the prototxt's convolutions differ in order, name or shape from the decoded layers."""
    template = dict(_convolutions(_caffe_template()))
    convolutions = read_prototxt_convolutions(prototxt)
    if [c.name for c in convolutions] != [layer.caffe_name for layer in layers]:
        raise ValueError(f"{prototxt}: convolution layers differ from SqueezeNet v1.0's: {[c.name for c in convolutions]}")
    for caffe_conv, layer in zip(convolutions, layers):
        conv = template[layer.module_name]
        expected = (conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        found = (caffe_conv.num_output, caffe_conv.kernel_size, caffe_conv.stride, caffe_conv.pad)
        if expected != found:
            raise ValueError(
                f"{prototxt}: layer {caffe_conv.name} has (outputs, kernel, stride, pad) {found}, "
                f"the model has {expected}"
            )


def import_caffe_compressed(
    path: str | os.PathLike,
    prototxt: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
) -> nn.Module:
    """The dense SqueezeNet v1.0 of a Deep Compression file, with Caffe preprocessing in ``default_cfg``.

    ``prototxt`` (default: ``SqueezeNet_deploy.prototxt`` next to the file, if present) is checked against
    the architecture; ``class_names`` default to torchvision's ImageNet-1k names.
    """
    layers = decode_caffe_compressed(path)
    if prototxt is None:
        sibling = Path(path).with_name(DEFAULT_PROTOTXT_NAME)
        prototxt = sibling if sibling.is_file() else None
    if prototxt is not None:
        check_against_prototxt(layers, prototxt)
    model = _caffe_template()
    modules = dict(model.named_modules())
    with torch.no_grad():
        for layer in layers:
            conv = modules[layer.module_name]
            conv.weight.copy_(torch.from_numpy(layer.dense_weight()))
            conv.bias.copy_(torch.from_numpy(layer.bias))
    names = tuple(class_names) if class_names is not None else imagenet_class_names()
    set_model_config(model, _with_class_names(CAFFE_SQUEEZENET_CFG, names))
    return model.eval()


def _with_class_names(cfg: ModelConfig, names: tuple[str, ...]) -> ModelConfig:
    if len(names) != cfg.num_classes:
        raise ValueError(f"class names: expected {cfg.num_classes}, got {len(names)}")
    return ModelConfig.from_dict({**cfg.to_dict(), "class_names": names})

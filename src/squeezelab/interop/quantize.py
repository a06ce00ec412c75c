"""Int8 post-training static quantization with onnxruntime (QDQ, per-channel int8 weights, uint8 activations).

Calibration uses real, unlabelled images (a folder of any layout). Images much smaller than the model input,
such as CIFAR-10's 32x32, are tiled into mosaics at their native resolution instead of being upscaled: blurry
upscaled images under-estimate the activation ranges of real photographs and cost accuracy.

The classifier head (global pooling, flatten, a final fully connected layer) stays in float32: quantizing
the logits to 256 levels creates ties among the top classes and ruins top-1/top-5. The inputs and output of
every Concat (the Fire modules' expand branches) share one quantization range, so onnxruntime concatenates
int8 data by copying instead of re-quantizing every element (about 10% of SqueezeNet's int8 time).
"""

from __future__ import annotations

import itertools
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from squeezelab.data.folders import is_image_file
from squeezelab.data.images import load_pil_image
from squeezelab.data.transforms import eval_transform
from squeezelab.models import ModelConfig
from squeezelab.utils.files import atomic_write_bytes
from squeezelab.utils.optional import require

from .onnx_export import INPUT_NAME, onnx_config, onnx_metadata, set_metadata

QUANT_FORMATS = ("qdq", "qoperator")
# Ops that carry spatial activations: the walk back from the outputs stops there (they stay quantized).
_BODY_OPS = {"Conv", "Relu", "Clip", "MaxPool", "Concat", "Add"}
# 256 images kept SqueezeNet v1.0 within 1 point of fp32 top-1/top-5 for every calibration seed tried; 64 did not.
DEFAULT_CALIBRATION_COUNT = 256
MOSAIC_RATIO = 0.5  # images whose shorter side is below half the resize size are tiled, not upscaled


def find_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files under a folder (recursively, sorted) or from an explicit list of paths."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p.name))
        if not files:
            raise ValueError(f"{folder}: no image files found")
        return files
    return [Path(p) for p in source]


def calibration_batch(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    cfg: ModelConfig,
    count: int = DEFAULT_CALIBRATION_COUNT,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """``count`` preprocessed calibration inputs (N x C x H x W float32) drawn from real images.

    Files are drawn with a fixed ``seed``; small images become mosaics. A file that cannot be decoded is an
    error naming it (:class:`~squeezelab.data.images.ImageDecodeError`): skipping it would silently
    calibrate on fewer images than asked for, which narrows the activation ranges the int8 model is built with.
    """
    if count < 1:
        raise ValueError(f"calibration count must be >= 1, got {count}")
    files = find_images(source)
    order = random.Random(seed).sample(range(len(files)), len(files))
    transform = eval_transform(cfg)
    inputs = []
    pool = (files[i] for i in order)
    with tqdm(total=count, desc="calibration images", unit="img", disable=not progress, leave=False) as bar:
        for image in _calibration_images(pool, cfg):
            inputs.append(transform(image).numpy())
            bar.update()
            if len(inputs) == count:
                break
    if not inputs:
        raise ValueError(f"{source}: no calibration images")
    return np.stack(inputs).astype(np.float32)


def _calibration_images(files: Iterator[Path], cfg: ModelConfig) -> Iterator[Image.Image]:
    in_chans = cfg.input_size[0]
    for path in files:
        image = load_pil_image(path, in_chans)
        tile = min(image.size)
        if tile >= MOSAIC_RATIO * cfg.resize_size:
            yield image
            continue
        grid = max(1, round(cfg.resize_size / tile))
        tiles = [image, *(load_pil_image(p, in_chans) for p in itertools.islice(files, grid * grid - 1))]
        yield _mosaic(tiles, grid, tile)


def _mosaic(tiles: list[Image.Image], grid: int, tile: int) -> Image.Image:
    canvas = Image.new(tiles[0].mode, (grid * tile, grid * tile))
    for k, image in enumerate(tiles):
        square = image.resize((tile, tile)) if image.size != (tile, tile) else image
        canvas.paste(square, ((k % grid) * tile, (k // grid) * tile))
    return canvas


def head_nodes(proto) -> list[str]:
    """Names of the nodes between the last spatial activation and the outputs (pooling, flatten, final FC)."""
    producer = {output: node for node in proto.graph.node for output in node.output}
    pending = [o.name for o in proto.graph.output]
    head: list[str] = []
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.op_type in _BODY_OPS or node.name in head:
            continue
        head.append(node.name)
        pending.extend(node.input)
    return head


def concat_range_overrides(model_path: str | os.PathLike, calibration: np.ndarray) -> dict[str, list[dict]]:
    """onnxruntime ``TensorQuantOverrides`` giving each Concat's inputs and output their joint min/max range."""
    onnx = require("onnx")
    ort = require("onnxruntime")

    proto = onnx.load(str(model_path))
    concats = [node for node in proto.graph.node if node.op_type == "Concat"]
    tensors = sorted({name for node in concats for name in (*node.input, *node.output)})
    if not tensors:
        return {}
    known_outputs = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in known_outputs)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    low = {t: np.inf for t in tensors}
    high = {t: -np.inf for t in tensors}
    for batch in _chunks(calibration):
        for name, value in zip(tensors, session.run(tensors, {INPUT_NAME: batch})):
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
    overrides: dict[str, list[dict]] = {}
    for node in concats:
        names = (*node.input, *node.output)
        joint = {"rmin": np.float32(min(low[t] for t in names)), "rmax": np.float32(max(high[t] for t in names))}
        for name in names:
            overrides[name] = [dict(joint)]
    return overrides


def _chunks(calibration: np.ndarray, size: int = 8) -> list[np.ndarray]:
    return np.array_split(calibration, math.ceil(len(calibration) / size))


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    per_channel: bool = True,
    quant_format: str = "qdq",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Statically quantize an exported ONNX classifier to int8 with onnxruntime; writes ``out_path`` atomically.

    ``calibration`` is a float32 batch from :func:`calibration_batch`. The squeezelab metadata of the fp32
    file is carried over (plus ``metadata``).
    """
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quant_format not in QUANT_FORMATS:
        raise ValueError(f"quant_format must be one of {QUANT_FORMATS}, got {quant_format!r}")
    onnx_config(fp32_path)  # fails early, naming the file, if it is not a squeezelab export

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(_chunks(calibration))

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="squeezelab-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            _Batches(),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=head_nodes(onnx.load(str(prepared))),
            extra_options={"TensorQuantOverrides": concat_range_overrides(prepared, calibration)},
        )
        proto = onnx.load(str(quantized))
    set_metadata(proto, {**onnx_metadata(fp32_path), "squeezelab.precision": "int8", **(metadata or {})})
    out_path = Path(out_path)
    atomic_write_bytes(out_path, proto.SerializeToString())
    return out_path

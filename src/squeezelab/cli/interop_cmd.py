"""``squeezelab import-caffe-compressed``, ``import-torchvision``, ``classify``, ``export-onnx``, ``quantize-int8``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from squeezelab.bench.timing import interleaved_timings
from squeezelab.interop import imagenet_class_names, import_caffe_compressed
from squeezelab.interop.classify import classify_files, expand_inputs
from squeezelab.interop.deploy import BACKENDS, deploy
from squeezelab.interop.evaluate import labelled_images, topk_accuracies
from squeezelab.interop.loading import load_model, load_model_or_name
from squeezelab.interop.onnx_export import DEFAULT_OPSET, export_onnx, onnx_parity, random_images
from squeezelab.interop.quantize import DEFAULT_CALIBRATION_COUNT, calibration_batch, quantize_int8
from squeezelab.interop.runtime import OnnxModel
from squeezelab.models.files import save_model
from squeezelab.models.profile import count_params
from squeezelab.models.registry import model_config

from .common import checked_input_size, format_table, parse_input_size, positive_int

# The model `squeezelab classify` uses when none is given: the ImageNet weights shipped in the package.
DEFAULT_CLASSIFIER = "squeezenet1_0.dc_in1k"


def register(subparsers: argparse._SubParsersAction) -> None:
    caffe = subparsers.add_parser(
        "import-caffe-compressed",
        help="import the Deep Compression SqueezeNet v1.0 release (compressed_SqueezeNet.net) as a model file",
    )
    caffe.add_argument("file", help="compressed_SqueezeNet.net")
    caffe.add_argument("--out", required=True, help="model file to write (squeezelab format, .pt)")
    caffe.add_argument("--prototxt", help="Caffe deploy prototxt to check against (default: the one next to FILE)")
    caffe.add_argument("--classes", help="index<TAB>wnid<TAB>name file for class names (default: torchvision's)")
    caffe.set_defaults(func=run_import_caffe)

    torchvision = subparsers.add_parser(
        "import-torchvision", help="load a torchvision-style .pth state_dict into a registered model and save it"
    )
    torchvision.add_argument("file", help=".pth state_dict (e.g. torchvision's squeezenet1_0-b66bff10.pth)")
    torchvision.add_argument("--arch", required=True, help="registered model name, e.g. squeezenet1_0, alexnet, vgg19")
    torchvision.add_argument("--num-classes", type=int, help="output classes if not the architecture's default")
    torchvision.add_argument("--out", required=True, help="model file to write (squeezelab format, .pt)")
    torchvision.set_defaults(func=run_import_torchvision)

    classify = subparsers.add_parser("classify", help="top-5 classes of images, with the model's own preprocessing")
    classify.add_argument("images", nargs="+", help="image files or folders")
    classify.add_argument(
        "--model",
        help=f"model file (squeezelab .pt, .sqz, torchvision .pth, .net, .onnx) or pretrained tag (default: {DEFAULT_CLASSIFIER}, shipped)",
    )
    classify.add_argument("--arch", help="registered model name, needed for plain state_dict files")
    classify.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto, fastest)")
    classify.add_argument("--calibration", help="images to build the int8 backend from (cached next to the model)")
    _add_calibration_count(classify)
    classify.add_argument("--topk", type=positive_int, default=5, help="classes to show per image (default 5)")
    _add_threads(classify, "CPU threads")
    classify.set_defaults(func=run_classify)

    export = subparsers.add_parser("export-onnx", help="export a model file or registered model to ONNX and verify it")
    export.add_argument("model", help="model file, or a registered model name (random weights)")
    export.add_argument("--out", required=True, help="ONNX file to write")
    export.add_argument("--arch", help="registered model name, needed for plain state_dict files")
    export.add_argument("--input-size", type=parse_input_size, help="C,H,W or H,W (default: the model's)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    export.add_argument("--dynamic-size", action="store_true", help="also leave height and width dynamic")
    export.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    export.set_defaults(func=run_export)

    quantize = subparsers.add_parser(
        "quantize-int8", help="int8 static quantization (onnxruntime) with calibration images; reports accuracy and speed"
    )
    quantize.add_argument("model", help="model file (any format classify reads)")
    quantize.add_argument("--out", required=True, help="int8 ONNX file to write")
    quantize.add_argument("--arch", help="registered model name, needed for plain state_dict files")
    quantize.add_argument("--calibration", required=True, help="folder of unlabelled real images (any layout)")
    _add_calibration_count(quantize)
    quantize.add_argument("--eval-data", help="labelled images (class folders or a flat ImageNet sample) for top-1/top-5")
    quantize.add_argument("--eval-limit", type=positive_int, help="evaluate at most this many images")
    _add_threads(quantize, "CPU threads for the timing")
    quantize.set_defaults(func=run_quantize)


def _add_threads(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--threads", type=positive_int, help=f"{what} (default: the runtime's)")


def _add_calibration_count(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibration-count",
        type=positive_int,
        default=DEFAULT_CALIBRATION_COUNT,
        help=f"calibration images used (default {DEFAULT_CALIBRATION_COUNT})",
    )


def run_import_caffe(args: argparse.Namespace) -> int:
    names = imagenet_class_names(args.classes) if args.classes else None
    model = import_caffe_compressed(args.file, prototxt=args.prototxt, class_names=names)
    save_model(model, args.out)
    cfg = model_config(model)
    print(
        f"imported {args.file} -> {args.out}: squeezenet1_0 (final conv padding 1), {count_params(model):,} "
        f"parameters; preprocessing {cfg.channel_order} x{cfg.pixel_scale:g} minus mean {cfg.mean}, "
        f"resize {cfg.resize_size} (no anti-aliasing), crop {cfg.input_size[1]}x{cfg.input_size[2]}"
    )
    return 0


def run_import_torchvision(args: argparse.Namespace) -> int:
    model = load_model(args.file, args.arch, args.num_classes)
    save_model(model, args.out)
    print(f"imported {args.file} -> {args.out}: {args.arch}, {count_params(model):,} parameters")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    paths = expand_inputs(args.images)
    if args.model is None:
        print(f"model: {DEFAULT_CLASSIFIER} (ImageNet SqueezeNet v1.0 shipped with squeezelab; --model to choose another)")
    deployment = deploy(
        args.model or DEFAULT_CLASSIFIER, args.backend, args.arch, args.calibration, args.calibration_count, threads=args.threads
    )
    print(f"backend: {deployment.describe()}")
    result = classify_files(deployment.model, paths, deployment.cfg, topk=args.topk)
    for prediction in result.predictions:
        print(prediction.path)
        for name, probability in prediction.top:
            print(f"  {100 * probability:6.2f}%  {name}")
    for message in result.failures:
        print(f"squeezelab classify: skipped {message}", file=sys.stderr)
    if result.failures:
        print(f"squeezelab classify: {len(result.failures)} of {len(paths)} images failed", file=sys.stderr)
    return 1 if result.failures else 0


def run_export(args: argparse.Namespace) -> int:
    model = load_model_or_name(args.model, args.arch)
    size = checked_input_size(model, args.input_size)
    path = export_onnx(model, args.out, input_size=size, opset=args.opset, dynamic_size=args.dynamic_size)
    print(f"exported {args.model} -> {path} (opset {args.opset}, input {'x'.join(map(str, size))}, dynamic batch)")
    if not args.no_verify:
        print(f"onnxruntime vs PyTorch: max abs difference {onnx_parity(model, path):.3g} on 2 random images")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    model = load_model(args.model, arch=args.arch)
    calibration = calibration_batch(args.calibration, model_config(model), args.calibration_count)
    with tempfile.TemporaryDirectory(prefix="squeezelab-quantize-") as tmp:
        fp32_path = export_onnx(model, Path(tmp) / "fp32.onnx")
        int8_path = quantize_int8(fp32_path, args.out, calibration)
        backends = {"onnx fp32": OnnxModel(fp32_path, args.threads), "onnx int8": OnnxModel(int8_path, args.threads)}
        print(f"wrote {int8_path} ({Path(int8_path).stat().st_size / 1e6:.2f} MB); calibrated on {len(calibration)} images")
        _report_int8(args, model, backends)
    return 0


def _report_int8(args: argparse.Namespace, model: nn.Module, backends: dict[str, OnnxModel]) -> None:
    batch = random_images(model_config(model), 1)
    timings = interleaved_timings({name: _call(m, batch) for name, m in backends.items()}, warmup=5, iters=50)
    baseline = timings["onnx fp32"].median
    rows = [
        [name, f"{1e3 * t.median:.2f}", f"{1e3 * t.p90:.2f}", f"{baseline / t.median:.2f}x"] for name, t in timings.items()
    ]
    headers = ["backend", "batch-1 median ms", "p90 ms", "speed-up"]
    if args.eval_data:
        images = labelled_images(args.eval_data)
        if args.eval_limit:
            images = images.select(range(min(args.eval_limit, len(images))))
        scores = topk_accuracies(backends, images, model_config(model))
        for row, name in zip(rows, backends):
            row += [f"{scores[name]['top1']:.1f}", f"{scores[name]['top5']:.1f}"]
        headers += ["top-1 %", "top-5 %"]
    print(format_table(headers, rows))


def _call(model: nn.Module, batch: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``model(batch)`` as a call to time (a function, not a lambda with a default argument: mypy types it)."""
    return lambda: model(batch)

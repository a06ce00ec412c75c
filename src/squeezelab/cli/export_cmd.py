"""``squeezelab export``: one command for every deployment format (``export-onnx`` and ``quantize-int8`` remain
as the older spellings of ``--format onnx`` and ``--format onnx-int8``)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from squeezelab.interop.deploy import deploy
from squeezelab.interop.evaluate import labelled_images
from squeezelab.interop.export import FORMATS, QUANTIZERS, export_model, is_int8
from squeezelab.interop.loading import load_model_or_name
from squeezelab.interop.onnx_export import DEFAULT_OPSET
from squeezelab.interop.openvino_ir import ir_file_bytes
from squeezelab.interop.parity import logit_difference, top1_agreement
from squeezelab.interop.quantize import DEFAULT_CALIBRATION_COUNT, calibration_batch
from squeezelab.models.registry import model_config

from .common import checked_input_size, parse_input_size, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export", help="export a model for deployment (ONNX, OpenVINO IR, ExecuTorch .pte; fp32 or int8) and verify it"
    )
    export.add_argument("model", help="model file (any format classify reads), or a registered model name (random weights)")
    export.add_argument("--format", required=True, choices=FORMATS, help="what to write (int8 formats need --calibration)")
    export.add_argument("--out", required=True, help="file to write: .onnx, .xml (OpenVINO IR, with its .bin) or .pte")
    export.add_argument("--arch", help="registered model name, needed for plain state_dict files")
    export.add_argument("--input-size", type=parse_input_size, help="C,H,W or H,W (default: the model's)")
    export.add_argument("--calibration", help="folder of unlabelled real images for the int8 formats (any layout)")
    export.add_argument(
        "--calibration-count",
        type=positive_int,
        default=DEFAULT_CALIBRATION_COUNT,
        help=f"calibration images used (default {DEFAULT_CALIBRATION_COUNT})",
    )
    export.add_argument(
        "--quantizer", choices=QUANTIZERS, default="squeezelab", help="openvino-int8: squeezelab's QDQ recipe or NNCF's"
    )
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    export.add_argument("--dynamic-size", action="store_true", help="ONNX: also leave height and width dynamic")
    export.add_argument("--eval-data", help="real images (class folders or flat) for top-1 agreement with PyTorch")
    export.add_argument("--eval-limit", type=positive_int, default=200, help="compare on at most this many images (default 200)")
    export.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    export.add_argument("--threads", type=positive_int, help="CPU threads for the verification run")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    model = load_model_or_name(args.model, args.arch)
    size = checked_input_size(model, args.input_size)
    calibration = None
    if is_int8(args.format):
        if not args.calibration:
            raise ValueError(f"--format {args.format} needs calibration images (--calibration DIR)")
        cfg = replace(model_config(model), input_size=size)
        calibration = calibration_batch(args.calibration, cfg, args.calibration_count)
    path = export_model(
        model, args.out, args.format, size, calibration, args.quantizer, opset=args.opset, dynamic_size=args.dynamic_size
    )
    print(
        f"exported {args.model} -> {path} ({args.format}, input {'x'.join(map(str, size))}, "
        f"{ir_file_bytes(path) / 1e6:.2f} MB{_calibrated(calibration)})"
    )
    if not args.no_verify:
        _verify(args, model, path)
    return 0


def _calibrated(calibration) -> str:
    return f", calibrated on {len(calibration)} images" if calibration is not None else ""


def _verify(args: argparse.Namespace, model, path) -> None:
    # deploy() runs an exported file on its format's runtime; "onnx" keeps ONNX files on onnxruntime (the
    # runtime they are written for) even when OpenVINO is installed; it is ignored for .xml and .pte files.
    exported = deploy(path, "onnx", threads=args.threads)
    difference = logit_difference(model, exported.model, exported.cfg)
    print(f"{exported.describe()} vs PyTorch: max abs logit difference {difference:.3g} on 2 random images")
    if args.eval_data:
        images = labelled_images(args.eval_data).paths[: args.eval_limit]
        agreement = top1_agreement(model, exported.model, images, exported.cfg)
        print(
            f"top-1 agreement with PyTorch: {agreement.top1_agreement:.1f} % of {agreement.images} real images "
            f"(max abs logit difference {agreement.max_abs_difference:.3g})"
        )

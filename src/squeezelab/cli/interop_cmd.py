"""``squeezelab import-caffe-compressed``."""

from __future__ import annotations

import argparse

from squeezelab.interop import import_caffe_compressed, imagenet_class_names
from squeezelab.models.files import save_model
from squeezelab.models.profile import count_params


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


def run_import_caffe(args: argparse.Namespace) -> int:
    names = imagenet_class_names(args.classes) if args.classes else None
    model = import_caffe_compressed(args.file, prototxt=args.prototxt, class_names=names)
    save_model(model, args.out)
    cfg = model.default_cfg
    print(
        f"imported {args.file} -> {args.out}: squeezenet1_0 (final conv padding 1), {count_params(model):,} "
        f"parameters; preprocessing {cfg.channel_order} x{cfg.pixel_scale:g} minus mean {cfg.mean}, "
        f"resize {cfg.resize_size} (no anti-aliasing), crop {cfg.input_size[1]}x{cfg.input_size[2]}"
    )
    return 0

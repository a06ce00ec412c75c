"""``squeezelab models`` and ``squeezelab info``."""

from __future__ import annotations

import argparse

from squeezelab.interop.loading import load_model
from squeezelab.models import count_macs, count_params, create_model, get_model_config, layer_table, list_models
from squeezelab.models.pretrained import list_pretrained, pretrained_weights, provenance
from squeezelab.models.profile import MB, MIB
from squeezelab.models.registry import model_config

from .common import format_table, parse_input_size, parse_model_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list registered models with parameters, size and MACs")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'squeezenet1_*'")
    models.add_argument("--pretrained", action="store_true", help="list the pretrained weights shipped with squeezelab, with their figures")
    models.set_defaults(func=run_models)

    info = subparsers.add_parser("info", help="per-layer table of one model: output shape, params, MACs")
    info.add_argument("model", help="registered model name")
    info.add_argument("--input-size", type=parse_input_size, help="C,H,W or H,W (default: the model's)")
    info.add_argument("--num-classes", type=int, help="number of output classes (default: the model's)")
    info.add_argument(
        "--model-arg",
        type=parse_model_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder keyword argument, repeatable, e.g. fire_pairing=2, batch_norm=all, remove_fires=[2,5]",
    )
    info.set_defaults(func=run_info)


def run_models(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _list_pretrained(args.pattern)
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; run 'squeezelab models' to list them all")
    rows = []
    for name in names:
        model = create_model(name)
        input_size = model_config(model).input_size
        params = count_params(model)
        rows.append(
            [
                name,
                f"{params:,}",
                f"{4 * params / MB:.2f}",
                f"{4 * params / MIB:.2f}",
                "x".join(map(str, input_size)),
                f"{count_macs(model, input_size) / 1e6:,.1f}",
            ]
        )
    headers = ["model", "params", "fp32 MB (10^6 B)", "fp32 MiB (2^20 B)", "input", "MMACs"]
    print(format_table(headers, rows))
    return 0


def run_info(args: argparse.Namespace) -> int:
    cfg = get_model_config(args.model)
    input_size = args.input_size or cfg.input_size
    if len(input_size) == 2:
        input_size = (cfg.input_size[0], *input_size)
    model = create_model(args.model, num_classes=args.num_classes, in_chans=input_size[0], **dict(args.model_arg))
    rows = [
        [row.name, row.kind, "x".join(map(str, row.output_shape)), f"{row.params:,}", f"{row.macs:,}"]
        for row in layer_table(model, input_size)
    ]
    params = count_params(model)
    macs = count_macs(model, input_size)
    rows.append(["total", "", "", f"{params:,}", f"{macs:,}"])
    print(f"{args.model}: input {'x'.join(map(str, input_size))}, {model_config(model).num_classes} classes")
    print(format_table(["layer", "kind", "output", "params", "MACs"], rows))
    print(f"fp32 size: {4 * params:,} bytes = {4 * params / MB:.3f} MB = {4 * params / MIB:.3f} MiB")
    return 0


def _list_pretrained(pattern: str) -> int:
    tags = list_pretrained(pattern)
    if not tags:
        raise ValueError(f"no pretrained weights match {pattern!r}; shipped: {', '.join(list_pretrained())}")
    rows, notes = [], []
    for tag in tags:
        weights = pretrained_weights(tag)
        model = load_model(tag)
        record = provenance(model)
        figures = record.get("metrics", {})
        rows.append([
            tag, model_config(model).dataset, f"{weights.path.stat().st_size:,}", f"{count_params(model):,}",
            *(f"{figures[key]:.2f}" if key in figures else "-" for key in ("top1", "top5", "top1_tta")),
            record.get("data", "-"),
        ])  # fmt: skip
        notes.append(f"{tag}: {weights.summary}. Made by: {record.get('command', '-')}; measured by: {record.get('measured_by', '-')}")
    print(format_table(["tag", "data set", "file bytes", "params", "top-1 %", "top-5 %", "top-1 TTA %", "measured on"], rows))
    print("\n".join(notes))
    return 0

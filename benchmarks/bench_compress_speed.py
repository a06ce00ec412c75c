"""Deep Compression pipeline speed on SqueezeNet v1.0, against torch.save / torch.load of the dense weights.

Stages timed (best of ``--repeats``, alternating, so a shared machine penalises all alike):
magnitude pruning to the released model's layer densities, k-means weight sharing (the exact 1-D
"optimal" clustering and Han et al.'s linear-init Lloyd), entropy coding + writing the .sqz file, and
decoding it back into a ready model. The baseline is ``torch.save`` of the dense fp32 ``state_dict`` and
its ``torch.load`` + ``load_state_dict`` in the same run; the table reports ratios to it.

    python benchmarks/bench_compress_speed.py [--release ../shared/models/squeezenet-deep-compression/compressed_SqueezeNet.net]

Without ``--release`` the weights are a fresh (random) SqueezeNet v1.0, which has many more distinct
values to cluster than the released, already weight-shared model.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch

from squeezelab.cli.common import format_table
from squeezelab.compress import DEEP_COMPRESSION_DENSITIES, load_compressed, prune, quantize, save_compressed
from squeezelab.models import create_model

BITS = {"conv": 8, "classifier": 5}  # the paper's AlexNet/VGG setting: 8-bit conv, 5-bit fully connected


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def source_model(release: Path | None) -> torch.nn.Module:
    if release is None:
        torch.manual_seed(0)
        return create_model("squeezenet1_0")
    from squeezelab.interop.caffe import import_caffe_compressed

    return import_caffe_compressed(release)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, help="compressed_SqueezeNet.net to start from (default: random weights)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = source_model(args.release)
    folder = Path(tempfile.mkdtemp())
    best: dict[str, float] = {}
    sizes: dict[str, int] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for _ in range(args.repeats):
        buffer = io.BytesIO()
        keep("torch.save dense state_dict", timed(lambda: torch.save(base.state_dict(), buffer)))
        sizes["torch.save dense state_dict"] = buffer.tell()
        fresh = create_model(base.model_spec["name"], **base.model_spec["kwargs"])
        keep("torch.load + load_state_dict", timed(lambda: fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))))
        for init in ("optimal", "linear"):
            model = create_model(base.model_spec["name"], **base.model_spec["kwargs"])
            model.load_state_dict(base.state_dict())
            model.default_cfg = base.default_cfg
            keep("prune (released densities)", timed(lambda: prune(model, DEEP_COMPRESSION_DENSITIES)))
            keep(f"k-means, {init}", timed(lambda: quantize(model, BITS, init=init)))
            path = folder / f"{init}.sqz"
            keep(f"entropy coding + write ({init})", timed(lambda: save_compressed(model, path)))
            sizes[f"entropy coding + write ({init})"] = path.stat().st_size
            keep(f"decode .sqz -> model ({init})", timed(lambda: load_compressed(path)))
    pipeline = best["prune (released densities)"] + best["k-means, optimal"] + best["entropy coding + write (optimal)"]
    best["prune + k-means (optimal) + coding"] = pipeline
    save, load = best["torch.save dense state_dict"], best["torch.load + load_state_dict"]
    rows = []
    for name, seconds in best.items():
        baseline = load if "decode" in name or "load" in name else save
        rows.append([name, f"{seconds * 1000:,.0f}", f"{seconds / baseline:.1f}x", f"{sizes[name]:,}" if name in sizes else ""])
    print(f"SqueezeNet v1.0 ({'released weights' if args.release else 'random weights'}), bits {BITS}, {args.threads} threads, best of {args.repeats}")
    print(format_table(["stage", "ms", "vs torch.save/load", "file bytes"], rows))


if __name__ == "__main__":
    main()

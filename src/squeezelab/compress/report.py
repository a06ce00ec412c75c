"""Per-layer size report of a compressed model: table (text/Markdown/CSV), JSON and a bar chart (PNG)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from squeezelab.models.profile import MB, MIB
from squeezelab.utils.files import atomic_write_text

from .sharing import index_bits


@dataclass(frozen=True)
class LayerSize:
    """Bytes of one weight-shared layer in the file, with the Shannon limit of each coded stream."""

    name: str
    shape: tuple[int, ...]
    params: int
    nonzeros: int
    clusters: int
    codebook_bytes: int
    index_coder: str
    index_bytes: int
    index_limit_bytes: float
    position_coder: str
    position_bytes: int
    position_limit_bytes: float
    bias_bytes: int

    @property
    def density(self) -> float:
        return self.nonzeros / self.params if self.params else 0.0

    @property
    def bits(self) -> int:
        return index_bits(self.clusters)

    @property
    def total_bytes(self) -> int:
        return self.codebook_bytes + self.index_bytes + self.position_bytes + self.bias_bytes


@dataclass(frozen=True)
class SizeReport:
    """Where the bytes of a compressed file go. Sizes in bytes; MB = 10^6 bytes, MiB = 2^20 bytes."""

    layers: list[LayerSize]
    other_tensor_bytes: int
    metadata_bytes: int
    file_bytes: int
    dense_fp32_bytes: int

    @property
    def ratio(self) -> float:
        return self.dense_fp32_bytes / self.file_bytes

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(layer.nonzeros for layer in self.layers)

    def summary(self) -> str:
        return (
            f"{self.file_bytes:,} bytes ({self.file_bytes / MB:.3f} MB, {self.file_bytes / MIB:.3f} MiB) vs dense "
            f"fp32 {self.dense_fp32_bytes:,} bytes: {self.ratio:.1f}x smaller; "
            f"{self.nonzeros:,} of {self.params:,} weights kept ({self.nonzeros / max(self.params, 1):.1%})"
        )

    def table(self) -> tuple[list[str], list[list[object]]]:
        headers = [
            "layer", "params", "nonzeros", "density", "clusters", "bits", "codebook B", "index coder",
            "index B", "index limit B", "position coder", "position B", "position limit B", "bias B", "total B",
        ]  # fmt: skip
        rows: list[list[object]] = [
            [
                layer.name, layer.params, layer.nonzeros, f"{layer.density:.1%}", layer.clusters, layer.bits,
                layer.codebook_bytes, layer.index_coder, layer.index_bytes, f"{layer.index_limit_bytes:.0f}",
                layer.position_coder, layer.position_bytes, f"{layer.position_limit_bytes:.0f}", layer.bias_bytes,
                layer.total_bytes,
            ]  # fmt: skip
            for layer in self.layers
        ]
        blank = [""] * (len(headers) - 2)
        rows.append(["other tensors (BN, unshared)", *blank, self.other_tensor_bytes])
        rows.append(["header + metadata + checksum", *blank, self.metadata_bytes])
        rows.append(["file total", self.params, self.nonzeros, *[""] * (len(headers) - 4), self.file_bytes])
        rows.append(["dense fp32 (4 B per parameter)", *blank, self.dense_fp32_bytes])
        return headers, rows

    def to_markdown(self) -> str:
        headers, rows = self.table()
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        return "\n".join(lines) + f"\n\n{self.summary()}\n"

    def to_csv(self) -> str:
        headers, rows = self.table()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(headers)
        writer.writerows(rows)
        return buffer.getvalue()

    def to_json(self) -> str:
        data = asdict(self)
        data.update(ratio=self.ratio, params=self.params, nonzeros=self.nonzeros)
        return json.dumps(data, indent=2)

    def write(self, stem: str | os.PathLike) -> list[Path]:
        """Write ``<stem>.md``, ``.csv``, ``.json`` and ``.png``; returns the paths."""
        stem = Path(stem)
        paths = [stem.with_suffix(suffix) for suffix in (".md", ".csv", ".json", ".png")]
        for path, text in zip(paths, (self.to_markdown(), self.to_csv(), self.to_json())):
            atomic_write_text(path, text)
        self.plot(paths[-1])
        return paths

    def plot(self, path: str | os.PathLike) -> None:
        """Horizontal stacked bars per layer: codebook, indices, positions, bias bytes."""
        from .plotting import save_figure, stacked_barh

        parts = {
            "indices": [layer.index_bytes for layer in self.layers],
            "positions": [layer.position_bytes for layer in self.layers],
            "codebook": [layer.codebook_bytes for layer in self.layers],
            "bias": [layer.bias_bytes for layer in self.layers],
        }
        figure = stacked_barh([layer.name for layer in self.layers], parts, "bytes in the compressed file")
        figure.axes[0].set_title(self.summary().split(";")[0], fontsize=9)
        save_figure(figure, path)

"""Damaging torch files the way a bad disk or a careless copy would, for the tests of their loaders."""

import struct
import zipfile
from pathlib import Path


def flip_tensor_byte(path: Path, storage: int = 0, offset: int = 0) -> None:
    """Invert one byte of a stored tensor (``archive/data/<storage>`` of a ``torch.save`` zip) in place.

    The zip's CRC-32 no longer matches, but PyTorch does not check it: without a digest the file loads.
    """
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith(f"/data/{storage}"))
    data = bytearray(path.read_bytes())
    # the member's bytes follow its local header: 30 fixed bytes, then its name and extra field
    name_length, extra_length = struct.unpack_from("<HH", data, member.header_offset + 26)
    position = member.header_offset + 30 + name_length + extra_length + offset
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))

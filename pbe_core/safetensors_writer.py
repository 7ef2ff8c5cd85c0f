"""Writing a .safetensors file one tensor at a time, so no more than one tensor is ever held.

The format: an 8-byte little-endian header length; a JSON header mapping each name to its
``dtype``, ``shape`` and ``data_offsets`` (begin, end within the data) plus an optional
``__metadata__`` of strings, padded with spaces to a multiple of 8 bytes; then the data, each
tensor's bytes little-endian and C-contiguous. The header depends only on names, dtypes and shapes,
so it is written first and every tensor is produced, written and dropped in turn.
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO, Callable

import torch

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


@dataclass(frozen=True)
class Entry:
    """One tensor of the file: its name, dtype and shape, and where its bytes go."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int = 0

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * torch.empty((), dtype=self.dtype).element_size()

    @property
    def end(self) -> int:
        return self.begin + self.nbytes


def plan(tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> list[Entry]:
    """The file's layout: wider dtypes first (so every tensor is aligned to its element size, as
    safetensors' own writer does), then by name."""
    order = sorted(tensors, key=lambda name: (-torch.empty((), dtype=tensors[name][0]).element_size(), name))
    entries, offset = [], 0
    for name in order:
        dtype, shape = tensors[name]
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"{name}: safetensors has no name for {dtype}")
        entry = Entry(name, dtype, tuple(int(s) for s in shape), offset)
        entries.append(entry)
        offset = entry.end
    return entries


def header(entries: list[Entry], metadata: dict[str, str] | None = None) -> bytes:
    """The length prefix and the space-padded JSON header for ``entries``."""
    content: dict = {}
    if metadata:
        content["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for e in entries:
        content[e.name] = {"dtype": DTYPE_NAMES[e.dtype], "shape": list(e.shape), "data_offsets": [e.begin, e.end]}
    text = json.dumps(content, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write(
    file: BinaryIO,
    entries: list[Entry],
    tensor_for: Callable[[Entry], torch.Tensor],
    metadata: dict[str, str] | None = None,
    written: Callable[[Entry, torch.Tensor], None] | None = None,
) -> int:
    """Write the whole file to ``file``: the header, then for each entry ``tensor_for(entry)``
    (which must have the entry's dtype and shape), calling ``written(entry, tensor)`` after each
    (to report progress or release memory). Returns the number of bytes written."""
    if sys.byteorder != "little":
        raise RuntimeError("writing .safetensors on a big-endian machine is not supported")
    head = header(entries, metadata)
    file.write(head)
    total = len(head)
    for entry in entries:
        tensor = tensor_for(entry)
        if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
            raise ValueError(f"{entry.name}: got {tensor.dtype} {tuple(tensor.shape)}, the header says "
                             f"{entry.dtype} {entry.shape}")
        total += write_tensor(file, tensor)
        if written is not None:
            written(entry, tensor)
    return total


def write_tensor(file: BinaryIO, tensor: torch.Tensor) -> int:
    data = tensor_bytes(tensor)
    file.write(data)
    return data.nbytes


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes as they go in the file (C order), without a copy where it is contiguous."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")

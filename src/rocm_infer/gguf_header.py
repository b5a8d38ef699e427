"""GGUF metadata and tensor shapes through the ``gguf`` package, without the tokenizer arrays.

``gguf.GGUFReader`` builds one numpy view per element of every metadata array, so a file
with a 128k- or 262k-token vocabulary (Llama 3, Gemma 3) takes about 10 s to open although
discovery reads none of those arrays.  ``HeaderReader`` is the package's reader with one
step changed: an array is stepped over (one stride for numbers, a walk over the length
prefixes for strings) and keeps only its element type and length.  Scalars, strings, tensor
infos, alignment and every check stay the package's own.  Nothing but the header is read:
the file is memory-mapped and the tensor data pages are never touched.  A file cut short
after an intact header raises ``TruncatedGGUFError`` with the sizes, instead of the numpy
reshape error the package's tensor views would give.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType


class TruncatedGGUFError(ValueError):
    """The header is intact but the tensor data it describes runs past the end of the file."""


class HeaderReader(GGUFReader):
    """A ``GGUFReader`` whose array fields hold ``[element type, length]`` and no values."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        super().__init__(path, "r")

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[GGUFValueType]]:
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        item_type = self._get(orig_offs, np.uint32)
        length = self._get(orig_offs + 4, np.uint64)
        element = GGUFValueType(int(item_type[0]))
        offs = orig_offs + 12
        count = int(length[0])
        if element == GGUFValueType.STRING:
            offs = self._skip_strings(offs, count)
        elif element in self.gguf_scalar_to_np:
            offs += count * np.dtype(self.gguf_scalar_to_np[element]).itemsize
        else:  # arrays of arrays are rare and small: the package's own walk
            return super()._get_field_parts(orig_offs, raw_type)
        if offs > len(self.data):
            raise ValueError(f"array runs past the end of the file (needs {offs} bytes, file has {len(self.data)})")
        return offs - orig_offs, [item_type, length], [], [GGUFValueType.ARRAY, element]

    def _skip_strings(self, offs: int, count: int) -> int:
        for start, size in self._string_spans(offs, count):
            offs = start + size
        return offs

    def _string_spans(self, offs: int, count: int) -> Iterator[tuple[int, int]]:
        """(offset, size) of each string of an array whose first length prefix is at ``offs``."""
        little = (sys.byteorder == "little") != (self.byte_order == "S")  # "S": swapped from the host
        length_format = "<Q" if little else ">Q"
        buffer, end = memoryview(self.data), len(self.data)
        for _ in range(count):
            if offs + 8 > end:
                raise ValueError("string array runs past the end of the file")
            (size,) = struct.unpack_from(length_format, buffer, offs)
            yield offs + 8, size
            offs += 8 + size

    def string_array(self, key: str) -> list[bytes] | None:
        """The elements of a string-array field, read now (the reader stepped over them);
        None when the key is absent or not an array of strings."""
        field = self.fields.get(key)
        if field is None or field.types != [GGUFValueType.ARRAY, GGUFValueType.STRING]:
            return None
        # parts: key length (8), key, value type (4), element type (4), count (8), elements
        first = field.offset + 8 + field.parts[1].nbytes + 4 + 4 + 8
        buffer = memoryview(self.data)  # slicing the buffer, not the numpy array: 10x faster
        return [buffer[start:start + size].tobytes() for start, size in self._string_spans(first, int(field.parts[-1][0]))]

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        end = 0
        for field in fields:  # parts: name length, name, n_dims, dims, type, offset
            dims, raw_type, offset = field.parts[3], field.parts[4], field.parts[5]
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_type[0]))]
            n_bytes = int(np.prod(dims, dtype=np.uint64)) // block * type_size
            end = max(end, start_offs + int(offset[0]) + n_bytes)
        if end > len(self.data):
            raise TruncatedGGUFError(f"the header describes {end} bytes of tensors, the file has {len(self.data)}")
        super()._build_tensors(start_offs, fields)

    def value(self, key: str) -> Any:
        """A scalar or string field's value, an array field's length, None when absent."""
        field = self.fields.get(key)
        if field is None:
            return None
        if field.types[0] == GGUFValueType.ARRAY:
            return int(field.parts[-1][0])
        return field.contents()

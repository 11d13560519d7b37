"""Safetensors reading and writing in pure Python, and the dtype tables shared with the Rust side.

The runner must work without the `safetensors` package, so the format is handled here directly:
an 8-byte little-endian header length N, N bytes of JSON header
(`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
offsets relative to the end of the header), then the raw little-endian bytes.

Nothing in this module imports torch; `torch_dtype` takes the torch module as an argument so the
mapping can be tested with a stand-in.
"""

import json
import struct

# Our dtype name -> (safetensors code, element size, torch attribute, torch fallback attribute).
# The fallback is used on torch builds without unsigned 16/32/64-bit types: the bits are the same,
# only the arithmetic differs, so the tensor is viewed as the signed type of the same width.
DTYPES = {
    "f64": ("F64", 8, "float64", None),
    "f32": ("F32", 4, "float32", None),
    "f16": ("F16", 2, "float16", None),
    "bf16": ("BF16", 2, "bfloat16", None),
    "e4m3": ("F8_E4M3", 1, "float8_e4m3fn", None),
    "e5m2": ("F8_E5M2", 1, "float8_e5m2", None),
    "i8": ("I8", 1, "int8", None),
    "i16": ("I16", 2, "int16", None),
    "i32": ("I32", 4, "int32", None),
    "i64": ("I64", 8, "int64", None),
    "u8": ("U8", 1, "uint8", None),
    "u16": ("U16", 2, "uint16", "int16"),
    "u32": ("U32", 4, "uint32", "int32"),
    "u64": ("U64", 8, "uint64", "int64"),
    "bool": ("BOOL", 1, "bool", None),
}

CODE_TO_DTYPE = {v[0]: k for k, v in DTYPES.items()}

# A header larger than this is not one we wrote (the Rust crate refuses 100 MB too).
MAX_HEADER = 100_000_000


class TensorFileError(Exception):
    """A safetensors file that cannot be read or written; the message names the file and tensor."""


def dtype_size(dtype):
    try:
        return DTYPES[dtype][1]
    except KeyError:
        raise TensorFileError(f"unknown dtype `{dtype}` (known: {', '.join(DTYPES)})") from None


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class RawTensor:
    """A tensor as bytes: our dtype name, a shape, and little-endian row-major data."""

    __slots__ = ("dtype", "shape", "data")

    def __init__(self, dtype, shape, data):
        size = dtype_size(dtype)
        shape = [int(d) for d in shape]
        if any(d < 0 for d in shape):
            raise TensorFileError(f"negative dimension in shape {shape}")
        if len(data) != numel(shape) * size:
            raise TensorFileError(
                f"{len(data)} bytes do not hold a {dtype}{shape} tensor "
                f"({numel(shape) * size} bytes)"
            )
        self.dtype = dtype
        self.shape = shape
        self.data = data

    def __repr__(self):
        return f"RawTensor({self.dtype}{self.shape}, {len(self.data)} bytes)"


def _header_entry(path, name, entry, data_len):
    if not isinstance(entry, dict):
        raise TensorFileError(f"{path}: tensor `{name}`: header entry is not an object")
    code = entry.get("dtype")
    if code not in CODE_TO_DTYPE:
        raise TensorFileError(
            f"{path}: tensor `{name}`: dtype {code!r} is not one the harness uses "
            f"(known: {', '.join(CODE_TO_DTYPE)})"
        )
    dtype = CODE_TO_DTYPE[code]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise TensorFileError(f"{path}: tensor `{name}`: shape {shape!r} is not a list of sizes")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise TensorFileError(f"{path}: tensor `{name}`: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise TensorFileError(
            f"{path}: tensor `{name}`: data_offsets [{begin}, {end}] fall outside the "
            f"{data_len} data bytes"
        )
    expected = numel(shape) * DTYPES[dtype][1]
    if end - begin != expected:
        raise TensorFileError(
            f"{path}: tensor `{name}`: {end - begin} bytes for {dtype}{shape} "
            f"(expected {expected})"
        )
    return dtype, shape, begin, end


def read_header(f, path):
    """(header dict, metadata dict, data start offset, data length) of an open file."""
    f.seek(0, 2)
    total = f.tell()
    f.seek(0)
    head = f.read(8)
    if len(head) != 8:
        raise TensorFileError(f"{path}: {len(head)} bytes is too short for a safetensors file")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER or 8 + n > total:
        raise TensorFileError(
            f"{path}: header length {n} does not fit in a file of {total} bytes"
        )
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TensorFileError(f"{path}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise TensorFileError(f"{path}: __metadata__ is not an object")
    return header, meta, 8 + n, total - 8 - n


def read_file(path, names=None):
    """Reads `path` into {name: RawTensor} (only `names` when given) and the metadata dict."""
    try:
        with open(path, "rb") as f:
            header, meta, start, data_len = read_header(f, path)
            out = {}
            wanted = header.keys() if names is None else names
            for name in wanted:
                if name not in header:
                    raise TensorFileError(f"{path}: no tensor named `{name}`")
                dtype, shape, begin, end = _header_entry(path, name, header[name], data_len)
                f.seek(start + begin)
                data = bytearray(end - begin)
                got = f.readinto(data)
                if got != end - begin:
                    raise TensorFileError(f"{path}: tensor `{name}` is truncated")
                out[name] = RawTensor(dtype, shape, data)
            return out, meta
    except OSError as e:
        raise TensorFileError(f"{path}: {e.strerror or e}") from None


def write_file(path, tensors, metadata=None):
    """Writes {name: RawTensor} to `path` the way the Rust crate does: tensors sorted by
    descending element size then name, data packed without gaps, header padded with spaces to a
    multiple of 8 bytes."""
    order = sorted(tensors.items(), key=lambda kv: (-dtype_size(kv[1].dtype), kv[0]))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, t in order:
        header[name] = {
            "dtype": DTYPES[t.dtype][0],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(t.data)],
        }
        offset += len(t.data)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    try:
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for _, t in order:
                f.write(t.data)
    except OSError as e:
        raise TensorFileError(f"{path}: {e.strerror or e}") from None


def torch_dtype(torch, dtype):
    """(torch dtype, name of the fallback view or None) for one of our dtypes, or a
    TensorFileError when this torch has neither."""
    if dtype not in DTYPES:
        raise TensorFileError(f"unknown dtype `{dtype}`")
    _, _, attr, fallback = DTYPES[dtype]
    t = getattr(torch, attr, None)
    if t is not None:
        return t, None
    if fallback is not None and getattr(torch, fallback, None) is not None:
        return getattr(torch, fallback), fallback
    raise TensorFileError(
        f"this torch ({getattr(torch, '__version__', '?')}) has no dtype for `{dtype}` "
        f"(torch.{attr})"
    )

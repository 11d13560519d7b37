"""ksmith_tensors without torch: round trips, the exact byte layout, and malformed files."""

import json
import os
import struct
import sys
import tempfile
import types
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ksmith_tensors as kt  # noqa: E402


def raw_file(header, data=b"", pad=True):
    blob = json.dumps(header).encode()
    if pad:
        blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + data


class TensorFileTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "t.safetensors")

    def tearDown(self):
        self.dir.cleanup()

    def write_bytes(self, b):
        with open(self.path, "wb") as f:
            f.write(b)

    def test_round_trip_every_dtype(self):
        tensors = {}
        for i, (name, (_, size, _, _)) in enumerate(sorted(kt.DTYPES.items())):
            shape = [2, 3] if i % 2 else [5]
            data = bytes((j * 7 + i) & 0xFF for j in range(kt.numel(shape) * size))
            tensors[f"0/{name}"] = kt.RawTensor(name, shape, data)
        tensors["0/empty"] = kt.RawTensor("f32", [0, 4], b"")
        tensors["0/scalar"] = kt.RawTensor("i64", [], struct.pack("<q", -5))
        kt.write_file(self.path, tensors, {"k": 1})
        back, meta = kt.read_file(self.path)
        self.assertEqual(meta, {"k": "1"})
        self.assertEqual(set(back), set(tensors))
        for k, t in tensors.items():
            self.assertEqual((back[k].dtype, back[k].shape, bytes(back[k].data)),
                             (t.dtype, t.shape, t.data), k)
        only, _ = kt.read_file(self.path, ["0/u16"])
        self.assertEqual(list(only), ["0/u16"])

    def test_layout_matches_the_format(self):
        # Header padded to 8 bytes with spaces; larger elements first; data packed without gaps.
        kt.write_file(self.path, {
            "a": kt.RawTensor("u8", [3], b"\x01\x02\x03"),
            "b": kt.RawTensor("f32", [1], struct.pack("<f", 1.5)),
        })
        with open(self.path, "rb") as f:
            blob = f.read()
        (n,) = struct.unpack("<Q", blob[:8])
        self.assertEqual(n % 8, 0)
        header = json.loads(blob[8:8 + n])
        self.assertEqual(header["b"], {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
        self.assertEqual(header["a"], {"dtype": "U8", "shape": [3], "data_offsets": [4, 7]})
        self.assertEqual(blob[8 + n:], struct.pack("<f", 1.5) + b"\x01\x02\x03")

    def test_reads_a_hand_built_file_with_unpadded_header(self):
        self.write_bytes(raw_file(
            {"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
             "__metadata__": {"format": "pt"}},
            b"\x80\x3f\x00\x40", pad=False))
        t, meta = kt.read_file(self.path)
        self.assertEqual((t["x"].dtype, t["x"].shape, bytes(t["x"].data)),
                         ("bf16", [2], b"\x80\x3f\x00\x40"))
        self.assertEqual(meta, {"format": "pt"})

    def assert_bad(self, blob, *needles):
        self.write_bytes(blob)
        with self.assertRaises(kt.TensorFileError) as cm:
            kt.read_file(self.path)
        msg = str(cm.exception)
        self.assertIn(self.path, msg)
        for n in needles:
            self.assertIn(n, msg)

    def test_malformed_files_name_the_problem(self):
        ok = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
        self.assert_bad(b"", "too short")
        self.assert_bad(b"\x01\x02", "too short")
        self.assert_bad(struct.pack("<Q", 1 << 40) + b"{}", "header length")
        self.assert_bad(struct.pack("<Q", 4) + b"{{{{", "not JSON")
        self.assert_bad(struct.pack("<Q", 2) + b"[]", "not a JSON object")
        self.assert_bad(raw_file({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
                        "`x`", "C64")
        self.assert_bad(raw_file({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8),
                        "`x`", "shape")
        self.assert_bad(raw_file({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8),
                        "data_offsets")
        self.assert_bad(raw_file(ok, b"\0" * 4), "`x`", "outside")
        self.assert_bad(raw_file({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
                        "`x`", "expected 12")
        self.assert_bad(raw_file({"x": "nope"}), "`x`", "not an object")
        self.assert_bad(raw_file({"__metadata__": 3}), "__metadata__")

    def test_missing_tensor_and_missing_file(self):
        kt.write_file(self.path, {"a": kt.RawTensor("u8", [1], b"\x00")})
        with self.assertRaisesRegex(kt.TensorFileError, "no tensor named `b`"):
            kt.read_file(self.path, ["b"])
        with self.assertRaisesRegex(kt.TensorFileError, "nonexistent"):
            kt.read_file(os.path.join(self.dir.name, "nonexistent"))

    def test_raw_tensor_checks_its_size(self):
        with self.assertRaisesRegex(kt.TensorFileError, "do not hold"):
            kt.RawTensor("f16", [3], b"\0" * 5)
        with self.assertRaisesRegex(kt.TensorFileError, "unknown dtype"):
            kt.RawTensor("f128", [1], b"")

    def test_torch_dtype_mapping_with_stand_ins(self):
        new = types.SimpleNamespace(__version__="2.11", **{
            v[2]: f"torch.{v[2]}" for v in kt.DTYPES.values()})
        for ours, (_, _, attr, _) in kt.DTYPES.items():
            self.assertEqual(kt.torch_dtype(new, ours), (f"torch.{attr}", None))
        old = types.SimpleNamespace(__version__="2.2", **{
            v[2]: f"torch.{v[2]}" for v in kt.DTYPES.values() if v[2] not in ("uint16", "uint32", "uint64")})
        self.assertEqual(kt.torch_dtype(old, "u16"), ("torch.int16", "int16"))
        self.assertEqual(kt.torch_dtype(old, "u32"), ("torch.int32", "int32"))
        self.assertEqual(kt.torch_dtype(old, "u64"), ("torch.int64", "int64"))
        ancient = types.SimpleNamespace(__version__="1.13", float32="torch.float32")
        with self.assertRaisesRegex(kt.TensorFileError, "float8_e4m3fn"):
            kt.torch_dtype(ancient, "e4m3")


if __name__ == "__main__":
    unittest.main()

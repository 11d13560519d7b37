"""torch_runner.py as a subprocess: the reply on stdout and the exit codes.

Without torch (this machine) the runner is checked against stand-in `torch` packages; with torch
and a CUDA device (the GPU machine) `TorchEndToEnd` runs a small task through every mode.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "..", "torch_runner.py")
sys.path.insert(0, os.path.join(HERE, ".."))

import ksmith_tensors as kt  # noqa: E402

SPEC = '''
import torch

print("spec prints must not reach the JSON reply")


class Model(torch.nn.Module):
    def __init__(self, N):
        super().__init__()
        self.N = N

    def forward(self, x, w):
        assert x.shape[1] == self.N
        return (x.float() * 2 + w.float()).to(torch.bfloat16), (x.float().sum(1) > 0)
'''


def bf16(v):
    return struct.pack("<f", v)[2:]


def request(d, modes=("oracle",)):
    return {
        "version": 1,
        "spec": os.path.join(d, "spec.py"),
        "params": {"M": 2, "N": 3},
        "inputs_file": os.path.join(d, "in.safetensors"),
        "outputs_file": os.path.join(d, "out.safetensors"),
        "inputs": [{"name": "x", "dtype": "bf16"}, {"name": "w", "dtype": "bf16", "role": "weight"}],
        "sets": [{"x": "0/x", "w": "0/w"}, {"x": "1/x", "w": "0/w"}],
        "outputs": [{"name": "y", "dtype": "bf16", "dims": [2, 3]},
                    {"name": "pos", "dtype": "bool", "dims": [2]}],
        "modes": list(modes),
        "protocol": {"warmup_calls": 3, "warmup_ms": 1, "min_samples": 5, "max_samples": 20,
                     "target_rse": 0.01, "time_cap_ms": 2000, "graph_below_ms": 0.02},
    }


def run(d, req, env_extra=None):
    path = os.path.join(d, "request.json")
    with open(path, "w") as f:
        json.dump(req, f)
    env = dict(os.environ, **(env_extra or {}))
    p = subprocess.run([sys.executable, RUNNER, path], capture_output=True, text=True,
                       env=env, timeout=600)
    return p.returncode, json.loads(p.stdout), p.stderr


def setup_task(d):
    with open(os.path.join(d, "spec.py"), "w") as f:
        f.write(SPEC)
    x0 = [1.0, -2.0, 0.5, -1.0, -1.0, -1.0]
    x1 = [0.25, 0.25, 0.25, 3.0, -4.0, 2.0]
    w = [1.0, 0.0, -1.0]
    kt.write_file(os.path.join(d, "in.safetensors"), {
        "0/x": kt.RawTensor("bf16", [2, 3], b"".join(bf16(v) for v in x0)),
        "1/x": kt.RawTensor("bf16", [2, 3], b"".join(bf16(v) for v in x1)),
        "0/w": kt.RawTensor("bf16", [3], b"".join(bf16(v) for v in w)),
    })
    return x0, x1, w


def stand_in_torch(d, body):
    pkg = os.path.join(d, "fake", "torch")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write(body)
    return {"PYTHONPATH": os.path.join(d, "fake")}


class WithoutTorch(unittest.TestCase):
    def test_torch_that_does_not_import_is_unavailable(self):
        with tempfile.TemporaryDirectory() as d:
            setup_task(d)
            env = stand_in_torch(d, "raise ImportError('No module named torch (stand-in)')\n")
            code, reply, _ = run(d, request(d), env)
            self.assertEqual(code, 3)
            self.assertEqual(reply["status"], "unavailable")
            self.assertIn("torch does not import", reply["reason"])
            self.assertIn("stand-in", reply["reason"])

    def test_torch_without_cuda_is_unavailable(self):
        with tempfile.TemporaryDirectory() as d:
            setup_task(d)
            env = stand_in_torch(d, (
                "import types\n__version__ = '9.9-standin'\n"
                "version = types.SimpleNamespace(cuda=None)\n"
                "cuda = types.SimpleNamespace(is_available=lambda: False)\n"))
            code, reply, _ = run(d, request(d), env)
            self.assertEqual(code, 3)
            self.assertIn("torch 9.9-standin sees no CUDA device", reply["reason"])

    def test_bad_requests_exit_2_with_a_message(self):
        with tempfile.TemporaryDirectory() as d:
            req = request(d)
            del req["outputs"]
            code, reply, _ = run(d, req)
            self.assertEqual(code, 2)
            self.assertEqual(reply["status"], "bad_request")
            self.assertIn("request.outputs", reply["message"])
            path = os.path.join(d, "garbage.json")
            with open(path, "w") as f:
                f.write("{not json")
            p = subprocess.run([sys.executable, RUNNER, path], capture_output=True, text=True)
            self.assertEqual(p.returncode, 2)
            self.assertIn("garbage.json", json.loads(p.stdout)["message"])


COPY_SPEC = '''
import sys
import torch


class Model(torch.nn.Module):
    def __init__(self, N):
        self.N = N

    def forward(self, x, w):
        # What each call sees, for the test to check the refresh order.
        sys.stderr.write("SEEN x=%s w=%s\\n" % (bytes(x.buf).hex(), bytes(w.buf).hex()))
        return x.clone(), w.clone()
'''


class WithStandInTorch(unittest.TestCase):
    """The runner's own logic on a CPU stand-in for torch (tests/fake_torch)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        self.x0, self.x1, self.w = setup_task(self.d)
        with open(os.path.join(self.d, "spec.py"), "w") as f:
            f.write(COPY_SPEC)
        self.env = {"PYTHONPATH": os.path.join(HERE, "fake_torch")}

    def tearDown(self):
        self.tmp.cleanup()

    def request(self, modes):
        req = request(self.d, modes)
        req["inputs"][1]["dtype"] = "u64"
        req["outputs"] = [{"name": "y", "dtype": "bf16", "dims": [2, 3]},
                          {"name": "wc", "dtype": "u64", "dims": [3]}]
        req["l2_bytes"] = 1000
        req["compile_mode"] = "max-autotune"
        # The stand-in's calls take host time (tens of us on a loaded machine): a generous
        # threshold makes the eager graph-amortized path run every time.
        req["protocol"]["graph_below_ms"] = 1000.0
        w = struct.pack("<3Q", 1, 2, 3)
        raw, _ = kt.read_file(os.path.join(self.d, "in.safetensors"))
        raw["0/w"] = kt.RawTensor("u64", [3], w)
        kt.write_file(os.path.join(self.d, "in.safetensors"), raw)
        self.wbytes = w
        return req

    def test_every_mode(self):
        code, reply, err = run(self.d, self.request(("oracle", "eager", "compile")), self.env)
        self.assertEqual(code, 0, err)
        self.assertEqual((reply["status"], reply["device_name"]), ("ok", "Stand-in GPU"))
        self.assertEqual((reply["l2_bytes"], reply["flush_bytes"]), (1000, 2000))
        self.assertEqual(reply["compile_mode"], "max-autotune")
        self.assertEqual(reply["oracle"], {"ok": True, "sets": [0, 1],
                                           "outputs_file": os.path.join(self.d, "out.safetensors")})
        out, meta = kt.read_file(os.path.join(self.d, "out.safetensors"))
        self.assertEqual(sorted(out), ["0/wc", "0/y", "1/wc", "1/y"])
        self.assertEqual(bytes(out["0/y"].data), b"".join(bf16(v) for v in self.x0))
        self.assertEqual(bytes(out["1/y"].data), b"".join(bf16(v) for v in self.x1))
        self.assertEqual(bytes(out["1/wc"].data), self.wbytes)
        self.assertEqual(meta, {"producer": "ksmith torch_runner"})
        for mode in ("eager", "compile"):
            r = reply[mode]
            self.assertTrue(r["ok"], r)
            self.assertGreaterEqual(r["warmup_calls"], 3)
            self.assertIn(r["stop_reason"], ("converged", "max_samples", "time_cap"))
            self.assertTrue(1 <= len(r["samples_ms"]) <= 20)
            self.assertEqual(r["summary"]["n"], len(r["samples_ms"]))
        # Calls under graph_below_ms also get a graph-amortized time (eager only).
        self.assertIn("graph_ms", reply["eager"])
        self.assertNotIn("graph_ms", reply["compile"])

    def test_timing_refreshes_activations_from_the_pool_and_keeps_weights(self):
        code, reply, err = run(self.d, self.request(("eager",)), self.env)
        self.assertEqual(code, 0, err)
        seen = [l.split()[1:] for l in err.splitlines() if l.startswith("SEEN ")]
        x0 = "x=" + b"".join(bf16(v) for v in self.x0).hex()
        x1 = "x=" + b"".join(bf16(v) for v in self.x1).hex()
        w = "w=" + self.wbytes.hex()
        self.assertEqual(seen[0], [x0, w], "the output check runs on set 0")
        timed = seen[1:1 + reply["eager"]["warmup_calls"] + len(reply["eager"]["samples_ms"])]
        self.assertEqual([s[0] for s in timed[:4]], [x0, x1, x0, x1])
        self.assertTrue(all(s[1] == w for s in timed))

    def test_compiling_call_is_not_warm_up(self):
        # A compile longer than the time cap: warm-up still makes its calls after it.
        req = self.request(("compile",))
        req["protocol"]["time_cap_ms"] = 200
        env = dict(self.env, KSMITH_STANDIN_COMPILE_S="0.4")
        code, reply, err = run(self.d, req, env)
        self.assertEqual(code, 0, err)
        r = reply["compile"]
        self.assertTrue(r["ok"], r)
        self.assertGreaterEqual(r["warmup_calls"], 3, r)
        self.assertLess(r["summary"]["max_ms"], 300, r)

    def test_timing_runs_on_the_requested_device(self):
        req = self.request(("oracle", "eager"))
        req["device"] = 1
        code, reply, err = run(self.d, req, dict(self.env, KSMITH_STANDIN_DEVICES="2"))
        self.assertEqual(code, 0, err)
        self.assertTrue(reply["eager"]["ok"], reply["eager"])
        self.assertIn("graph_ms", reply["eager"])

    def test_output_mismatches_are_mode_errors(self):
        req = self.request(("oracle", "eager"))
        req["outputs"][1]["dims"] = [4]
        code, reply, _ = run(self.d, req, self.env)
        self.assertEqual(code, 0)
        self.assertFalse(reply["oracle"]["ok"])
        self.assertIn("output `wc` has shape [3], the task declares [4]", reply["oracle"]["error"])
        self.assertFalse(reply["eager"]["ok"])
        req["outputs"].pop()
        code, reply, _ = run(self.d, req, self.env)
        self.assertIn("Model returned 2 value(s), the task declares 1", reply["oracle"]["error"])

    def test_cpu_device_runs_the_oracle_without_cuda(self):
        # The stand-in says "no CUDA", as torch does on a CPU-only machine: "cpu" still runs.
        env = dict(self.env, KSMITH_STANDIN_NO_CUDA="1")
        req = self.request(("oracle",))
        req["device"] = "cpu"
        code, reply, err = run(self.d, req, env)
        self.assertEqual(code, 0, err)
        self.assertEqual((reply["status"], reply["device_name"]), ("ok", "cpu"))
        self.assertTrue(reply["oracle"]["ok"], reply["oracle"])
        self.assertNotIn("flush_bytes", reply)
        out, _ = kt.read_file(os.path.join(self.d, "out.safetensors"))
        self.assertEqual(bytes(out["1/y"].data), b"".join(bf16(v) for v in self.x1))

    def test_cpu_device_refuses_timing_modes(self):
        for modes in (("oracle", "eager"), ("compile",)):
            req = self.request(modes)
            req["device"] = "cpu"
            code, reply, _ = run(self.d, req, self.env)
            self.assertEqual(code, 2, reply)
            self.assertIn("timing needs a CUDA device", reply["message"])
        req = self.request(("oracle",))
        for bad in ("gpu", -1, True, 1.5):
            req["device"] = bad
            code, reply, _ = run(self.d, req, self.env)
            self.assertEqual(code, 2, (bad, reply))
            self.assertIn("`request.device` must be a device ordinal or \"cpu\"", reply["message"])

    def test_input_file_disagreeing_with_the_request_is_a_bad_request(self):
        req = self.request(("oracle",))
        req["inputs"][0]["dtype"] = "f16"
        code, reply, _ = run(self.d, req, self.env)
        self.assertEqual(code, 2)
        self.assertIn("is bf16, the task declares f16", reply["message"])
        req = self.request(("oracle",))
        req["sets"][1]["x"] = "7/x"
        code, reply, _ = run(self.d, req, self.env)
        self.assertEqual(code, 2)
        self.assertIn("no tensor named `7/x`", reply["message"])


def torch_with_cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


@unittest.skipUnless(torch_with_cuda(), "needs torch with a CUDA device")
class TorchEndToEnd(unittest.TestCase):
    def test_oracle_eager_compile(self):
        import torch

        with tempfile.TemporaryDirectory() as d:
            x0, x1, w = setup_task(d)
            code, reply, err = run(d, request(d, ("oracle", "eager", "compile")))
            self.assertEqual(code, 0, err)
            self.assertEqual(reply["status"], "ok")
            self.assertTrue(reply["oracle"]["ok"], reply["oracle"])
            out, _ = kt.read_file(os.path.join(d, "out.safetensors"))
            self.assertEqual(sorted(out), ["0/pos", "0/y", "1/pos", "1/y"])
            want = [2 * a + w[i % 3] for i, a in enumerate(x1)]
            got = torch.frombuffer(out["1/y"].data, dtype=torch.bfloat16).float().tolist()
            self.assertEqual(got, want)
            self.assertEqual(bytes(out["0/pos"].data), b"\x00\x00")
            self.assertEqual(bytes(out["1/pos"].data), b"\x01\x01")
            for mode in ("eager", "compile"):
                r = reply[mode]
                self.assertTrue(r["ok"], r)
                self.assertGreaterEqual(len(r["samples_ms"]), 1)
                self.assertIn(r["stop_reason"], ("converged", "max_samples", "time_cap"))
                self.assertGreater(r["summary"]["median_ms"], 0)
            self.assertGreater(reply["flush_bytes"], 0)
            self.assertIn("spec prints", err)

    def test_wrong_output_dtype_is_a_mode_error(self):
        with tempfile.TemporaryDirectory() as d:
            setup_task(d)
            req = request(d)
            req["outputs"][0]["dtype"] = "f32"
            code, reply, _ = run(d, req)
            self.assertEqual(code, 0)
            self.assertFalse(reply["oracle"]["ok"])
            self.assertIn("output `y` is torch.bfloat16", reply["oracle"]["error"])

    def test_broken_spec_is_a_spec_error(self):
        with tempfile.TemporaryDirectory() as d:
            setup_task(d)
            with open(os.path.join(d, "spec.py"), "w") as f:
                f.write("import torch\nclass Model(torch.nn.Module):\n    def __init__(self, Q):\n        pass\n")
            code, reply, _ = run(d, request(d))
            self.assertEqual(code, 4)
            self.assertIn("`Q`, which is not a task parameter", reply["message"])


if __name__ == "__main__":
    unittest.main()

"""torch_runner.py --serve: a session answering one request per stdin line, on stand-in torch.

What a session must get right beyond the one-shot runner: torch imported once, one reply line
per request in order (the exit code inside it), a failing request not ending the session, the
numerics flags one spec changes not leaking into the next request, and exit 0 on end of input.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

from tests.test_runner import RUNNER, bf16, request, setup_task

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_torch", "torch", "__init__.py")

# The CPU stand-in plus the process-wide flags the session restores, and a note on import.
FLAGGED_TORCH = '''
import importlib.util as _u
import sys as _sys
import types as _types

_spec = _u.spec_from_file_location("_standin_base", %r)
_base = _u.module_from_spec(_spec)
_spec.loader.exec_module(_base)
globals().update({k: v for k, v in vars(_base).items() if not k.startswith("__")})
__version__ = _base.__version__

backends = _types.SimpleNamespace(
    cuda=_types.SimpleNamespace(matmul=_types.SimpleNamespace(allow_tf32=False)),
    cudnn=_types.SimpleNamespace(allow_tf32=True, deterministic=False, benchmark=False),
)
_state = {"det": False, "dtype": "float32"}


def are_deterministic_algorithms_enabled():
    return _state["det"]


def use_deterministic_algorithms(v):
    _state["det"] = v


def get_default_dtype():
    return _state["dtype"]


def set_default_dtype(d):
    _state["dtype"] = d


_sys.stderr.write("STAND-IN TORCH IMPORTED\\n")
''' % FAKE

# Changes TF32 for everyone when imported.
MEDDLING_SPEC = '''
import torch

torch.backends.cuda.matmul.allow_tf32 = True
torch.use_deterministic_algorithms(True)


class Model(torch.nn.Module):
    def __init__(self, N):
        pass

    def forward(self, x, w):
        return x.clone(), w.clone()
'''

# Fails unless the flags are torch's defaults.
STRICT_SPEC = '''
import torch


class Model(torch.nn.Module):
    def __init__(self, N):
        pass

    def forward(self, x, w):
        assert torch.backends.cuda.matmul.allow_tf32 is False, "TF32 leaked from another spec"
        assert not torch.are_deterministic_algorithms_enabled(), "determinism leaked"
        return x.clone(), w.clone()
'''


# What a device-side assert does: the context is unusable from then on (stand-in torch only).
POISONING_SPEC = STRICT_SPEC.replace(
    "        return x.clone(), w.clone()",
    """        torch._cuda_state["broken"] = "CUDA error: device-side assert triggered"
        return x.clone(), w.clone()""")


class Session(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        pkg = os.path.join(self.d, "fake", "torch")
        os.makedirs(pkg)
        with open(os.path.join(pkg, "__init__.py"), "w") as f:
            f.write(FLAGGED_TORCH)
        self.env = dict(os.environ, PYTHONPATH=os.path.join(self.d, "fake"))

    def tearDown(self):
        self.tmp.cleanup()

    def task(self, name, spec):
        d = os.path.join(self.d, name)
        os.makedirs(d)
        x0, _, _ = setup_task(d)
        with open(os.path.join(d, "spec.py"), "w") as f:
            f.write(spec)
        req = request(d)
        req["outputs"][1] = {"name": "w2", "dtype": "bf16", "dims": [3]}
        path = os.path.join(d, "request.json")
        with open(path, "w") as f:
            json.dump(req, f)
        return path, x0

    def session(self, lines):
        p = subprocess.run([sys.executable, RUNNER, "--serve"], input="".join(lines),
                           capture_output=True, text=True, env=self.env, timeout=120)
        replies = [json.loads(line) for line in p.stdout.splitlines()]
        return p.returncode, replies, p.stderr

    def test_requests_are_answered_in_order_by_one_torch(self):
        meddle, x0 = self.task("meddle", MEDDLING_SPEC)
        strict, _ = self.task("strict", STRICT_SPEC)
        broken, _ = self.task("broken", "raise RuntimeError('spec is broken')\n")
        garbage = os.path.join(self.d, "garbage.json")
        with open(garbage, "w") as f:
            f.write("{not json")
        lines = [meddle + "\n", "\n", strict + "\n", broken + "\n", garbage + "\n",
                 strict + "\n"]
        code, replies, err = self.session(lines)
        self.assertEqual(code, 0, err)
        self.assertEqual(err.count("STAND-IN TORCH IMPORTED"), 1, err)
        self.assertEqual([(r["status"], r["exit"]) for r in replies],
                         [("ok", 0), ("ok", 0), ("spec_error", 4), ("bad_request", 2),
                          ("ok", 0)], replies)
        # The flags the first spec set did not reach the second.
        for r in (replies[1], replies[4]):
            self.assertTrue(r["oracle"]["ok"], r["oracle"])
        self.assertIn("spec is broken", replies[2]["message"])
        self.assertIn("garbage.json", replies[3]["message"])
        # Each request's outputs are its own.
        import ksmith_tensors as kt

        out, _ = kt.read_file(os.path.join(self.d, "meddle", "out.safetensors"))
        self.assertEqual(bytes(out["0/y"].data), b"".join(bf16(v) for v in x0))

    def test_a_broken_cuda_context_ends_the_session_after_its_reply(self):
        poison, _ = self.task("poison", POISONING_SPEC)
        strict, _ = self.task("strict", STRICT_SPEC)
        code, replies, err = self.session([strict + "\n", poison + "\n", strict + "\n"])
        self.assertEqual([r["status"] for r in replies], ["ok", "ok"], replies)
        self.assertNotIn("session_ends", replies[0])
        self.assertTrue(replies[1]["oracle"]["ok"], replies[1])
        self.assertIn("device-side assert triggered", replies[1]["session_ends"])
        self.assertEqual(code, 3, err)
        self.assertIn("the CUDA context is unusable", err)

    def test_a_session_without_torch_answers_unavailable_each_time(self):
        with open(os.path.join(self.d, "fake", "torch", "__init__.py"), "w") as f:
            f.write("raise ImportError('No module named torch (stand-in)')\n")
        path, _ = self.task("t", STRICT_SPEC)
        code, replies, err = self.session([path + "\n", path + "\n"])
        self.assertEqual(code, 0, err)
        self.assertEqual([r["status"] for r in replies], ["unavailable", "unavailable"])
        self.assertIn("torch does not import", replies[0]["reason"])
        self.assertTrue(all(r["exit"] == 3 for r in replies))

    def test_usage(self):
        p = subprocess.run([sys.executable, RUNNER, "--serve", "extra"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--serve", json.loads(p.stdout)["message"])


# The repository's CPU torch (scripts/setup.sh --with-torch), for when this Python has none.
REPO_TORCH = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tools", "torch"))
_REAL_TORCH_ENV = []


def real_torch_env():
    """An environment whose python3 imports torch itself (not a stand-in) with the fp32_precision
    API of torch >= 2.9 (this Python's, else tools/torch), or None."""
    if not _REAL_TORCH_ENV:
        probe = ("import torch, sys; sys.exit(0 if 'standin' not in torch.__version__ and "
                 "hasattr(torch.backends.cuda.matmul, 'fp32_precision') else 1)")
        found = None
        for extra in (None, REPO_TORCH):
            env = dict(os.environ)
            if extra:
                if not os.path.isdir(os.path.join(extra, "torch")):
                    continue
                env["PYTHONPATH"] = os.pathsep.join(
                    p for p in (extra, env.get("PYTHONPATH")) if p)
            p = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                               timeout=300)
            if p.returncode == 0:
                found = env
                break
        _REAL_TORCH_ENV.append(found)
    return _REAL_TORCH_ENV[0]


def real_module(spec):
    return spec.replace("    def __init__(self, N):\n        pass",
                        "    def __init__(self, N):\n        super().__init__()")


# Module-level numerics changes through both TF32 APIs of torch >= 2.9.
MATMUL_PRECISION_SPEC = MEDDLING_SPEC.replace(
    "torch.backends.cuda.matmul.allow_tf32 = True",
    'torch.set_float32_matmul_precision("high")')
NEW_API_SPEC = MEDDLING_SPEC.replace(
    "torch.backends.cuda.matmul.allow_tf32 = True",
    'torch.backends.cuda.matmul.fp32_precision = "tf32"\n'
    'torch.backends.fp32_precision = "tf32"\n'
    'torch.backends.cudnn.conv.fp32_precision = "ieee"')
# Every getter of both APIs works and reads torch's defaults.
PRECISION_STRICT_SPEC = STRICT_SPEC.replace(
    "        return x.clone(), w.clone()",
    """        assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32 is True
        assert torch.backends.fp32_precision == "none"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        return x.clone(), w.clone()""")


class RealTorchFlags(unittest.TestCase):
    """The flags a spec sets through either TF32 API of a real torch are undone for the next
    request (on the CPU: device "cpu", the oracle alone)."""

    session = Session.session

    def setUp(self):
        self.env = real_torch_env()
        if self.env is None:
            self.skipTest("needs torch >= 2.9 (this Python's, or tools/torch)")
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def task(self, name, spec):
        path, x0 = Session.task(self, name, real_module(spec))
        with open(path) as f:
            req = json.load(f)
        req["device"] = "cpu"
        with open(path, "w") as f:
            json.dump(req, f)
        return path, x0

    def test_either_tf32_api_is_undone(self):
        strict, _ = self.task("strict", PRECISION_STRICT_SPEC)
        prec, _ = self.task("prec", MATMUL_PRECISION_SPEC)
        new, _ = self.task("new", NEW_API_SPEC)
        code, replies, err = self.session([strict + "\n", prec + "\n", strict + "\n",
                                           new + "\n", strict + "\n"])
        self.assertEqual(code, 0, err)
        self.assertEqual([r["status"] for r in replies], ["ok"] * 5, replies)
        for r in replies:
            self.assertTrue(r["oracle"]["ok"], r["oracle"])

    def test_reported_tf32_reads_either_api(self):
        # After the new API, `allow_tf32` raises; the reply's tf32_* fields still read.
        code = (
            "import torch, torch_runner as tr\n"
            "mm = lambda: tr.tf32_enabled(torch, lambda: torch.backends.cuda.matmul.allow_tf32,"
            " 'cuda.matmul')\n"
            "print(mm())\n"
            "torch.backends.fp32_precision = 'tf32'\n"
            "print(mm())\n"
            "torch.backends.cuda.matmul.fp32_precision = 'ieee'\n"
            "print(mm())\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=self.env, cwd=os.path.dirname(RUNNER), timeout=120)
        self.assertEqual(p.stdout.split(), ["False", "True", "False"], p.stderr)


if __name__ == "__main__":
    unittest.main()

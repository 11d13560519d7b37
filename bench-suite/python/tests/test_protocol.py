"""ksmith_protocol without torch: statistics identical to verifier::timing, the stopping rules,
the measuring loop on a fake clock, and request validation."""

import copy
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ksmith_protocol import (  # noqa: E402
    Protocol,
    Request,
    RequestError,
    constructor_kwargs,
    measure,
    quantile_sorted,
    summary,
)

GOOD = {
    "version": 1,
    "spec": "/t/spec.py",
    "params": {"M": 4, "N": 8},
    "inputs_file": "/t/in.safetensors",
    "outputs_file": "/t/out.safetensors",
    "inputs": [{"name": "x", "dtype": "bf16"}, {"name": "g", "dtype": "f32", "role": "weight"}],
    "sets": [{"x": "0/x", "g": "0/g"}, {"x": "1/x", "g": "0/g"}],
    "outputs": [{"name": "y", "dtype": "bf16", "dims": [4, 8]}],
    "modes": ["oracle", "eager"],
    "protocol": {"warmup_calls": 10, "warmup_ms": 25, "min_samples": 10, "max_samples": 100,
                 "target_rse": 0.005, "time_cap_ms": 10000, "graph_below_ms": 0.02},
}


class StatsTests(unittest.TestCase):
    def test_quantiles_match_numpy_linear(self):
        s = [1.0, 2.0, 3.0, 4.0, 10.0]
        self.assertEqual(quantile_sorted(s, 0.5), 3.0)
        self.assertAlmostEqual(quantile_sorted(s, 0.2), 1.8)
        self.assertAlmostEqual(quantile_sorted(s, 0.8), 5.2)
        self.assertIsNone(quantile_sorted([], 0.5))
        self.assertIsNone(quantile_sorted(s, 1.5))

    def test_summary_matches_the_rust_definition(self):
        s = summary([4.0, 1.0, 3.0, 2.0])
        self.assertEqual((s["n"], s["min_ms"], s["max_ms"], s["median_ms"]), (4, 1.0, 4.0, 2.5))
        self.assertAlmostEqual(s["stddev_ms"], math.sqrt(5.0 / 3.0))
        self.assertAlmostEqual(s["rse"], math.sqrt(5.0 / 3.0) / 2.0 / 2.5)
        self.assertIsNone(summary([]))
        self.assertIsNone(summary([1.0, float("nan")]))
        self.assertIsNone(summary([1.0, -2.0]))
        self.assertTrue(math.isinf(summary([1.0])["rse"]))

    def test_stopping_rules_match_the_rust_tests(self):
        p = Protocol()
        steady = [1.0] * 10
        self.assertEqual(p.stop(steady, 0), "converged")
        self.assertIsNone(p.stop(steady[:9], 0))
        noisy = [1.0 if i % 2 == 0 else 2.0 for i in range(50)]
        self.assertIsNone(p.stop(noisy, 0))
        self.assertEqual(p.stop(noisy, 11_000), "time_cap")
        self.assertIsNone(p.stop([], 11_000), "at least one sample")
        self.assertEqual(p.stop([1.0 + i % 7 for i in range(100)], 0), "max_samples")
        self.assertFalse(p.warm_enough(9, 1000))
        self.assertFalse(p.warm_enough(100, 1))
        self.assertTrue(p.warm_enough(10, 25))


class FakeClock:
    """Each sample advances time by its own duration plus 1 ms of untimed work."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class MeasureTests(unittest.TestCase):
    def run_with(self, times, protocol):
        clock = FakeClock()
        seq = iter(times)

        def sample():
            ms = next(seq)
            clock.t += (ms + 1.0) / 1e3
            return ms

        return measure(sample, protocol, clock)

    def test_warmup_then_converges(self):
        r = self.run_with([5.0] * 1000, Protocol())
        # 10 calls of 6 ms each pass both warm-up rules (>= 10 calls, >= 25 ms).
        self.assertEqual(r["warmup_calls"], 10)
        self.assertEqual(r["stop_reason"], "converged")
        self.assertEqual(len(r["samples_ms"]), 10)
        self.assertEqual(r["summary"]["median_ms"], 5.0)

    def test_short_calls_warm_up_for_the_time_rule(self):
        r = self.run_with([0.5] * 1000, Protocol())
        self.assertEqual(r["warmup_calls"], 17, "17 x 1.5 ms >= 25 ms")

    def test_noisy_samples_run_to_max(self):
        r = self.run_with([1.0 if i % 2 else 3.0 for i in range(1000)], Protocol(time_cap_ms=1e9))
        self.assertEqual(r["stop_reason"], "max_samples")
        self.assertEqual(len(r["samples_ms"]), 100)

    def test_time_cap_bounds_warmup_and_sampling(self):
        p = Protocol(time_cap_ms=50.0)
        r = self.run_with([20.0 + (i % 3) for i in range(1000)], p)
        self.assertLessEqual(r["warmup_calls"], 3)
        self.assertEqual(r["stop_reason"], "time_cap")
        self.assertGreaterEqual(len(r["samples_ms"]), 1)

    def test_a_broken_timer_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "nan"):
            self.run_with([float("nan")] * 100, Protocol(warmup_calls=0, warmup_ms=0))


class RequestTests(unittest.TestCase):
    def test_good_request(self):
        r = Request(copy.deepcopy(GOOD))
        self.assertEqual([d["role"] for d in r.inputs], ["activation", "weight"])
        self.assertEqual(r.oracle_sets, [0, 1])
        self.assertEqual(r.protocol.warmup_calls, 10)
        self.assertEqual(r.compile_mode, "default")

    def assert_bad(self, mutate, needle):
        obj = copy.deepcopy(GOOD)
        mutate(obj)
        with self.assertRaises(RequestError) as cm:
            Request(obj)
        self.assertIn(needle, str(cm.exception))

    def test_bad_requests_name_the_field(self):
        self.assert_bad(lambda o: o.update(version=2), "request.version")
        self.assert_bad(lambda o: o.pop("spec"), "`request.spec` is missing")
        self.assert_bad(lambda o: o.update(spec=3), "`request.spec` has the wrong type")
        self.assert_bad(lambda o: o["params"].update(M="4"), "request.params.M")
        self.assert_bad(lambda o: o["params"].update(M=True), "request.params.M")
        self.assert_bad(lambda o: o["inputs"][0].update(dtype="f128"), "request.inputs[0].dtype")
        self.assert_bad(lambda o: o["inputs"][1].update(role="bias"), "request.inputs[1].role")
        self.assert_bad(lambda o: o["sets"][1].pop("g"), "`request.sets[1]` has no tensor for input(s) g")
        self.assert_bad(lambda o: o.update(sets=[]), "request.sets")
        self.assert_bad(lambda o: o["outputs"][0].update(dims=[4, -1]), "request.outputs[0].dims")
        self.assert_bad(lambda o: o.update(outputs=[]), "request.outputs")
        self.assert_bad(lambda o: o.update(modes=["fast"]), "request.modes")
        self.assert_bad(lambda o: o.update(oracle_sets=[2]), "request.oracle_sets")
        self.assert_bad(lambda o: o["protocol"].pop("target_rse"), "protocol.target_rse")
        self.assert_bad(lambda o: o["protocol"].update(max_samples=2.5), "protocol.max_samples")
        self.assert_bad(lambda o: o["protocol"].update(warmup_ms=-1), "protocol.warmup_ms")
        self.assert_bad(lambda o: o.update(protocol=None), "protocol")
        self.assert_bad(lambda o: o.update(l2_bytes="big"), "request.l2_bytes")
        with self.assertRaisesRegex(RequestError, "not a JSON object"):
            Request([1, 2])

    def test_oracle_only_needs_no_protocol(self):
        obj = copy.deepcopy(GOOD)
        obj["modes"] = ["oracle"]
        del obj["protocol"]
        self.assertEqual(Request(obj).protocol.max_samples, 100)

    def test_constructor_kwargs(self):
        self.assertEqual(constructor_kwargs([("K", False)], {"K": 8, "T": 3}), {"K": 8})
        self.assertEqual(constructor_kwargs([("eps", True)], {"K": 8}), {})
        with self.assertRaisesRegex(RequestError, "`E`, which is not a task parameter"):
            constructor_kwargs([("E", False)], {"K": 8})


if __name__ == "__main__":
    unittest.main()

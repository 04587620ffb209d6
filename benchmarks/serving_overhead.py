"""The serving harness's own cost: MLPerf LoadGen + our dynamic batcher around a no-op engine.

    .venv/bin/python benchmarks/serving_overhead.py            # ~1 min
    .venv/bin/python benchmarks/serving_overhead.py --quick    # ~20 s

Reports (issue 13): the Offline samples/s of a no-op engine and the per-query time it implies
(the ceiling of any QPS this harness can measure), the latency of a lightly loaded Server run,
and the highest Server QPS LoadGen judges VALID at a 1 ms p99 (and at --bound-ms). Then, for
fake engines of known service time, the service time LoadGen measures per request at
saturation against the nominal one: the gap is the per-batch cost an engine's QPS includes.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paretotune.evaluators.serving import BatcherConfig, Offline, measure_serving  # noqa: E402
from paretotune.evaluators.serving.fake import FakeEngine  # noqa: E402
from paretotune.evaluators.serving.overhead import loadgen_overhead  # noqa: E402


def fake_engine_gaps(service_ms: list[float], budget_s: float) -> list[dict[str, float | str]]:
    inputs = {"x": np.zeros((64, 1), dtype=np.float32)}
    rows = []
    for ms in service_ms:
        for busy in (False, True):
            result = measure_serving(
                lambda ms=ms, busy=busy: FakeEngine(ms, busy=busy),
                inputs,
                Offline(budget_s=budget_s),
                BatcherConfig(),
            )
            if result.offline_qps is None:
                raise SystemExit(f"no offline_qps for the {ms:g} ms fake engine: {result.details}")
            measured = 1000.0 / result.offline_qps
            rows.append(
                {
                    "engine": f"{'spin' if busy else 'wait'} {ms:g} ms",
                    "offline_qps": round(result.offline_qps, 1),
                    "ms_per_request": round(measured, 4),
                    "gap_us": round((measured - ms) * 1000, 1),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~20 s)")
    parser.add_argument(
        "--bound-ms", type=float, default=5.0, help="a second p99 bound to search at"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run_s, budget = (1.0, 8.0) if args.quick else (3.0, 25.0)
    started = time.perf_counter()
    tight = loadgen_overhead(p99_ms=1.0, budget_s=budget, run_s=run_s)
    loose = loadgen_overhead(p99_ms=args.bound_ms, budget_s=budget, run_s=run_s)
    gaps = fake_engine_gaps([1.0, 2.0], budget_s=3.0 if args.quick else 6.0)
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "noop_at_1ms": tight,
        f"noop_at_{args.bound_ms:g}ms": loose,
        "fake_engines": gaps,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(f"LoadGen {tight['loadgen_version']}, no-op engine, 1 instance, no batching")
    print(
        f"  offline: {tight['offline_noop_qps']:.0f} samples/s = {tight['per_query_us']:.1f} us/query"
    )
    idle = tight["idle_latency_ms"]
    print(
        f"  server at {tight['idle_qps']:g} QPS: p50 {idle['p50']:.3f} ms, p99 {idle['p99']:.3f} ms, "
        f"max {idle['max']:.3f} ms"
    )
    for label, r in (("1 ms", tight), (f"{args.bound_ms:g} ms", loose)):
        print(
            f"  highest VALID server QPS at p99 <= {label}: {r['server_noop_qps']} "
            f"(p99 {r['server_noop_p99_ms']} ms, converged {r.get('server_converged')})"
            + (f" - {r['server_error']}" if "server_error" in r else "")
        )
    print("fake engines, offline, batch 1: LoadGen's ms per request against the nominal")
    for row in gaps:
        print(f"  {row['engine']:>12}: {row['ms_per_request']:.3f} ms ({row['gap_us']:+.0f} us)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

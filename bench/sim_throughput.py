"""Benchmark: how fast `tinyexit sim` runs the firmware under QEMU, against QEMU's own speed.

Prints, measured side by side in one run on MLPerf Tiny's KWS reference model (qemu-m4, one build):
  - QEMU's raw instruction rate on compute only: the model's inference (its instruction count from the firmware,
    -icount) over the wall time of an INFER request minus that of the same frame with a broken checksum, which
    the firmware reads whole and rejects without computing (so the UART transfer cancels out)
  - `tinyexit sim` per-sample throughput (serial protocol, one request per sample) in emulated instructions per
    wall second, one instance (--jobs 1)
  - the speed-up of --jobs 2 over --jobs 1 (two QEMU instances over the two halves of the inputs)

Usage: python bench/sim_throughput.py [--samples N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kws_reference import inputs  # noqa: E402
from tinyexit.firmware_build import build  # noqa: E402
from tinyexit.harness import INFER, firmware, frame  # noqa: E402
from tinyexit.paths import shared_datasets  # noqa: E402
from tinyexit.sim import available_cores, run_parallel  # noqa: E402

TARGET = "qemu-m4"


def raw_rate(binary: Path, x: np.ndarray, repeats: int) -> tuple[float, int, float, float]:
    """(instructions per wall second of compute, instructions per inference, s per INFER, s per bad frame)."""
    good = frame(INFER, bytes([0]) + x.tobytes())
    bad = good[:-2] + bytes([good[-2] ^ 0xFF, good[-1]])  # same length, checksum broken
    with firmware(TARGET, binary) as dev:
        instructions = sum(dev.infer(x, with_output=False).stage_cycles)
        infer_s, reject_s = [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            start = time.perf_counter()
            dev.link.write(good)
            dev.read_frame()
            infer_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            dev.link.write(bad)
            dev.read_frame()
            reject_s.append(time.perf_counter() - start)
            assert dev.infer(x, with_output=False).stage_cycles  # the link is still in step after the error
    infer, reject = min(infer_s), min(reject_s)  # the least disturbed of each on a shared machine
    return instructions / max(infer - reject, 1e-9), instructions, infer, reject


def sim_run(binary: Path, x: np.ndarray, jobs: int) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    result, summary, _ = run_parallel(TARGET, binary, x, None, TARGET, jobs, progress=False)
    return time.perf_counter() - start, result, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200, help="kws01 inputs run through `tinyexit sim` (default 200)")
    ap.add_argument("--repeats", type=int, default=20, help="INFER / rejected-frame pairs timed (default 20)")
    args = ap.parse_args()
    model = shared_datasets() / "models" / "mlperf_kws_ref_model_int8.tflite"
    x = inputs(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        fw = build(model, TARGET, tmp)
        rate, per_inference, infer_s, reject_s = raw_rate(fw.binary, x[0], args.repeats)
        runs = {jobs: sim_run(fw.binary, x, jobs) for jobs in (1, 2)}
    (t1, r1, s1), (t2, r2, s2) = runs[1], runs[2]
    same = all(np.array_equal(r1[k], r2[k]) for k in r1) and s1 == s2
    # every sample's inference plus the no-exit pass on the first 20 (run_samples), all emulated
    emulated = int(r1["instructions"].sum()) + s1["instructions_no_exit"] * min(len(x), 20)
    rows = [
        ("model", f"MLPerf KWS reference (int8), {TARGET}, {per_inference:,} instructions per inference"),
        ("QEMU raw rate (compute only)", f"{rate / 1e6:,.1f} M instructions/s "
                                         f"(INFER {infer_s * 1e3:.1f} ms - rejected frame {reject_s * 1e3:.1f} ms)"),
        ("tinyexit sim --jobs 1", f"{emulated / t1 / 1e6:,.1f} M instructions/s, {len(x) / t1:,.1f} samples/s "
                                  f"({len(x)} samples in {t1:.1f} s) = {emulated / t1 / rate:.0%} of raw"),
        ("tinyexit sim --jobs 2", f"{emulated / t2 / 1e6:,.1f} M instructions/s, {len(x) / t2:,.1f} samples/s "
                                  f"({t2:.1f} s)"),
        ("speed-up --jobs 2 / --jobs 1", f"{t1 / t2:.2f}x on {available_cores()} core(s) available"),
        ("--jobs 2 results identical", "yes" if same else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

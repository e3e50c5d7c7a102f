"""Benchmark: how fast `tinyexit sim` runs the firmware under QEMU, against QEMU's own speed.

Prints, measured side by side in one run (qemu-m4, one build; default MLPerf Tiny's KWS reference model on the
1,000 kws01 inputs):
  - QEMU's raw instruction rate on compute only: one QEMU runs the same sample back to back inside the firmware
    (BATCH requests of K and of 2K copies, alternated, the least disturbed of each); the rate is K inferences'
    instructions over the time 2K take beyond K, so start-up, the request and reading the results cancel out
    and what is left is the firmware's loop over samples: the inference itself, plus one semihosting read of
    the sample and 1/18 of a result write, which take microseconds against milliseconds of compute. Measured
    before and after the `tinyexit sim` runs; the percentages use the higher of the two.
    For comparison, the earlier estimate: an INFER request minus the same frame with a broken checksum
    (which the firmware reads whole and rejects), noisy on a loaded machine.
  - `tinyexit sim` (sim.run_parallel, what every caller runs) per sample (--protocol serial: one INFER each
    over the emulated UART) and in batch mode (the default), one job, in emulated instructions per wall
    second (every sample plus the no-exit pass, QEMU start-up and reading the results included) and as % of raw
  - the speed-up of --jobs 2 over --jobs 1 in batch mode, and whether all the results are identical

Usage: python bench/sim_throughput.py [--samples N] [--serial-samples N] [--model X.tflite]
A --model with a 96x96x3 input (e.g. MLPerf's VWW MobileNet converted to int8) runs on the vww01 images
(uint8 - 128 as int8; the values only steer the model, not the rate).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyexit.firmware_build import build  # noqa: E402
from tinyexit.harness import INFER, firmware, frame  # noqa: E402
from tinyexit.paths import shared_datasets  # noqa: E402
from tinyexit.cluster import available_cores  # noqa: E402
from tinyexit.sim import NO_EXIT_SAMPLES, run_parallel  # noqa: E402

TARGET = "qemu-m4"


def dataset_inputs(name: str, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """The first n inputs of kws01 (int8 features) or vww01 (uint8 images as int8, x - 128), in label-file order."""
    with tarfile.open(shared_datasets() / name / f"mlperf_{name}01.tar.xz") as tar:
        files = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    rows = [r for r in csv.reader(io.StringIO(files["y_labels.csv"].decode())) if r][:n]
    if name == "kws":
        return np.stack([np.frombuffer(files[r[0]], np.int8).reshape(shape) for r in rows])
    return np.stack([(np.frombuffer(files[r[0]], np.uint8).astype(np.int16) - 128).astype(np.int8).reshape(shape)
                     for r in rows])


def raw_rate(binary: Path, x: np.ndarray, copies: int, repeats: int) -> tuple[float, int, float]:
    """(instructions per wall second of compute, instructions per inference, s per inference): BATCH of
    `copies` and of 2 x `copies` of the same sample in one QEMU, alternated; least disturbed of each."""
    with firmware(TARGET, binary) as dev:
        dev.write_batch_inputs([np.repeat(x[None], 2 * copies, axis=0)])
        instructions = sum(dev.batch(0, 1, with_output=False)[0].stage_cycles)
        times = {copies: [], 2 * copies: []}
        for _ in range(repeats):
            for count in times:
                start = time.perf_counter()
                runs = dev.batch(0, count, with_output=False, seconds_per_sample=0.1)
                times[count].append(time.perf_counter() - start)
                assert all(sum(r.stage_cycles) == instructions for r in runs)  # -icount: every copy the same
    per_inference = (min(times[2 * copies]) - min(times[copies])) / copies
    return instructions / max(per_inference, 1e-9), instructions, per_inference


def frame_difference_rate(binary: Path, x: np.ndarray, repeats: int) -> float:
    """The earlier estimate: instructions over (INFER time - time of the same frame rejected for its checksum)."""
    good = frame(INFER, bytes([0]) + x.tobytes())
    bad = good[:-2] + bytes([good[-2] ^ 0xFF, good[-1]])  # same length, checksum broken
    with firmware(TARGET, binary) as dev:
        instructions = sum(dev.infer(x, with_output=False).stage_cycles)
        infer_s, reject_s = [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            for data, times in ((good, infer_s), (bad, reject_s)):
                start = time.perf_counter()
                dev.link.write(data)
                dev.read_frame()
                times.append(time.perf_counter() - start)
    difference = min(infer_s) - min(reject_s)
    return instructions / difference if difference > 0 else float("nan")


def sim_run(binary: Path, x: np.ndarray, jobs: int, protocol: str) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    result, summary, _ = run_parallel(TARGET, binary, x, None, TARGET, jobs, progress=False, protocol=protocol)
    return time.perf_counter() - start, result, summary


def emulated(result: dict, summary: dict) -> float:
    """Instructions run: every sample's inference plus the no-exit pass on the first samples (run_samples)."""
    return int(result["instructions"].sum()) + summary["instructions_no_exit"] * min(len(result["exit"]), NO_EXIT_SAMPLES)


def same(a: tuple, b: tuple) -> bool:
    """b's per-sample results are a's first ones, and the no-exit pass (first samples) measured the same; with
    as many samples, the whole summary is the same."""
    (_, ra, sa), (_, rb, sb) = a, b
    n = len(rb["exit"])
    per_sample = all(np.array_equal(ra[k][:n], rb[k]) for k in rb)
    keys = tuple(sa) if n == len(ra["exit"]) else ("instructions_no_exit", "stage_instructions")
    return per_sample and sorted(ra) == sorted(rb) and all(sa[k] == sb[k] for k in keys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000, help="inputs run in batch mode (default 1000)")
    ap.add_argument("--serial-samples", type=int, default=200,
                    help="the first inputs also run per sample over the serial link (default 200)")
    ap.add_argument("--model", type=Path, help="a .tflite (default: MLPerf's KWS reference model on kws01)")
    ap.add_argument("--copies", type=int, default=40, help="K of the raw-rate measurement (default 40)")
    ap.add_argument("--repeats", type=int, default=3, help="raw-rate measurement pairs (default 3)")
    args = ap.parse_args()
    model = args.model or shared_datasets() / "models" / "mlperf_kws_ref_model_int8.tflite"
    with tempfile.TemporaryDirectory() as tmp:
        fw = build(model, TARGET, tmp)
        name = "vww" if fw.input_sizes[0] == 96 * 96 * 3 else "kws"
        x = dataset_inputs(name, args.samples, (-1,) if name == "kws" else (96, 96, 3)).reshape(args.samples, -1)
        raw_before, per_inference, _ = raw_rate(fw.binary, x[0], args.copies, args.repeats)
        older = frame_difference_rate(fw.binary, x[0], max(args.repeats, 5))
        serial = sim_run(fw.binary, x[:args.serial_samples], 1, "serial")
        batch = {jobs: sim_run(fw.binary, x, jobs, "batch") for jobs in (1, 2)}
        raw_after, _, _ = raw_rate(fw.binary, x[0], args.copies, args.repeats)
    raw = max(raw_before, raw_after)
    identical_jobs = same(batch[1], batch[2])
    identical_protocols = same(batch[1], serial)

    def speed(run) -> float:
        t, result, summary = run
        return emulated(result, summary) / t

    def rate(run) -> str:
        t, result, _ = run
        ips = speed(run)
        return (f"{ips / 1e6:,.1f} M instructions/s = {ips / raw:.0%} of raw, {len(result['exit']) / t:,.1f} "
                f"samples/s ({len(result['exit'])} samples in {t:.1f} s)")

    rows = [
        ("model", f"{model.name}, {TARGET}, {per_inference:,} instructions per inference, {len(x)} {name}01 inputs"),
        ("QEMU raw rate (compute only)", f"{raw / 1e6:,.1f} M instructions/s ({per_inference / raw * 1e3:.1f} ms per inference; "
                                         f"before {raw_before / 1e6:,.1f}, after {raw_after / 1e6:,.1f})"),
        ("  earlier estimate (INFER - rejected frame)", f"{older / 1e6:,.1f} M instructions/s"),
        ("tinyexit sim --protocol serial --jobs 1", rate(serial)),
        ("tinyexit sim (batch) --jobs 1", rate(batch[1])),
        ("tinyexit sim (batch) --jobs 2", rate(batch[2])),
        ("speed-up batch / serial, --jobs 1", f"{speed(batch[1]) / speed(serial):.1f}x"),
        ("speed-up --jobs 2 / --jobs 1 (batch)", f"{batch[1][0] / batch[2][0]:.2f}x on {available_cores()} core(s) available"),
        ("results identical", f"--jobs 2 vs 1: {'yes' if identical_jobs else 'NO'}; batch vs serial "
                              f"(first {args.serial_samples}): {'yes' if identical_protocols else 'NO'}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0 if identical_jobs and identical_protocols else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: MLPerf Tiny's KWS reference model (DS-CNN) through the tinyexit firmware vs TFLite Micro.

Prints, measured side by side in one run:
  - qemu-m4 instructions per inference and per MAC, portable C kernels vs the Cortex-M DSP (SMLAD) kernels
    (-icount, so counts repeat), and the DSP build's instructions per MAC by layer kind (PROFILE)
  - flash: the DSP firmware's text + data, its weights and biases as the DSP kernels store them (and their
    requantization constants) beside the same tensors as plain int8 + int32
  - peak activation bytes of the firmware's static plan vs TFLite Micro's arena (its allocation report)
  - host inferences per second: firmware host build over its protocol vs TFLite Micro's Python interpreter

Usage: python bench/kws_reference.py [--samples N]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyexit.firmware_build import build  # noqa: E402
from tinyexit.harness import firmware  # noqa: E402
from tinyexit.paths import shared_datasets  # noqa: E402

MACS = 2_656_768


def inputs(n: int) -> np.ndarray:
    with tarfile.open(shared_datasets() / "kws" / "mlperf_kws01.tar.xz") as tar:
        bins = sorted((m for m in tar if m.name.endswith(".bin")), key=lambda m: m.name)[:n]
        return np.stack([np.frombuffer(tar.extractfile(m).read(), np.int8) for m in bins])


def tflm_arena_bytes(model: bytes) -> int:
    """TFLite Micro's own report of its arena use (printed from C++)."""
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model)
    it.set_input(np.zeros((1, 49, 10, 1), np.int8), 0)
    it.invoke()
    with tempfile.TemporaryFile() as log:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            it.print_allocations()
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        log.seek(0)
        text = log.read().decode()
    return int(re.search(r"Arena allocation total (\d+) bytes", text).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    model = shared_datasets() / "models" / "mlperf_kws_ref_model_int8.tflite"
    x = inputs(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        counts = {}
        for kernels in ("portable", "dsp"):
            m4 = build(model, "qemu-m4", Path(tmp) / kernels, kernels=kernels)
            with firmware("qemu-m4", m4.binary) as dev:
                counts[kernels] = [sum(dev.infer(v, with_output=False).stage_cycles) for v in x[:10]]
                if kernels == "dsp":
                    profile = dev.infer(x[0], profile=True).layer_cycles
        host = build(model, "host", Path(tmp) / "host")
        with firmware("host", host.binary) as dev:
            start = time.perf_counter()
            for v in x:
                dev.infer(v, with_output=False)
            host_rate = len(x) / (time.perf_counter() - start)
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model.read_bytes())
    start = time.perf_counter()
    for v in x:
        it.set_input(v.reshape(1, 49, 10, 1), 0)
        it.invoke()
        it.get_output(0)
    tflm_rate = len(x) / (time.perf_counter() - start)
    arena = tflm_arena_bytes(model.read_bytes())
    portable, dsp = (float(np.mean(counts[k])) for k in ("portable", "dsp"))
    print(f"MLPerf KWS DS-CNN, {MACS:,} MACs")
    print(f"qemu-m4 instructions per inference: portable kernels {portable:,.0f} ({portable / MACS:.2f} per MAC), "
          f"DSP kernels {dsp:,.0f} ({dsp / MACS:.3f} per MAC) -> DSP / portable {dsp / portable:.3f}")
    print(f"  TFLite Micro on the same emulator (FACTS.md, not re-measured here): reference kernels 42.18 M "
          f"(15.9/MAC), CMSIS-NN 7.58 M (2.85/MAC) -> DSP kernels vs CMSIS-NN {dsp / 7.58e6:.3f}")
    kinds: dict[str, list[int]] = {}  # kind -> [instructions, MACs]
    for i, (layer, count) in enumerate(zip(m4.layers, profile)):
        kind = {"CONV_2D": "1x1 pointwise" if i else "first conv (10x4)", "DEPTHWISE_CONV_2D": "3x3 depthwise",
                "FULLY_CONNECTED": "dense"}.get(layer["op"], "pooling, reshape, softmax")
        kinds.setdefault(kind, [0, 0])
        kinds[kind][0] += count
        kinds[kind][1] += layer["macs"]
    print("  DSP kernels by layer kind (PROFILE): " + ", ".join(
        f"{kind} {n / macs:.3f}/MAC" if macs else f"{kind} {n:,} instructions" for kind, (n, macs) in kinds.items()))
    stored = sum(layer.get("dsp_weight_bytes", 0) for layer in m4.layers)
    requant = sum(layer.get("dsp_requantization_bytes", 0) for layer in m4.layers)
    int8 = sum(layer.get("int8_weight_bytes", 0) for layer in m4.layers)
    flash = m4.memory.get("flash_bytes", 0)
    print(f"flash: DSP firmware {flash:,} B (text + data); weights and biases as stored {stored:,} B "
          f"(+ requantization constants {requant:,} B) vs plain int8 + int32 {int8:,} B")
    print(f"peak activation bytes: firmware {m4.arena_bytes:,} vs TFLite Micro arena {arena:,} "
          f"-> ratio {m4.arena_bytes / arena:.3f}")
    print(f"host inferences/s: firmware {host_rate:,.0f} (incl. protocol round trip) vs TFLite Micro Python "
          f"{tflm_rate:,.0f} -> ratio {host_rate / tflm_rate:.2f}")


if __name__ == "__main__":
    main()

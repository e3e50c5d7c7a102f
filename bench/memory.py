"""Benchmark: what each model takes in memory, firmware vs TFLite Micro.

For the MLPerf KWS reference model, the shipped example (examples/har-tiny/export) and our own exports if
they are there (out/har/export, out/kws/export, out/vww/export): the build's memory report (build.json:
activation arena, stack high-water mark measured on the target after a few inferences, RAM, flash,
weights as stored and as plain int8) beside TFLite Micro's arena (its allocation report: total, and the
activation "head"; a staged export: its largest stage). The ratio is our arena over TFLite Micro's total.

Usage: python bench/memory.py [--target qemu-m4] [--samples 3] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tinyexit.firmware_build import build, with_stack, write_memory_report  # noqa: E402
from tinyexit.harness import firmware  # noqa: E402
from tinyexit.paths import shared_datasets  # noqa: E402

OUR_EXPORTS = ["out/har/export", "out/kws/export", "out/vww/export"]


def default_models() -> list[Path]:
    models = [shared_datasets() / "models" / "mlperf_kws_ref_model_int8.tflite", ROOT / "examples" / "har-tiny" / "export"]
    return [m for m in models if m.exists()] + [ROOT / m for m in OUR_EXPORTS if (ROOT / m / "manifest.json").is_file()]


def stage_files(model: Path) -> list[Path]:
    """The .tflite files TFLite Micro would run one at a time: the stages of an export, or the file itself."""
    if model.is_file():
        return [model]
    stages = sorted(model.glob("stage_*.tflite"))
    return stages or sorted(model.glob("*.tflite"))[:1]


def tflm_allocations(path: Path) -> tuple[int, int]:
    """TFLite Micro's arena (total, head = activations) from its allocation report (printed from C++)."""
    from tflite_micro.python.tflite_micro import runtime

    from tinyexit.tflite_graph import Graph

    arena = 2 * sum(t.nbytes for t in Graph.load(path).tensors if not t.is_constant) + 64 * 1024
    it = runtime.Interpreter.from_bytes(path.read_bytes(), arena_size=arena)
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
    total = int(re.search(r"Arena allocation total (\d+) bytes", text).group(1))
    head = int(re.search(r"Arena allocation head (\d+) bytes", text).group(1))
    return total, head


def measure(model: Path, target: str, samples: int, work: Path) -> dict:
    fw = build(model, target, work)
    memory = fw.memory
    if samples and target != "host":
        rng = np.random.default_rng(0)
        with firmware(target, fw.binary) as dev:
            for _ in range(samples):
                dev.infer([rng.integers(-128, 128, n, dtype=np.int8) for n in fw.input_sizes]
                          if len(fw.input_sizes) > 1 else rng.integers(-128, 128, fw.input_sizes[0], dtype=np.int8),
                          with_output=False)
            memory = with_stack(memory, dev.info().get("stack_used") or None)
        write_memory_report(work / "build.json", memory)
    tflm = [tflm_allocations(f) for f in stage_files(model)]
    memory["tflm_arena_bytes"], memory["tflm_head_bytes"] = max(t[0] for t in tflm), max(t[1] for t in tflm)
    return memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--target", default="qemu-m4")
    ap.add_argument("--samples", type=int, default=3, help="inferences before the stack is read (0: none)")
    args = ap.parse_args()
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, model in enumerate(args.models or default_models()):
            m = measure(model, args.target, args.samples, Path(tmp) / str(k))
            name = model.name if model.is_file() else str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model)
            rows.append((name, m))
    head = (f"{'model':<40} {'arena':>8} {'TFLM arena':>10} {'ratio':>6} {'TFLM head':>9} {'stack':>6} {'RAM':>8} "
            f"{'flash':>8} {'weights':>8} {'as int8':>8}")
    print(f"target {args.target}")
    print(head)
    print("-" * len(head))
    for name, m in rows:
        stack = f"{m['stack_bytes']:,}" if m.get("stack_bytes") else "?"
        print(f"{name:<40} {m['arena_bytes']:>8,} {m['tflm_arena_bytes']:>10,} "
              f"{m['arena_bytes'] / m['tflm_arena_bytes']:>6.2f} {m['tflm_head_bytes']:>9,} {stack:>6} "
              f"{m['ram_bytes']:>8,} {m['flash_bytes']:>8,} {m['weight_flash_bytes']:>8,} {m['int8_weight_bytes']:>8,}")


if __name__ == "__main__":
    main()

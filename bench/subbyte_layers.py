"""Benchmark: qemu-m4 instructions layer by layer, the int8 export against its mixed-precision twin.

What unpacking 4- and 2-bit filters costs per layer (PROFILE request, -icount, every early exit off, one
input; counts repeat exactly), with each layer's weight width, and each firmware's .text+.rodata.

Usage: python bench/subbyte_layers.py DEMO_DIR   (the folder of `tinyexit demo --bits mixed --out DEMO_DIR`:
DEMO_DIR/int8/export against DEMO_DIR/export)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyexit import manifest as mf  # noqa: E402
from tinyexit.firmware_build import build  # noqa: E402
from tinyexit.harness import firmware  # noqa: E402
from tinyexit.policy import NEVER  # noqa: E402
from tinyexit.quantize import text_rodata_bytes  # noqa: E402


def layer_counts(export: Path, build_dir: Path) -> tuple[list[dict], list[int], int | None]:
    fw = build(export, "qemu-m4", build_dir)
    m = mf.read(export)
    x = np.zeros(m["input"]["shape"][1:], np.int8)
    with firmware("qemu-m4", fw.binary) as dev:
        dev.set_policy({e: NEVER for e in range(dev.info()["exits"] - 1)})
        r = dev.infer(x, with_output=False, profile=True)
    return fw.layers, r.layer_cycles, text_rodata_bytes(build_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", type=Path)
    args = parser.parse_args()
    exports = {"int8": args.demo_dir / "int8" / "export", "mixed": args.demo_dir / "export"}
    for name, path in exports.items():
        if not (path / "manifest.json").is_file():
            sys.exit(f"subbyte_layers: error: {path}: no manifest.json (run `tinyexit demo --bits mixed` first)")
    widths = {l["output"]: l.get("weight_bits") for l in mf.read(exports["mixed"]).get("layers", [])}
    with tempfile.TemporaryDirectory() as tmp:
        (layers, int8, int8_flash), (_, mixed, mixed_flash) = (layer_counts(p, Path(tmp) / n) for n, p in exports.items())
    print(f"{'stage':>5}  {'op':<18} {'MACs':>9} {'bits':>4} {'int8':>10} {'mixed':>10} {'ratio':>6}")
    for layer, a, b in zip(layers, int8, mixed):
        bits = widths.get(layer["output"]) or ""
        print(f"{layer['stage']:>5}  {layer['op']:<18} {layer['macs']:>9,} {bits:>4} {a:>10,} {b:>10,} {b / max(a, 1):>6.2f}")
    print(f"{'all':>5}  {'':<18} {sum(l['macs'] for l in layers):>9,} {'':>4} {sum(int8):>10,} {sum(mixed):>10,} "
          f"{sum(mixed) / sum(int8):>6.3f}")
    print(f"firmware .text+.rodata: int8 {int8_flash or 0:,} B, mixed {mixed_flash or 0:,} B")


if __name__ == "__main__":
    main()

"""Benchmark: qemu instructions layer by layer for one export (PROFILE request, -icount, every early exit
off, one all-zero input; counts repeat exactly), with MACs and instructions per MAC.

Usage: python bench/layer_profile.py EXPORT_DIR_OR_TFLITE [--target qemu-m4] [--kernels auto|portable|dsp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinyexit.firmware_build import KERNELS, build  # noqa: E402
from tinyexit.harness import firmware  # noqa: E402
from tinyexit.policy import NEVER  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--target", default="qemu-m4")
    ap.add_argument("--kernels", choices=KERNELS, default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fw = build(args.model, args.target, tmp, kernels=args.kernels)
        with firmware(args.target, fw.binary) as dev:
            early_exits = len({layer['stage'] for layer in fw.layers}) - 1
            if early_exits:
                dev.set_policy({i: NEVER for i in range(early_exits)})
            r = dev.infer(np.zeros(fw.input_bytes, np.int8), profile=True)
    print(f"{'stage':>5} {'op':<20} {'MACs':>10} {'instructions':>13} {'per MAC':>8}")
    for layer, count in zip(fw.layers, r.layer_cycles):
        per_mac = f"{count / layer['macs']:8.2f}" if layer["macs"] else ""
        print(f"{layer['stage']:>5} {layer['op']:<20} {layer['macs']:>10,} {count:>13,} {per_mac}")
    macs = sum(layer["macs"] for layer in fw.layers)
    print(f"total {sum(r.layer_cycles):,} instructions, {macs:,} MACs ({sum(r.layer_cycles) / max(macs, 1):.3f} per MAC); "
          f"per stage {[int(c) for c in r.stage_cycles]}")


if __name__ == "__main__":
    main()

"""`tinyexit sim`: run inputs through the firmware over its serial protocol and collect exits and cycles."""

from pathlib import Path

HELP = ("run N inputs through the firmware (host build) over the serial protocol; writes per-sample exits, "
        "predictions, cycle counts and outputs (results.npz) and a summary (JSON)")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export folder (manifest.json + stages) or a .tflite file")
    p.add_argument("--target", default="host", choices=["host", "qemu-m4", "qemu-m7", "qemu-m55"], help="where to run (default: host)")
    p.add_argument("--inputs", required=True, metavar="X.npy", help="N inputs in the model's input dtype and shape")
    p.add_argument("--labels", metavar="y.npy", help="N integer labels, for accuracy")
    p.add_argument("--out", metavar="results.npz", help="per-sample results (pred, exit, instructions, output)")
    p.add_argument("--json", metavar="summary.json", help="summary figures as JSON")
    p.add_argument("--build-dir", metavar="DIR", help="where the firmware is built (default: out/build/<target>)")


def run(args) -> int:
    import json

    import numpy as np

    from tinyexit.sim import load_inputs, simulate, table

    x, y = load_inputs(args.inputs, args.labels)
    result, summary = simulate(args.model, args.target, x, y, Path(args.build_dir or f"out/build/{args.target}"))
    if args.out:
        np.savez(args.out, **result)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(table(summary))
    return 0

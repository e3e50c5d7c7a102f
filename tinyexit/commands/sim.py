"""`tinyexit sim`: run inputs through the firmware over its serial protocol and collect exits and cycles."""

from pathlib import Path

HELP = ("run N inputs through the firmware (host build or QEMU) over the serial protocol; writes per-sample "
        "exits, predictions, cycle counts and outputs (results.npz) and a summary (JSON; on QEMU with the energy "
        "per inference of the board it stands in for, or of --board)")
SIM_TARGETS = ["host", "qemu-m4", "qemu-m7", "qemu-m55"]


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export folder (manifest.json + stages) or a .tflite file")
    p.add_argument("--target", choices=SIM_TARGETS,
                   help="where to run (default: host; with --board, the board's QEMU stand-in)")
    p.add_argument("--board", metavar="NAME",
                   help="price the counts in energy with boards/NAME.yaml (energy_uj in the summary; default for "
                        "a QEMU target: the board it stands in for)")
    p.add_argument("--inputs", required=True, metavar="X.npy", help="N inputs in the model's input dtype and shape")
    p.add_argument("--labels", metavar="y.npy", help="N integer labels, for accuracy")
    p.add_argument("--out", metavar="results.npz", help="per-sample results (pred, exit, instructions, output)")
    p.add_argument("--json", metavar="summary.json", help="summary figures as JSON")
    p.add_argument("--build-dir", metavar="DIR", help="where the firmware is built (default: out/build/<target>)")


def resolve_target_and_board(target: str | None, board_name: str | None):
    """(target, board or None): an explicit board must be one we know; a QEMU target defaults to the board it
    stands in for; the host counts nanoseconds, which no board's clock turns into energy."""
    from tinyexit import boards
    from tinyexit.errors import TinyexitError

    board = boards.load(board_name) if board_name else None
    if target is None:
        if board is None:
            return "host", None
        if board.qemu is None:
            raise TinyexitError(f"board '{board.name}' has no QEMU stand-in: give --target")
        target = board.qemu
    if target == "host":
        if board is not None:
            raise TinyexitError("the host build counts nanoseconds, not cycles: use --board with a QEMU target")
        return target, None
    return target, board or boards.for_target(target)


def run(args) -> int:
    import json

    import numpy as np

    from tinyexit.sim import load_inputs, simulate, table

    target, board = resolve_target_and_board(args.target, args.board)
    x, y = load_inputs(args.inputs, args.labels)
    result, summary = simulate(args.model, target, x, y, Path(args.build_dir or f"out/build/{target}"), board=board)
    if args.out:
        np.savez(args.out, **result)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(table(summary))
    return 0

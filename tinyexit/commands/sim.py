"""`tinyexit sim`: run inputs through the firmware over its serial protocol and collect exits and cycles."""

from pathlib import Path

from tinyexit import cluster, sim_targets

HELP = ("run N inputs through the firmware (host build or QEMU) over the serial protocol; writes per-sample "
        "exits, predictions, cycle counts and outputs (results.npz) and a summary (JSON; on QEMU with the energy "
        "per inference of the board it stands in for, or of --board)")
SIM_TARGETS = ["host", *sim_targets.names()]  # the emulated ones: one sim/<name>.yaml each


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export folder (manifest.json + stages) or a .tflite file")
    p.add_argument("--target", choices=SIM_TARGETS,
                   help="where to run (default: host; with --board, the board's QEMU stand-in)")
    p.add_argument("--board", metavar="NAME",
                   help="price the counts in energy with boards/NAME.yaml (energy_uj in the summary; default for "
                        "a QEMU target: the board it stands in for)")
    p.add_argument("--inputs", required=True, nargs="+", metavar="X.npy",
                   help="N int8 inputs, (N, *input shape) or flat (N, size), as `tinyexit inputs` writes them; a "
                        "model with several inputs takes one .npy per input, in input order")
    p.add_argument("--labels", metavar="y.npy", help="N integer labels (0 .. classes-1), for accuracy")
    p.add_argument("--out", metavar="results.npz", help="per-sample results (pred, exit, instructions, output)")
    p.add_argument("--json", metavar="summary.json", help="summary figures as JSON")
    p.add_argument("--build-dir", metavar="DIR", help="where the firmware is built (default: out/build/<target>)")
    p.add_argument("--jobs", type=_positive, metavar="N",
                   help="emulator (or host) instances run side by side, each on a contiguous share of the inputs; "
                        "results come back in input order and identical to one instance (default: the cores "
                        "available)")
    p.add_argument("--protocol", choices=["batch", "serial"], default="batch",
                   help="how inputs reach the firmware: batch (default: inputs and results through files, many "
                        "samples per request; host builds and QEMU) or serial (one INFER request per sample over "
                        "the serial link, as on boards); the results are identical")
    cluster.add_cluster_argument(p, "run the shards (one per worker thread; --jobs N: N shards)")


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got '{text}'")
    return value


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
    from tinyexit import atomic, inputs
    from tinyexit.commands import warn_if_uncalibrated
    from tinyexit.sim import simulate, table

    target, board = resolve_target_and_board(args.target, args.board)
    build_dir = Path(args.build_dir or f"out/build/{target}")
    atomic.check_writable(args.out, "--out")
    atomic.check_writable(args.json, "--json")
    atomic.check_writable(build_dir, "--build-dir", folder=True)
    xs, y = inputs.load_for_model(args.model, args.inputs, args.labels)
    warn_if_uncalibrated(args.model)
    with cluster.executor(args.jobs, args.cluster) as pool:
        result, summary = simulate(args.model, target, xs[0] if len(xs) == 1 else xs, y, build_dir, board=board,
                                   jobs=args.jobs, protocol=args.protocol, executor=pool)
    with atomic.outputs() as out:
        if args.out:
            out.save_npz(args.out, **result)
        if args.json:
            out.write_json(args.json, summary)
    print(table(summary))
    return 0

"""`tinyexit profile`: run inputs through a flashed board (or any firmware on a serial URL) and profile it."""

from pathlib import Path

from tinyexit.commands import positive_float, positive_int

HELP = ("run N inputs through a board's firmware over its serial port (same outputs as `tinyexit sim`) and "
        "profile it layer by layer (PROFILE command)")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="the export folder or .tflite the board was flashed with")
    p.add_argument("--port", required=True, metavar="PORT",
                   help="serial port or pyserial URL: /dev/ttyACM0, socket://127.0.0.1:P, loop://")
    p.add_argument("--baud", type=positive_int, default=115200, help="baud rate (default: 115200, as the board ports use)")
    p.add_argument("--board", metavar="NAME", help="boards/NAME.yaml, for energy_uj (default: the port's own name, "
                   "when it is a known board)")
    p.add_argument("--inputs", required=True, metavar="X.npy",
                   help="N int8 inputs, (N, *input shape) or flat (N, size), as `tinyexit inputs` writes them")
    p.add_argument("--labels", metavar="y.npy", help="N integer labels (0 .. classes-1), for accuracy")
    p.add_argument("--out", metavar="results.npz",
                   help="per-sample results (pred, exit, instructions, output) and layer_cycles")
    p.add_argument("--json", metavar="summary.json", help="summary figures and the per-layer profile as JSON")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for each reply (default: 30)")


def model_layers(model: str, tmp: Path):
    """The model as the code generator sees it: its hash (to check the device runs it) and its layers."""
    from tinyexit.codegen import generate, load

    loaded = load(model)
    return loaded, generate(loaded, tmp).layers


def run(args) -> int:
    import tempfile

    from tinyexit import atomic, boards, inputs
    from tinyexit.errors import TinyexitError
    from tinyexit.harness import Device
    from tinyexit.policy import NEVER
    from tinyexit.sim import add_energy, run_samples, table

    atomic.check_writable(args.out, "--out")
    atomic.check_writable(args.json, "--json")
    xs, y = inputs.load_for_model(args.model, args.inputs, args.labels)
    x = xs[0]
    board = boards.load(args.board) if args.board else None
    with tempfile.TemporaryDirectory() as tmp:
        model, layers = model_layers(args.model, Path(tmp))

    import serial

    try:
        link = serial.serial_for_url(args.port, baudrate=args.baud, timeout=1.0)
    except (serial.SerialException, ValueError) as err:
        raise TinyexitError(f"cannot open {args.port}: {err}") from None
    try:
        dev = Device(link, args.timeout)
        info = dev.info()
        if bytes.fromhex(info["sha256"]) != model.sha256:
            raise TinyexitError(f"the device at {args.port} runs another model (its hash {info['sha256'][:12]}..., "
                                f"{args.model}'s {model.sha256.hex()[:12]}...): flash it first")
        if board is not None and info["cycle_unit"] == "host-ns":
            raise TinyexitError("the host build counts nanoseconds, not cycles: --board does not apply")
        if board is None and info["port"] in boards.names():
            board = boards.load(info["port"])
        # the manifest's thresholds (they may be newer than the flashed ones: the hash leaves them out)
        restore = {e["index"]: (NEVER if not e.get("policy") else int(e["policy"]["threshold_q15"]))
                   for e in model.exits if not e["final"]}
        if restore:
            dev.set_policy(restore)
        result, summary = run_samples(dev, x, y, info["port"], profile_layers=True)
        if restore:  # and back after the no-exit runs: a board keeps SET_POLICY until reset
            dev.set_policy(restore)
    finally:
        link.close()

    add_energy(summary, board)
    per_layer = [int(c) for c in result["layer_cycles"]]
    summary["layers"] = [{"stage": l["stage"], "op": l["op"], "output": l["output"], "macs": int(l["macs"]),
                          "cycles": c} for l, c in zip(layers, per_layer)]
    with atomic.outputs() as out:
        if args.out:
            out.save_npz(args.out, **result)
        if args.json:
            out.write_json(args.json, summary)
    print(table(summary))
    print()
    print(layer_table(summary["layers"], summary["cycle_unit"]))
    return 0


def layer_table(layers: list[dict], unit: str) -> str:
    total = sum(l["cycles"] for l in layers) or 1
    head = f"{'#':>3}  {'stage':>5}  {'op':<20} {'MACs':>12} {unit:>14} {'share':>6} {unit + '/MAC':>12}"
    rows = [head]
    for i, l in enumerate(layers):
        per_mac = f"{l['cycles'] / l['macs']:.2f}" if l["macs"] else "-"
        rows.append(f"{i:>3}  {l['stage']:>5}  {l['op']:<20} {l['macs']:>12,} {l['cycles']:>14,} "
                    f"{l['cycles'] / total:>6.1%} {per_mac:>12}")
    return "\n".join(rows)

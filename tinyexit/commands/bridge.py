"""`tinyexit bridge`: a flashed board on a serial port as one device of the edge fleet (tinyexit/edge/run.py)."""

from pathlib import Path

from tinyexit.commands import non_negative_float, positive_float, positive_int

HELP = ("bridge a flashed board on a serial port to the edge service over MQTT: stream inputs through it as the "
        "device->edge cascade of the manifest's offload policy; writes edge_report.json")


def add_arguments(p) -> None:
    p.add_argument("export", metavar="EXPORT", help="the export folder the board was flashed with (with its offload "
                                                    "policy, from `tinyexit edge run`)")
    p.add_argument("--port", required=True, metavar="PORT",
                   help="serial port or pyserial URL: /dev/ttyACM0, socket://127.0.0.1:P")
    p.add_argument("--baud", type=positive_int, default=115200, help="baud rate (default: 115200)")
    p.add_argument("--inputs", required=True, metavar="X.npy", help="int8 inputs (tinyexit inputs makes them)")
    p.add_argument("--labels", required=True, metavar="y.npy", help="their labels, for the accuracies")
    p.add_argument("--broker", metavar="mqtt://HOST:PORT",
                   help="MQTT broker (default: the one of a running `tinyexit edge serve` of this fleet)")
    p.add_argument("--fleet", default="default", metavar="NAME", help="fleet name (default: default)")
    p.add_argument("--device-id", default="board", metavar="ID", help="this device's id in the fleet (default: board)")
    p.add_argument("--board", help="boards/*.yaml board, for energy (default: the offload policy's)")
    p.add_argument("--link", choices=["uart", "ble", "wifi"], help="the board's link to the edge (default: the policy's)")
    p.add_argument("--deadline", type=non_negative_float, default=5.0, metavar="S",
                   help="seconds to wait for the edge before the board answers itself (default 5)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for each board reply (default 30)")
    p.add_argument("--out", default="bridge_run", metavar="DIR", help="output folder (default: bridge_run)")


def run(args) -> int:
    from tinyexit import inputs
    from tinyexit.edge import protocol
    from tinyexit.edge.broker import parse_url
    from tinyexit.edge.run import bridge

    if args.broker:
        parse_url(args.broker)
    protocol.check_id(args.device_id, "--device-id")
    (x,), y = inputs.load_for_model(args.export, [args.inputs], args.labels)
    rep = bridge(args.export, args.port, x, y, Path(args.out), broker=args.broker, baud=args.baud,
                 device_id=args.device_id, board=args.board, link=args.link, deadline_s=args.deadline,
                 fleet=args.fleet, timeout=args.timeout)
    print(f"{rep['task']} on {args.port}, {rep['n_samples']} samples: cascade {rep['cascade_accuracy']:.2%} (device "
          f"only {rep['device_only_accuracy']:.2%}), offload rate {rep['offload_rate']:.1%}, "
          f"{rep['bytes_sent_per_sample']:.1f} B/sample, fallbacks {rep['fallbacks']}; "
          f"{Path(args.out) / 'edge_report.json'}")
    return 0

"""`tinyexit edge serve|status`: the edge service on an MQTT broker, and the fleet registry it keeps."""

from tinyexit.commands import _number, non_negative_float, positive_int

probability = _number(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")

HELP = ("the device->edge cascade's edge side: `edge serve EXPORT` answers devices' offloaded cuts (or raw inputs) "
        "from worker processes on an MQTT broker (a private mosquitto unless --broker), with a shared result "
        "cache; `edge status` lists the registered devices and workers")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="edge_command", metavar="SUBCOMMAND")
    sub.required = True
    s = sub.add_parser("serve", help="run the edge service until Ctrl-C / SIGTERM",
                       description="Start N worker processes that take requests from the fleet's shared MQTT "
                                   "subscription, run the export's stages after the sent cut (or --edge-model on raw "
                                   "inputs) with TFLite Micro's interpreter, and reply. Without --broker a private "
                                   "mosquitto is started on 127.0.0.1 (its URL is printed on the ready line).")
    s.add_argument("export", metavar="EXPORT", help="export folder (manifest.json + stages) the devices run")
    _broker_argument(s)
    s.add_argument("--workers", type=positive_int, default=2, metavar="N", help="worker processes (default 2)")
    s.add_argument("--edge-model", metavar="MODEL.tflite",
                   help="a bigger plain int8 .tflite on the same input features, for requests that carry the raw "
                        "input (cut -1), e.g. the MLPerf Tiny KWS reference model")
    s.add_argument("--cache", metavar="SPEC",
                   help="result cache: sqlite:PATH (default: <cache dir>/edge/cache-FLEET.sqlite), "
                        "redis://HOST:PORT[/DB], redis:start (a private redis-server) or none")
    s.add_argument("--near-threshold", type=non_negative_float, metavar="D",
                   help="near-duplicate cache hits: largest relative distance of the tensors' per-channel "
                        "summaries (default 0.05; 0 = exact hits only)")
    s.add_argument("--near-min-confidence", type=probability, metavar="P",
                   help="near-duplicate hits only from cached answers at least this confident (default 0.9)")
    _fleet_argument(s)
    s.set_defaults(_edge=_serve)

    st = sub.add_parser("status", help="print the fleet registry (devices and edge workers)",
                        description="Read the fleet's retained registry records: id, role, board, model hash, "
                                    "capabilities, load, last seen.")
    _broker_argument(st, "default: the broker of a running `tinyexit edge serve` of this fleet")
    _fleet_argument(st)
    st.add_argument("--json", action="store_true", help="the records as JSON")
    st.set_defaults(_edge=_status)


def _broker_argument(p, default: str = "default: start a private mosquitto on 127.0.0.1") -> None:
    p.add_argument("--broker", metavar="mqtt://HOST:PORT", help=f"MQTT broker ({default})")


def _fleet_argument(p) -> None:
    p.add_argument("--fleet", default="default", metavar="NAME",
                   help="fleet name: the MQTT topic prefix tinyexit/NAME/ (default: default)")


def run(args) -> int:
    return args._edge(args)


def _serve(args) -> int:
    from tinyexit.edge.broker import parse_url
    from tinyexit.edge.cache import check_spec
    from tinyexit.edge.service import serve_until_signal

    if args.broker:
        parse_url(args.broker)
    if args.cache:
        check_spec(args.cache)
    return serve_until_signal(export=args.export, broker=args.broker, workers=args.workers,
                              edge_model=args.edge_model, cache=args.cache, fleet=args.fleet,
                              near_threshold=args.near_threshold, near_min_confidence=args.near_min_confidence)


def _status(args) -> int:
    import json

    from tinyexit.edge import protocol, registry
    from tinyexit.edge.service import running_broker
    from tinyexit.errors import TinyexitError

    protocol.check_id(args.fleet, "--fleet")
    url = args.broker or running_broker(args.fleet)
    if url is None:
        raise TinyexitError(f"no --broker given and no running `tinyexit edge serve` of fleet '{args.fleet}' found")
    members = registry.read(url, args.fleet)
    if args.json:
        print(json.dumps([m.__dict__ for m in members], indent=1))
    else:
        print(f"fleet {args.fleet} on {url}: {sum(m.role == 'device' for m in members)} devices, "
              f"{sum(m.role == 'worker' for m in members)} edge workers")
        if members:
            print(registry.format_table(members))
    return 0

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
    _add_run(sub)


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


def _add_run(sub) -> None:
    """`edge run` (tinyexit/edge/run.py): a fleet of emulated or host devices against the edge service."""
    r = sub.add_parser("run", help="N firmware instances bridged to the edge service; writes edge_report.json",
                       description="Build the firmware for TARGET, start N instances bridged to an MQTT broker (a "
                                   "private mosquitto and edge service unless --broker names one already serving), "
                                   "run the inputs device-only and then as the device->edge cascade of the "
                                   "manifest's offload policy (chosen on the validation split first when the "
                                   "manifest has none, or with --edge-model/--board/--link), and write "
                                   "DIR/edge_report.json and DIR/edge_accuracy_bytes.png.")
    r.add_argument("export", metavar="EXPORT", help="export folder (manifest.json + stages)")
    r.add_argument("--devices", type=positive_int, default=2, metavar="N", help="firmware instances (default 2)")
    r.add_argument("--target", choices=["host", "qemu-m4", "qemu-m7"], default="qemu-m4",
                   help="what each device is (default qemu-m4)")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", metavar="X.npy", help="int8 inputs (tinyexit inputs makes them)")
    src.add_argument("--split", choices=["val", "test"], help="a split of the export's task dataset")
    r.add_argument("--labels", metavar="y.npy", help="with --inputs: their labels (needed for accuracies)")
    r.add_argument("--data", metavar="PATH", help="the dataset in its official layout (default: ../shared/datasets)")
    r.add_argument("--limit", type=positive_int, metavar="N", help="the first N samples only")
    r.add_argument("--out", default="edge_run", metavar="DIR", help="output folder (default: edge_run)")
    _broker_argument(r, "default: start a private mosquitto and the edge service for this run")
    r.add_argument("--edge-model", metavar="MODEL.tflite",
                   help="choose the offload policy again with this edge model for raw inputs (copied into EXPORT)")
    r.add_argument("--board", help="price energy (and choose the policy) for this boards/*.yaml board")
    r.add_argument("--link", choices=["uart", "ble", "wifi"], help="the board's link to the edge (default: its first)")
    r.add_argument("--workers", type=positive_int, default=2, metavar="N", help="edge worker processes (default 2)")
    r.add_argument("--deadline", type=non_negative_float, default=5.0, metavar="S",
                   help="seconds a device waits for the edge before answering itself (default 5)")
    _fleet_argument(r)
    r.set_defaults(_edge=_run, fleet="run")


def _run(args) -> int:
    from pathlib import Path

    from tinyexit import manifest as mf
    from tinyexit.edge.run import run_fleet
    from tinyexit.errors import TinyexitError

    if args.broker:
        from tinyexit.edge.broker import parse_url

        parse_url(args.broker)
    m = mf.read(args.export)
    if args.inputs:
        from tinyexit import inputs

        if not args.labels:
            raise TinyexitError("--inputs needs --labels: the report compares accuracies")
        (x,), y = inputs.load_for_model(args.export, [args.inputs], args.labels)
    else:
        if args.labels:
            raise TinyexitError("--labels goes with --inputs (--split brings its own labels)")
        from tinyexit import pipeline
        from tinyexit.commands import data_of
        from tinyexit.reference import quantize_input

        ds = pipeline.load_data(m["task"], data_of(args.data, args.export, m))
        split = getattr(ds, args.split)
        pipeline.check_input(m, split)
        x, y = quantize_input(m, split.x), split.y
    x, y = x[:args.limit], y[:args.limit]
    rep = run_fleet(args.export, args.devices, args.target, x, y, Path(args.out), broker=args.broker,
                    edge_model=args.edge_model, board=args.board, link=args.link, data=args.data,
                    workers=args.workers, deadline_s=args.deadline, fleet=args.fleet)
    print(f"{rep['task']} on {rep['devices']} x {rep['target']}, {rep['n_samples']} samples: cascade "
          f"{rep['cascade_accuracy']:.2%} (device only {rep['device_only_accuracy']:.2%}, edge only "
          f"{rep['edge_only_accuracy']:.2%}), offload rate {rep['offload_rate']:.1%}, "
          f"{rep['bytes_sent_per_sample']:.1f} B/sample ({rep['bytes_sent_per_sample'] / rep['bytes_always_offload_per_sample']:.1%} "
          f"of always offloading), device energy {rep['device_energy_uj_mean']:.1f} uJ (device only "
          f"{rep['device_only_energy_uj_mean']:.1f}), cache hits {rep['cache_hit_rate']:.1%}, fallbacks "
          f"{rep['fallbacks']}; {Path(args.out) / 'edge_report.json'}")
    return 0

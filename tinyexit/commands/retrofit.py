"""`tinyexit retrofit`: early exits for a pretrained Keras CNN, trained without touching its weights."""

from pathlib import Path

from tinyexit.commands import add_data_arguments, add_seed_argument, percentage_points, positive_int

HELP = ("freeze a pretrained Keras model (.h5/.keras), attach T-RECX exit heads at chosen layers, train only "
        "the heads, then export, calibrate and report on held-out data")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="pretrained Keras model (.h5 or .keras), functional CNN")
    add_data_arguments(p)
    p.add_argument("--after", nargs="+", metavar="LAYER",
                   help="layer name(s) to attach exits after (default: the end of the 3rd depthwise-separable block)")
    p.add_argument("--place", action="store_true",
                   help="choose the layer by placement analysis (every separable block) instead of --after")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="passes of exit head training over 24 augmented copies of the training images (default 4)")
    p.add_argument("--budget-pp", type=percentage_points, default=1.0, help="calibration accuracy budget (default 1 pp)")
    p.add_argument("--agreement-samples", type=positive_int, default=300,
                   help="test samples on which LiteRT is compared with TFLite Micro (default 300)")
    p.add_argument("--firmware-samples", type=positive_int, default=None,
                   help="test samples run on the emulated Cortex-M4 firmware (default: all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>-retrofit)")
    add_seed_argument(p)


def run(args) -> int:
    from tinyexit import atomic, pipeline
    from tinyexit.errors import TinyexitError

    out = Path(args.out or f"out/{args.task}-retrofit")
    if not Path(args.model).is_file():
        raise TinyexitError(f"pretrained model not found: {args.model}")
    atomic.check_writable(out, "--out", folder=True)
    ds = pipeline.load_data(args.task, args.data)
    pipeline.retrofit(Path(args.model), ds, out, args.after, args.epochs, args.budget_pp, args.seed,
                      args.agreement_samples, search=args.place, firmware_samples=args.firmware_samples)
    print(f"wrote {out}/report.json; plot: {out}/export/pareto.png")
    return 0

"""`tinyexit evaluate`: staged int8 inference on a split through TFLite Micro (or LiteRT), with exits."""

from pathlib import Path

from tinyexit.commands import add_data_arguments

HELP = "run the exported stages with their exit policy on a data split and report accuracy, exits and MACs"


def add_arguments(p) -> None:
    p.add_argument("export", metavar="EXPORT_DIR", help="folder with manifest.json and stage files")
    add_data_arguments(p, task_from="manifest")
    p.add_argument("--split", default=None, choices=["train", "val", "test"], help="data split (default: test)")
    p.add_argument("--inputs", metavar="X.npy",
                   help="evaluate these int8 inputs (as `tinyexit inputs` writes them) instead of a split of the "
                        "task's dataset; needs --labels")
    p.add_argument("--labels", metavar="y.npy", help="the labels of --inputs (integers 0 .. classes-1)")
    p.add_argument("--backend", default="tflm", choices=["tflm", "litert", "litert-ref"],
                   help="interpreter: TFLite Micro (the reference, default) or LiteRT")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def run(args) -> int:
    from tinyexit import atomic, inputs, pipeline
    from tinyexit import manifest as mf
    from tinyexit.commands import data_of, task_of
    from tinyexit.errors import TinyexitError

    manifest = mf.read(args.export)
    task = task_of(manifest["task"], args.task)
    atomic.check_writable(args.json, "--json")
    if args.inputs is not None or args.labels is not None:
        if args.inputs is None or args.labels is None:
            raise TinyexitError("--inputs and --labels go together (accuracy needs the right answers)")
        if args.split is not None or args.data is not None:
            raise TinyexitError("give either --inputs/--labels or a dataset split (--split, --data), not both")
        xs, y = inputs.load(args.inputs, args.labels, [manifest["input"]], manifest["exits"][-1]["classes"])
        m = pipeline.evaluate_arrays(Path(args.export), xs[0], y, args.backend)
    else:
        ds = pipeline.load_data(task, data_of(args.data, args.export, manifest))
        m = pipeline.evaluate(Path(args.export), getattr(ds, args.split or "test"), args.backend)
    for k, v in m.items():
        print(f"{k:>26}: {v}")
    if args.json:
        pipeline.write_json(Path(args.json), m)
    return 0

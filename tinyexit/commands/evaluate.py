"""`tinyexit evaluate`: staged int8 inference on a split through TFLite Micro (or LiteRT), with exits."""

from pathlib import Path

from tinyexit.commands import add_data_arguments

HELP = "run the exported stages with their exit policy on a data split and report accuracy, exits and MACs"


def add_arguments(p) -> None:
    p.add_argument("export", metavar="EXPORT_DIR", help="folder with manifest.json and stage files")
    add_data_arguments(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split (default: test)")
    p.add_argument("--backend", default="tflm", choices=["tflm", "litert", "litert-ref"],
                   help="interpreter: TFLite Micro (the reference, default) or LiteRT")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def run(args) -> int:
    from tinyexit import manifest as mf
    from tinyexit import pipeline

    task = mf.read(args.export)["task"]
    ds = pipeline.load_data(task, args.data)
    m = pipeline.evaluate(Path(args.export), getattr(ds, args.split), args.backend)
    for k, v in m.items():
        print(f"{k:>26}: {v}")
    if args.json:
        pipeline.write_json(Path(args.json), m)
    return 0

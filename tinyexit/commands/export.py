"""`tinyexit export`: int8 quantization and one .tflite per stage + manifest.json."""

from pathlib import Path

from tinyexit.commands import add_data_arguments, add_seed_argument

HELP = ("quantize a trained model to full int8 and export one TFLite Micro .tflite per stage "
        "plus manifest.json")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="folder with model.keras + spec.json (from `tinyexit train`)")
    add_data_arguments(p, task_from="trained model (spec.json)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>/export)")
    add_seed_argument(p)


def run(args) -> int:
    from tinyexit import atomic, models, pipeline
    from tinyexit.commands import task_of

    model, spec = models.load(args.model)
    task_of(spec.task, args.task, "model")
    out = Path(args.out or f"out/{spec.task}/export")
    atomic.check_writable(out, "--out", folder=True)
    ds = pipeline.load_data(spec.task, args.data)
    manifest = pipeline.export(model, spec, ds, out, args.seed)
    for s in manifest["stages"]:
        print(f"{out}/{s['file']}: {s['macs']:,} MACs, weights {s['weight_bytes']}")
    print(f"{out}/manifest.json (thresholds not calibrated yet: run `tinyexit calibrate {out}`)")
    return 0

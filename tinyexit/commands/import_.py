"""`tinyexit import`: an early-exit model made elsewhere becomes a staged export (stages cut at its exits)."""

from pathlib import Path

HELP = ("turn an early-exit model made elsewhere (.tflite, .keras or .h5; its exits as extra outputs) into a "
        "staged export: stages cut where each exit branches off, manifest.json, the validation data for "
        "`tinyexit calibrate`; float models are quantized to int8 with a representative set you give")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="the model: int8 .tflite, or float .keras / .h5")
    p.add_argument("--exits", nargs="+", required=True, metavar="OUTPUT",
                   help="the early exits' outputs: Keras output layer names, .tflite output tensor names, "
                        "signature keys (output_1) or output positions (1)")
    p.add_argument("--final", metavar="OUTPUT", help="the final output (default: the one output not named in --exits)")
    p.add_argument("--data", metavar="DIR",
                   help="your data as arrays: DIR/val_x.npy + val_y.npy (calibration), optional test_x/test_y "
                        "(evaluation) and train_x (representative set for float models), classes.txt; inputs "
                        "float as the model takes them (int8 for an int8 .tflite also works)")
    p.add_argument("--representative", metavar="X.npy",
                   help="float inputs to quantize a float model with (default: --data's train_x.npy, else val_x.npy)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names (default: --data's classes.txt, else 0..C-1)")
    p.add_argument("--out", metavar="DIR", default="out/imported/export", help="export folder (default: %(default)s)")


def run(args) -> int:
    import numpy as np

    from tinyexit import atomic
    from tinyexit.data.arrays import load_arrays
    from tinyexit.errors import TinyexitError
    from tinyexit.importer import import_model

    out = Path(args.out)
    atomic.check_writable(out, "--out", folder=True)
    ds = load_arrays(args.data, allow_int8=True) if args.data else None
    representative = None
    if args.representative:
        try:
            representative = [np.load(args.representative, allow_pickle=False).astype(np.float32)]
        except (OSError, ValueError) as err:
            raise TinyexitError(f"{args.representative}: cannot read it as .npy ({err})") from None
    elif ds is not None:
        source = ds.train if len(ds.train) else ds.val
        if source.x.dtype != np.int8:
            representative = [source.x[:500].astype(np.float32)]
    classes = args.classes or (ds.classes if ds is not None else None)
    with atomic.outputs() as group:
        manifest = import_model(args.model, args.exits, out, classes, group, representative, args.final,
                                extra={"data": "data"} if ds is not None else None)
        if ds is not None:
            _save_data(group, out / "data", ds, manifest, args.data)
    for s in manifest["stages"]:
        print(f"{out}/{s['file']}: {s['macs']:,} MACs, outputs {[o['name'] for o in s['outputs']]}")
    exits = ", ".join(f"exit {e['index']} after stage {e['stage']}" for e in manifest["exits"] if not e["final"])
    print(f"{out}/manifest.json: {len(manifest['stages'])} stages ({exits}); thresholds not calibrated yet: run "
          f"`tinyexit calibrate {out}`" + ("" if ds is not None else " --data DIR (or --inputs X.npy --labels y.npy)"))
    return 0


def _save_data(group, folder: Path, ds, manifest: dict, given: str) -> None:
    """The validation and test splits beside the stages, as float inputs (calibrate and evaluate quantize
    them with the manifest's scale and zero point); int8 inputs are mapped back exactly."""
    import numpy as np

    from tinyexit.errors import TinyexitError

    inp = manifest["input"]
    shape = tuple(inp["shape"][1:])
    for name in ("val", "test"):
        split = getattr(ds, name)
        if not len(split):
            continue
        x = split.x
        if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise TinyexitError(f"{given}/{name}_x.npy has samples of shape {x.shape[1:]}; the model takes {shape}")
        if x.dtype == np.int8:
            x = (x.astype(np.float64) - inp["zero_point"]) * inp["scale"]
        if split.y.max(initial=0) >= len(manifest["classes"]):
            raise TinyexitError(f"{given}/{name}_y.npy: labels reach {split.y.max()}; the model has "
                                f"{len(manifest['classes'])} classes")
        group.save_npy(folder / f"{name}_x.npy", x.reshape(len(x), *shape).astype(np.float32))
        group.save_npy(folder / f"{name}_y.npy", split.y)
    group.write_text(folder / "classes.txt", "\n".join(manifest["classes"]) + "\n")

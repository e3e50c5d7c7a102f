"""`tinyexit check`: which operators of a model the firmware runs, with which kernel, at what cost."""

HELP = ("list every operator of a model (.tflite, export folder, or a Keras .keras/.h5) as supported or not, the "
        "kernel the firmware would use (portable, DSP, packed) and the MACs, activation arena and weight flash "
        "it would take, without building; exit code 1 when an operator is unsupported")


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help=".tflite, export folder (manifest.json) or Keras .keras/.h5")
    p.add_argument("--json", metavar="FILE", help="the report as JSON")


def run(args) -> int:
    from tinyexit import atomic
    from tinyexit.codegen.compat import check, table

    atomic.check_writable(args.json, "--json")
    report = check(args.model)
    if args.json:
        atomic.write_json(args.json, report.as_dict())
    print(table(report))
    return 1 if report.unsupported else 0

"""`tinyexit train`: train an early-exit model on a task's training split."""

from pathlib import Path

from tinyexit.commands import add_data_arguments, add_seed_argument, non_negative_float, positive_int

HELP = "train an early-exit CNN (joint loss over all exits) and save model.keras + spec.json"


def add_arguments(p) -> None:
    add_data_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/<task>/model)")
    p.add_argument("--exits-after", type=positive_int, nargs="+", metavar="BLOCK",
                   help="1-based blocks followed by an early exit (default: 2)")
    p.add_argument("--placement", metavar="JSON", help="placement.json from `tinyexit place`: use its recommendation")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 30)")
    p.add_argument("--early-exit-weight", type=non_negative_float, default=0.3, help="loss weight of early exits (default 0.3)")
    add_seed_argument(p)


def exits_from(args):
    if args.placement:
        import json

        from tinyexit.errors import TinyexitError

        try:
            blocks = json.loads(Path(args.placement).read_text())["recommended_exits_after"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
            raise TinyexitError(f"{args.placement}: not a placement.json ({type(err).__name__}: {err})") from None
        if not isinstance(blocks, list) or not blocks or \
                not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks):
            raise TinyexitError(f"{args.placement}: recommended_exits_after must be a list of block numbers, "
                                f"not {json.dumps(blocks)[:40]}")
        return blocks
    return args.exits_after


def run(args) -> int:
    from tinyexit import atomic, pipeline

    out = Path(args.out or f"out/{args.task}/model")
    atomic.check_writable(out, "--out", folder=True)
    exits_after = exits_from(args)
    ds = pipeline.load_data(args.task, args.data)
    pipeline.train(ds, out, exits_after, args.epochs or pipeline.DEFAULT_EPOCHS, args.early_exit_weight, args.seed)
    print(f"saved {out}/model.keras and {out}/spec.json")
    return 0
